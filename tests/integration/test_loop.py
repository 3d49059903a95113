"""The thin loop on real services: generate -> train/register -> score -> drift."""

from __future__ import annotations

from datetime import date

import pytest
from pyspark.sql import functions as F

from jobs import drift, generate, score, train
from jobs.registry import client as registry_client

pytestmark = pytest.mark.integration

START, DAYS, ROWS = date(2026, 1, 1), 45, 3000
LAST = date(2026, 2, 14)


@pytest.fixture(scope="module")
def loop(params, lake, env):
    counts = generate.run(params.generator, params.data, lake, START, DAYS, ROWS, params.generator.seed)
    model, _ = train.run(params, lake, env.mlflow_tracking_uri, as_of=LAST)
    scored = score.run(params, lake, env.mlflow_tracking_uri, LAST)
    return counts, model, scored


def test_generate_writes_features_and_only_matured_labels(loop, lake):
    counts, _, _ = loop
    assert counts["features_rows"] == lake.read("features").count() == DAYS * ROWS
    labelled = lake.partitions("labels")
    assert labelled[0] == START and labelled[-1] == date(2026, 1, 15)  # LAST - 30 days


def test_first_model_is_registered_as_champion_with_lineage(loop, env, params):
    _, model, _ = loop
    client = registry_client(env.mlflow_tracking_uri)
    assert model.alias == "champion"
    assert client.get_model_version_by_alias(params.model.name, "champion").version == model.version
    tags = client.get_model_version(params.model.name, model.version).tags
    assert {"params_hash", "git_commit", "training_window"} <= set(tags)
    metrics = client.get_run(model.run_id).data.metrics
    assert 0.7 < metrics["holdout_auc"] < 0.95


def test_model_artifacts_are_stored_on_the_s3_server(loop, services):
    objects = services.s3_client().list_objects_v2(Bucket=services.config["BATCHLOOP_BUCKET_MLFLOW"])
    keys = [o["Key"] for o in objects.get("Contents", [])]
    assert any(k.endswith("reference_profile.json") for k in keys)
    assert any("MLmodel" in k for k in keys)


def test_scores_hold_one_row_per_subscriber_with_lineage(loop, lake):
    _, model, scored = loop
    day = lake.read_partition("scores", LAST)
    assert scored["input_rows"] == scored["scored_rows"] == ROWS
    assert day.select("subscriber_id").distinct().count() == ROWS
    assert day.where((F.col("score") < 0) | (F.col("score") > 1)).count() == 0
    lineage = day.select("model_name", "model_version", "model_alias", "run_id", "code_version").distinct().collect()
    assert len(lineage) == 1
    row = lineage[0]
    assert (row.model_name, row.model_version, row.model_alias) == ("churn", model.version, "champion")
    assert row.run_id and row.code_version


def test_rescoring_a_day_replaces_exactly_that_partition(loop, lake, params, env):
    before = {r.dt: r["count"] for r in lake.read("scores").groupBy("dt").count().collect()}
    score.run(params, lake, env.mlflow_tracking_uri, LAST)
    after = {r.dt: r["count"] for r in lake.read("scores").groupBy("dt").count().collect()}
    assert before == after == {LAST: ROWS}


def test_drift_summary_is_written_and_logged(loop, lake, params, env):
    summary = drift.run(params, lake, env.mlflow_tracking_uri, LAST)
    rows = lake.read_partition("drift_metrics", LAST)
    assert rows.count() == len(params.data.features) + 1
    assert 0.0 <= summary["share_drifted"] <= 1.0
    client = registry_client(env.mlflow_tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(drift.EXPERIMENT).experiment_id])
    assert any(r.data.tags.get("date") == LAST.isoformat() for r in runs)


def test_a_second_training_becomes_challenger_and_leaves_the_champion(loop, lake, params, env):
    _, first, _ = loop
    second, _ = train.run(params, lake, env.mlflow_tracking_uri, as_of=LAST)
    client = registry_client(env.mlflow_tracking_uri)
    assert second.alias == "challenger" and int(second.version) == int(first.version) + 1
    assert client.get_model_version_by_alias(params.model.name, "champion").version == first.version


def test_training_and_scoring_reject_rows_by_the_same_suite(loop, lake, params, env, tmp_path, monkeypatch):
    # given: the feature contract with one bound tightened, so a few rows of every day break it
    import json

    from jobs import contract

    rule = "expect_column_values_to_be_between(complaint_score)"
    bound = lake.read_partition("features", LAST).approxQuantile("complaint_score", [0.997], 0.0)[0]
    doc = json.loads((contract.CONTRACTS_DIR / "features.json").read_text())
    for e in doc["expectations"]:
        if e["type"] == "expect_column_values_to_be_between" and e["kwargs"]["column"] == "complaint_score":
            e["kwargs"]["max_value"] = bound
    (tmp_path / "features.json").write_text(json.dumps(doc))
    for name in ("labels", "scores"):
        (tmp_path / f"{name}.json").write_text((contract.CONTRACTS_DIR / f"{name}.json").read_text())
    monkeypatch.setattr(contract, "CONTRACTS_DIR", tmp_path)

    # when: a model is trained and a day is scored under it
    model, _ = train.run(params, lake, env.mlflow_tracking_uri, as_of=LAST)
    scored = score.run(params, lake, env.mlflow_tracking_uri, LAST, model_ref=model.uri)

    # then: training left out the rows above the bound, and scoring quarantined them
    client = registry_client(env.mlflow_tracking_uri)
    path = client.download_artifacts(model.run_id, "validation/features.json", str(tmp_path))
    training = {f["expectation"]: f["failed_rows"] for f in json.loads(open(path).read())["findings"]}
    window = lake.read_range("features", START, date(2026, 1, 15))
    assert training[rule] == window.where(F.col("complaint_score") > bound).count() > 0
    quarantined = lake.read_partition("quarantine", LAST)
    expected = {str(r[0]) for r in lake.read_partition("features", LAST)
                .where(F.col("complaint_score") > bound).select("subscriber_id").collect()}
    assert {r.key for r in quarantined.where(F.array_contains("failed_expectations", rule)).collect()} == expected
    assert scored["input_rows"] == scored["scored_rows"] + scored["quarantined_rows"] == ROWS
    assert scored["quarantined_rows"] == len(expected) > 0
