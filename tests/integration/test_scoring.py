"""Batch scoring on the real services: idempotent partitions, lineage, shadow, clear errors before any write."""

from __future__ import annotations

import json
from datetime import date

import pytest
from pyspark.sql import functions as F

from jobs.errors import ContractViolation, GoldenSampleMismatch, ModelNotFound, PartitionNotFound
from jobs.io import registry
from jobs.io.lake import checksum
from jobs.steps import score as scoring
from tests.integration.conftest import train_version, with_model_name

pytestmark = pytest.mark.integration

DAY = date(2026, 2, 12)
CONTENT = ["subscriber_id", "score", "model_name", "model_version", "model_alias", "model_reference",
           "model_run_id", "code_version", "ood_features"]


def test_scores_carry_lineage_on_every_row_and_a_manifest(champion, lake, env):
    # given the champion (effective from 2026-02-11)
    p, model = champion
    # when a day is scored with the default reference
    result = scoring.run(p, lake, lake, env, DAY)
    # then one row per subscriber, with the model, how it was resolved, the runs and the code on every row
    day = lake.read_partition("scores", DAY, p.partition)
    assert day.count() == day.select("subscriber_id").distinct().count() == result["scores_rows"] == 4000
    lineage = day.select("model_name", "model_version", "model_alias", "model_reference", "model_run_id",
                         "run_id", "code_version").distinct().collect()
    assert len(lineage) == 1
    row = lineage[0]
    assert (row.model_name, row.model_version, row.model_alias) == ("churn_it", model.version, "champion")
    assert row.model_reference == f"models:/churn_it@champion as of {DAY}"
    assert row.model_run_id == model.run_id and row.run_id == result["run_id"]
    assert day.where(F.col("scored_at").isNull() | (F.col("score") < 0) | (F.col("score") > 1)).count() == 0
    manifest = lake.manifest("scores", DAY, p.partition)
    assert manifest["model_uri"] == model.uri and manifest["rows"] == 4000
    assert manifest["input_rows"] == manifest["scores_rows"] + manifest["quarantined_rows"]
    assert manifest["input_fingerprint"]["rows"] == 4000 and manifest["contract"]


def test_rescoring_a_day_gives_identical_rows_and_one_partition(champion, lake, env):
    p, _ = champion
    scoring.run(p, lake, lake, env, DAY)
    before = checksum(lake.read_partition("scores", DAY, p.partition), CONTENT)
    days_before = lake.partitions("scores", p.partition)
    # when the same day is scored again
    scoring.run(p, lake, lake, env, DAY)
    # then the rows are identical, nothing is duplicated, no other day changed
    assert checksum(lake.read_partition("scores", DAY, p.partition), CONTENT) == before
    assert lake.partitions("scores", p.partition) == days_before
    assert lake.read_partition("scores", DAY, p.partition).count() == 4000
    # and only the committed version is left in the lake (grace period 0 in tests; an object store may list the
    # removed versions' emptied folders for a while)
    folder = f"{lake.table_root('scores')}/model={p.name}/dt={DAY}"
    versions = [n for n, is_dir, _ in lake.fs.children(folder) if is_dir and lake.fs.total_size(f"{folder}/{n}")]
    assert versions == [lake.location("scores", DAY, p.partition).rsplit("/", 1)[-1]]


