"""Experiments on the real stack: the Spark assignment against its Python reference on a million
keys, a canary scored day by day (every arm on every row), a re-run of a day, the analysis on
matured labels, and a guardrail stop that takes effect the next day."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest
from pyspark.sql import functions as F

from jobs.core import experiment as xp
from jobs.errors import InvalidParameter
from jobs.io import objectstore, registry
from jobs.io.lake import checksum
from jobs.steps import experiment as experiments
from jobs.steps import score as scoring
from tests.integration.conftest import FIRST_AS_OF, train_version, with_model_name

FIRST = date(2026, 1, 14)
DAYS = [FIRST + timedelta(days=i) for i in range(4)]
LOOK = DAYS[-1] + timedelta(days=30)  # the churn model's labels mature 30 days after the scored day


def test_the_spark_assignment_gives_every_key_the_arm_of_the_python_reference(spark):
    # given shares changed twice since the start
    d = xp.design("assign-check", "churn", "bandit", ["1", "2", "3"], [0.5, 0.3, 0.2], "auc", 0.01, 30,
                  date(2026, 3, 1), "binary")
    history = [xp.Event(d.id, "start", d.shares, d.start, "0", ""),
               xp.Event(d.id, "shares", (0.6, 0.3, 0.1), date(2026, 3, 3), "1", ""),
               xp.Event(d.id, "shares", (0.7, 0.2, 0.1), date(2026, 3, 5), "2", "")]
    state = xp.state_on(d, history, date(2026, 3, 6))
    # when a million keys are assigned by the Spark expression
    keys = spark.range(1_000_000).withColumnRenamed("id", "subscriber_id")
    bucket = experiments.bucket_column(d.salt, F.col("subscriber_id"))
    got = keys.select("subscriber_id", experiments.arm_column(state, bucket).alias("arm")).toPandas()
    # then each key has the arm of the plain-Python reference
    expected = np.array([state.arm_of(int(k)) for k in got["subscriber_id"]])
    assert (got["arm"].to_numpy() == expected).all()
    # and the observed shares are the declared ones within sampling error (4 standard errors)
    observed = np.bincount(expected, minlength=3) / len(expected)
    for share, seen in zip(state.shares, observed, strict=True):
        assert abs(seen - share) < 4 * np.sqrt(share * (1 - share) / len(expected)), (state.shares, observed)


@pytest.fixture(scope="module")
def canary(world, spec, lake, env):
    """Model `churn_xp`: version 1 (the champion) and version 2, a deliberately weak model (three stumps)."""
    p = with_model_name(spec, "churn_xp")
    good, verdict, outcome = train_version(p, lake, env, FIRST_AS_OF, env.dvc_root / "data" / "xp_good")
    assert outcome["promoted"], outcome
    weak_params = {**p.trainer.params, "num_boost_round": 3, "num_leaves": 2}
    weak_spec = p.model_copy(update={"trainer": p.trainer.model_copy(update={"params": weak_params}),
                                     "gate": p.gate.model_copy(update={"mode": "manual"})})
    weak, _, _ = train_version(weak_spec, lake, env, FIRST_AS_OF, env.dvc_root / "data" / "xp_weak")
    return p, good.model, weak.model


def events_of(env, name: str) -> list[dict]:
    return registry.experiment_events(registry.client(env.mlflow_tracking_uri), name)


@pytest.mark.parametrize("versions,shares,metric,message", [
    (["1", "99"], [0.9, 0.1], "auc", "version 99: models:/churn_xp/99 is not in the registry"),
    (["1", "2"], [0.9, 0.2], "auc", "sum to 1.1"),
    (["1", "2"], [0.9, 0.1], "accuracy", "primary metric 'accuracy'"),
])
def test_a_bad_experiment_is_refused_before_anything_is_recorded(canary, env, versions, shares, metric, message):
    p, _, _ = canary
    before = events_of(env, p.name)
    with pytest.raises(InvalidParameter, match=message):
        experiments.plan(p, env, "canary", versions, shares, metric, 0.02, 20, FIRST)
    assert events_of(env, p.name) == before


def test_a_canary_serves_each_key_its_arm_and_keeps_every_arms_score(canary, lake, env):
    p, good, weak = canary
    design = experiments.plan(p, env, "canary", [good.version, weak.version], [0.7, 0.3], "auc", 0.02, 20, FIRST)
    started = experiments.start(p, env, design, lake=lake)
    assert started["experiment"] == "churn_xp-canary-20260114"
    # no day the control served has matured yet: the sample size comes from its training holdout
    assert started["sample_size"]["rows_per_arm"] > 0 and "training holdout" in started["sample_size"]["text"]
    for day in DAYS:
        result = scoring.run(p, lake, lake, env, day)
        assert result["experiment"] == started["experiment"] and result["scores_rows"] == 4000
    rows = lake.read_partition("scores", FIRST, p.partition).toPandas()
    state = experiments.state_on(registry.client(env.mlflow_tracking_uri), p.name, FIRST)
    # each row is served by the arm of its key, with that arm's version and score; both scores kept
    assert (rows["arm"].to_numpy() == [state.arm_of(int(k)) for k in rows["subscriber_id"]]).all()
    versions = np.array([good.version, weak.version])
    assert (rows["model_version"].to_numpy() == versions[rows["arm"].to_numpy()]).all()
    assert all(set(m) == set(versions) for m in rows["arm_scores"])
    assert all(r.score == dict(r.arm_scores)[r.model_version] for r in rows.itertuples())
    assert abs(rows["arm"].mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / len(rows))
    assert (rows["experiment_id"] == started["experiment"]).all()
    # "which version served key K on day D" is one query
    key = int(rows["subscriber_id"].iloc[0])
    served = lake.spark.sql(f"SELECT model_version FROM {lake.name('scores')} WHERE model_name = '{p.name}' "
                            f"AND dt = DATE'{FIRST}' AND subscriber_id = {key}").collect()
    assert [r[0] for r in served] == [versions[state.arm_of(key)]]


def test_rescoring_an_experiment_day_gives_identical_rows(canary, lake, env):
    p, _, _ = canary
    columns = ["subscriber_id", "score", "model_version", "arm", "experiment_id"]
    before = checksum(lake.read_partition("scores", DAYS[1], p.partition), columns)
    scoring.run(p, lake, lake, env, DAYS[1])
    after = lake.read_partition("scores", DAYS[1], p.partition)
    assert checksum(after, columns) == before
    assert sorted(after.select(F.map_values("arm_scores")).toPandas().iloc[:, 0].map(tuple)) == sorted(
        lake.read_partition("scores", DAYS[1], p.partition).select(F.map_values("arm_scores")).toPandas()
        .iloc[:, 0].map(tuple))


def test_a_worse_canary_is_stopped_by_the_guardrail_from_the_next_day(canary, lake, env):
    p, good, weak = canary
    # when the labels of the experiment's days have matured and the daily look runs
    result = experiments.analyse(p, lake, env, LOOK)
    # then the weak canary is found worse with the test's confidence, stopped and the experiment concluded
    assert result["stopped"] == [weak.version] and result["concluded"] and result["winner"] == good.version
    assert result["matured_rows"] == 4 * 4000
    recorded = {e["event"]: e for e in events_of(env, p.name)}
    assert recorded["guardrail"]["effective_from"] == (LOOK + timedelta(days=1)).isoformat()
    assert recorded["guardrail"]["shares"] == [1.0, 0.0]
    # a second look on the same day records nothing twice
    experiments.analyse(p, lake, env, LOOK)
    assert len([e for e in events_of(env, p.name) if e["event"] == "guardrail"]) == 1
    # the report is in the reports bucket
    key = result["report"].split(f"s3://{env.bucket_reports}/", 1)[1]
    html = objectstore.read(env, env.bucket_reports, key).decode()
    assert "Concluded" in html and "guardrail" in html and "<svg" in html
    # the look's day still serves both arms; from the next day the champion serves every row
    scoring.run(p, lake, lake, env, LOOK)
    assert set(lake.read_partition("scores", LOOK, p.partition).toPandas()["arm"]) == {0, 1}
    scoring.run(p, lake, lake, env, LOOK + timedelta(days=1))
    after = lake.read_partition("scores", LOOK + timedelta(days=1), p.partition).toPandas()
    assert set(after["model_version"]) == {good.version}
    assert "experiment_id" not in after or after["experiment_id"].isna().all()


def test_a_canary_that_breaks_the_scores_contract_serves_no_row_and_is_stopped_from_the_next_day(canary, lake, env):
    from jobs.config import TrainerSpec

    p, good, _ = canary
    # given a canary whose scores leave [0, 1] (a pyfunc model scaled by 10), from 2026-02-18
    broken_spec = p.model_copy(update={
        "trainer": TrainerSpec(name="tests.custom_trainers:tenure_bands", params={"bands": 4, "scale": 10.0}),
        "gate": p.gate.model_copy(update={"mode": "manual"})})
    broken, _, _ = train_version(broken_spec, lake, env, FIRST_AS_OF, env.dvc_root / "data" / "xp_broken")
    day = date(2026, 2, 18)
    design = experiments.plan(p, env, "canary", [good.version, broken.model.version], [0.8, 0.2], "auc", 0.02, 10,
                              day)
    started = experiments.start(p, env, design, lake=lake)
    # its sample size comes from the latest day the control served with matured labels (the first canary's), or,
    # when this test runs alone, from the control's training holdout
    served = [x for x in lake.partitions("scores", p.partition) if x <= day - timedelta(days=30)]
    assert (f"its rows of {served[-1]}" if served else "training holdout") in started["sample_size"]["text"]
    # when the day is scored
    result = scoring.run(p, lake, lake, env, day)
    # then every row is served by the control, the canary's own scores kept beside them, nothing lost
    assert result["not_served"] == [broken.model.uri] and result["scores_rows"] == 4000
    rows = lake.read_partition("scores", day, p.partition).toPandas()
    assert len(rows) == 4000 and set(rows["model_version"]) == {good.version} and set(rows["arm"]) == {0}
    assert (rows["arm_scores"].map(lambda m: dict(m)[broken.model.version]) > 1).any()
    # and the guardrail stop is recorded from the next day (the only challenger gone: the control wins)
    mine = [(e["event"], e["effective_from"]) for e in events_of(env, p.name) if e["experiment"] == design.id]
    assert mine == [("start", "2026-02-18"), ("guardrail", "2026-02-19"), ("conclude", "2026-02-19")]
    # a re-run of the day gives the same rows and records nothing twice
    scoring.run(p, lake, lake, env, day)
    again = lake.read_partition("scores", day, p.partition).toPandas()
    pairs = [sorted(zip(f["subscriber_id"], f["score"], strict=True)) for f in (again, rows)]
    assert pairs[0] == pairs[1]
    assert len([e for e in events_of(env, p.name) if e["experiment"] == design.id]) == 3
    # the next day the champion serves every row (the broken version is @challenger now: not shadow-scored here)
    scoring.run(p, lake, lake, env, day + timedelta(days=1), shadow=False)
    after = lake.read_partition("scores", day + timedelta(days=1), p.partition).toPandas()
    assert set(after["model_version"]) == {good.version}
    assert "experiment_id" not in after or after["experiment_id"].isna().all()


def test_the_drift_step_judges_every_arms_own_prediction_drift_in_its_one_job(canary, lake, env):
    from jobs.steps import drift

    p, good, _ = canary
    day = date(2026, 2, 18)  # the broken canary's day (the experiment of the test above)
    state = experiments.state_on(registry.client(env.mlflow_tracking_uri), p.name, day)
    result = drift.run(p, lake, env, day)["experiment"]
    # each arm's own scores (all the day's rows) against its own reference profile
    assert [a["version"] for a in result["arms"]] == list(state.design.versions)
    assert all(np.isfinite(a["wasserstein"]) for a in result["arms"])
    control, *challengers = result["arms"]
    assert result["stopped"] == [a["version"] for a in challengers if a["drifted"] and not control["drifted"]]
    # the experiment already ends the next day (its canary broke the contract): nothing more is recorded
    assert result["recorded"] == []