def test_two_models_scoring_the_same_day_leave_each_others_rows_untouched(champion, lake, env):
    # given the champion's scores of a day, and a second model on the same feature table
    p, _ = champion
    other = with_model_name(p, "churn_it_other")
    train_version(other, lake, env, date(2026, 2, 10), env.dvc_root / "data" / "it_other")
    scoring.run(p, lake, lake, env, DAY)
    mine, committed = checksum(lake.read_partition("scores", DAY, p.partition), CONTENT), \
        lake.manifest("scores", DAY, p.partition)["commit"]
    # when the second model scores the same day, twice
    scoring.run(other, lake, lake, env, DAY)
    theirs = checksum(lake.read_partition("scores", DAY, other.partition), CONTENT)
    scoring.run(other, lake, lake, env, DAY)
    # then the first model's partition is the same committed version, row for row
    assert lake.manifest("scores", DAY, p.partition)["commit"] == committed
    assert checksum(lake.read_partition("scores", DAY, p.partition), CONTENT) == mine
    # and the second model's re-run is identical; the day holds both models' rows, each under its name
    assert checksum(lake.read_partition("scores", DAY, other.partition), CONTENT) == theirs
    per_model = {r["model"]: (r["n"], r["names"]) for r in lake.read("scores").where(F.col("dt") == F.lit(DAY))
                 .groupBy("model").agg(F.count(F.lit(1)).alias("n"),
                                       F.collect_set("model_name").alias("names")).collect()}
    assert per_model == {p.name: (4000, [p.name]), other.name: (4000, [other.name])}


def test_rows_outside_the_training_range_are_flagged(champion, lake, env):
    p, _ = champion
    scoring.run(p, lake, lake, env, DAY)
    # the covariate shift of 2026-02-10 multiplies monthly charges by 1.3: some exceed the training maximum
    flagged = lake.read_partition("scores", DAY, p.partition).where(F.col("ood_features") > 0).count()
    assert 0 < flagged < 4000


def test_top_contributions_are_written_when_switched_on(champion, lake, env):
    p, _ = champion
    with_top = p.model_copy(update={"scoring": p.scoring.model_copy(update={"contributions_top_k": 3})})
    retro = lake.with_namespace("scoring_contrib_tests")
    scoring.run(with_top, lake, retro, env, DAY)
    rows = retro.read_partition("scores", DAY, p.partition).select("top_features").limit(5).collect()
    assert all(len(r.top_features) == 3 for r in rows)
    features = set(p.features.all)
    assert all(c.feature in features for r in rows for c in r.top_features)


def test_the_challenger_is_shadow_scored_in_the_same_pass(champion, world, lake, env, spec):
    # given a challenger waiting for a manual promotion
    p, model = champion
    manual = p.model_copy(update={"gate": p.gate.model_copy(update={"mode": "manual"})})
    trained, _, outcome = train_version(manual, lake, env, date(2026, 2, 11), env.dvc_root / "data" / "it_shadow")
    assert outcome["promoted"] is False
    day = date(2026, 2, 13)  # the challenger applies from 2026-02-12
    # when a day is scored
    result = scoring.run(p, lake, lake, env, day)
    # then scores come from the champion and scores_shadow from the challenger, key for key
    assert result["shadow"] == trained.model.uri
    shadow = lake.read_partition("scores_shadow", day, p.partition)
    assert shadow.select("model_version").distinct().collect()[0][0] == trained.model.version
    assert shadow.count() == lake.read_partition("scores", day, p.partition).count() == 4000
    keys = lake.read_partition("scores", day, p.partition).select("subscriber_id")
    assert shadow.select("subscriber_id").subtract(keys).count() == 0
    assert lake.manifest("scores_shadow", day, p.partition)["model_uri"] == trained.model.uri


QUARANTINE = {"source_table": "features"}


def nothing_written(lake, day: date, p) -> bool:
    return (all(day not in lake.partitions(t, p.partition) for t in ("scores", "scores_shadow"))
            and day not in lake.partitions("quarantine", QUARANTINE))


@pytest.mark.parametrize("ref,message", [
    ("models:/churn_it/99", "models:/churn_it/99 is not in the registry"),
    ("models:/churn_it@nobody", "models:/churn_it@nobody is not in the registry"),
    ("models:/no_such_model@champion", "no registered model named 'no_such_model'"),
])
def test_an_unknown_model_fails_before_anything_is_written(champion, lake, env, ref, message):
    p, _ = champion
    target = lake.with_namespace("scoring_error_tests")
    with pytest.raises(ModelNotFound, match=message):
        scoring.run(p, lake, target, env, DAY, model_ref=ref)
    assert nothing_written(target, DAY, p)


def test_a_day_before_the_first_champion_is_refused_with_the_history(champion, lake, env):
    p, model = champion
    target = lake.with_namespace("scoring_error_tests")
    with pytest.raises(ModelNotFound, match="applies from 2026-02-11. Pin a version"):
        scoring.run(p, lake, target, env, date(2026, 1, 20))
    assert nothing_written(target, date(2026, 1, 20), p)


def test_input_that_does_not_match_the_model_signature_fails_before_anything_is_written(champion, lake, env):
    p, _ = champion
    source = lake.with_namespace("scoring_signature_tests")
    features = lake.read_partition("features", DAY)
    source.write_partition(features.drop("support_calls"), "features", DAY)
    with pytest.raises(ContractViolation, match=f"model {p.name}: input does not match models:/{p.name}/1's signature: "
                                                "missing column\\(s\\) support_calls. The model was trained on them"):
        scoring.run(p, source, source, env, DAY)
    typed = lake.with_namespace("scoring_type_tests")
    typed.write_partition(features.withColumn("region", F.lit(1)), "features", DAY)
    with pytest.raises(ContractViolation, match="region is int, the model needs a string category"):
        scoring.run(p, typed, typed, env, DAY)
    assert nothing_written(source, DAY, p) and nothing_written(typed, DAY, p)


def test_an_empty_or_missing_input_partition_fails_before_anything_is_written(champion, lake, env):
    p, _ = champion
    source = lake.with_namespace("scoring_empty_tests")
    source.write_partition(lake.read_partition("features", DAY).limit(0), "features", DAY)
    with pytest.raises(PartitionNotFound, match="no rows for dt=2026-02-12"):
        scoring.run(p, source, source, env, DAY)
    with pytest.raises(PartitionNotFound, match="no rows for dt=2026-02-13"):
        scoring.run(p, source, source, env, date(2026, 2, 13))
    assert nothing_written(source, DAY, p)
    # a spec naming a table the lake does not have: the model, the table and the key to fix
    absent = lake.with_namespace("scoring_absent_tests")
    absent_table = (f"model {p.name}: table scoring_absent_tests.features does not exist yet "
                    f"\\(its feature table, params.yaml models.{p.name}.table\\)")
    with pytest.raises(PartitionNotFound, match=absent_table):
        scoring.run(p, absent, absent, env, DAY)


def test_a_booster_is_scored_compiled_with_the_boosters_scores(champion, lake, env):
    # given the champion, compiled when it was registered (the time it took is on the version)
    from dataclasses import replace

    p, model = champion
    client = registry.client(env.mlflow_tracking_uri)
    tags = client.get_model_version("churn_it", model.version).tags
    assert tags["compiled"].startswith("lleaves ") and float(tags["compile_seconds"]) > 0
    assert list(env.compiled_dir.glob("*.o"))
    # when scoring picks its engine (checking the golden sample through it)
    features = lake.read_partition(p.table, DAY)
    scorer = scoring.checked_engine(lake.spark, scoring.load_scorer(model, p), p, features.schema,
                                    str(env.compiled_dir))
    # then it is the compiled predictor, and every row's score equals the booster's within 1e-12
    assert scorer.engine == "compiled"
    both = [scoring.predict_frame(features, p.key, [s], 0, 1000, p.features.categorical, str(env.compiled_dir))
            .select(F.col("key"), F.col("score_0").alias(s.engine)) for s in (scorer, replace(scorer, engine="booster"))]
    worst = both[0].join(both[1], "key").agg(F.max(F.abs(F.col("compiled") - F.col("booster"))).alias("d"),
                                             F.count(F.lit(1)).alias("n")).first()
    assert worst["n"] == features.count() and worst["d"] < 1e-12


def test_a_golden_sample_mismatch_fails_before_anything_is_written(champion, lake, env, tmp_path, caplog):
    # given a version whose recorded golden scores are not what this environment computes
    import mlflow

    p, model = champion
    client = registry.client(env.mlflow_tracking_uri)
    booster = registry.load_booster(model)
    with mlflow.start_run(run_name="golden-mismatch-test") as run:
        for name in ("reference_profile.json", "vocabulary.json", "training_window.json"):
            mlflow.log_artifact(registry.download_artifact(model, name, str(tmp_path)))
        golden = registry.load_json_artifact(model, "golden_sample.json")
        golden["scores"] = [s + 1e-6 for s in golden["scores"]]
        mlflow.log_dict(golden, "golden_sample.json")
        mlflow.log_dict(registry.load_json_artifact(model, "contract/features.json"), "contract/features.json")
        info = mlflow.lightgbm.log_model(booster, name="model", registered_model_name="churn_golden_test")
    tags = client.get_model_version("churn_it", model.version).tags
    client.set_model_version_tag("churn_golden_test", str(info.registered_model_version), "contract_fingerprint",
                                 tags["contract_fingerprint"])
    target = lake.with_namespace("scoring_error_tests")
    # when it is asked to score
    with pytest.raises(GoldenSampleMismatch, match="largest difference 1e-06"):
        scoring.run(p, lake, target, env, DAY, model_ref=f"models:/churn_golden_test/{info.registered_model_version}")
    # then the compiled predictor was tried first and given up for the booster, which is refused too
    assert "its compiled predictor differs from the booster on the golden sample" in caplog.text
    # and nothing was written
    assert nothing_written(target, DAY, p)
    assert run.info.run_id


def test_quarantined_rows_reconcile_with_the_scores(champion, lake, env):
    # given a day with two bad rows
    p, _ = champion
    source = lake.with_namespace("scoring_quarantine_tests")
    bad = lake.read_partition("features", DAY).withColumn(
        "support_calls", F.when(F.col("subscriber_id").isin(3, 4), -1).otherwise(F.col("support_calls")))
    source.write_partition(bad, "features", DAY)
    # when it is scored
    result = scoring.run(p, source, source, env, DAY)
    # then they are quarantined with the rule they broke, the others scored: nothing lost
    q = source.read_partition("quarantine", DAY, QUARANTINE).collect()
    assert sorted(r.key for r in q) == ["3", "4"]
    assert all(r.failed_expectations == ["expect_column_values_to_be_between(support_calls)"] for r in q)
    assert json.loads(q[0].row)["support_calls"] == -1
    assert result["input_rows"] == result["scores_rows"] + result["quarantined_rows"] == 4000
    assert source.read_partition("scores", DAY, p.partition).where(F.col("subscriber_id").isin(3, 4)).count() == 0


def test_the_jvm_encoding_gives_the_pandas_encoding_for_every_kind_of_value(spark):
    import numpy as np
    import pandas as pd

    from jobs.models.encoding import encode_pandas, encode_spark

    # given known, unseen and missing categories, a category that is a number, and numbers with NaN and nulls
    frame = pd.DataFrame({"k": range(6), "x": [1.5, None, np.nan, -0.0, 3.0, 7.0],
                          "plan": ["a", "b", "zzz", None, "", "a"], "lines": ["1", "2", "3", "10", None, "2"]})
    vocab = {"plan": ["", "a", "b"], "lines": ["1", "10", "2"]}
    # when both encode it
    expected = encode_pandas(frame, ("x",), vocab).to_numpy()
    got = encode_spark(spark.createDataFrame(frame), "k", ("x",), vocab).orderBy("k").toPandas()
    # then the matrices are identical, missing values as NaN in both
    assert np.array_equal(np.asarray(got.drop(columns="k").to_numpy(), dtype=float), expected, equal_nan=True)
