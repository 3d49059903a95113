"""Which datasets each step of a day's DAG runs touched, from OpenLineage event files (pure reading)."""

from __future__ import annotations

import json

from jobs.io.lineage import day_lineage, read_events


def airflow_event(kind: str, run_id: str, dag_id: str, task_id: str, interval: str, at: str, conf=None) -> dict:
    return {"eventType": kind, "eventTime": at, "job": {"namespace": "batchloop", "name": f"{dag_id}.{task_id}"},
            "run": {"runId": run_id, "facets": {"airflow": {
                "dagRun": {"dag_id": dag_id, "run_id": f"backfill__{interval}", "conf": conf or {},
                           "data_interval_start": f"{interval}T00:00:00+00:00"},
                "task": {"task_id": task_id}}}}}


def spark_event(run_id: str, *, stated: str | None = None, parent: str | None = None, inputs=(), outputs=(),
                at: str = "2026-02-12T00:00:05Z") -> dict:
    facets = {}
    if stated:
        facets["spark_properties"] = {"properties": {"spark.openlineage.parentRunId": stated}}
    if parent:
        facets["parent"] = {"run": {"runId": parent}, "job": {"namespace": "batchloop", "name": "app"}}
    dataset = lambda path, table=None: {  # noqa: E731
        "namespace": "s3a://lake", "name": path,
        "facets": {"symlinks": {"identifiers": [{"namespace": "hive", "name": table, "type": "TABLE"}]}}
        if table else {}}
    return {"eventType": "COMPLETE", "eventTime": at, "job": {"name": "q"},
            "run": {"runId": run_id, "facets": facets},
            "inputs": [dataset(*i) for i in inputs], "outputs": [dataset(*o) for o in outputs]}


def write(path, events, extra: str = "") -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in events) + extra)


def test_each_step_gets_the_datasets_of_the_queries_that_name_it(tmp_path):
    day = "2026-02-11"
    write(tmp_path / "airflow.ndjson", [
        airflow_event("START", "t-score", "score_daily__churn", "score", day, "2026-02-12T00:00:01Z"),
        airflow_event("COMPLETE", "t-score", "score_daily__churn", "score", day, "2026-02-12T00:00:09Z"),
        airflow_event("START", "t-drift", "score_daily__churn", "drift", day, "2026-02-12T00:00:10Z"),
        airflow_event("FAIL", "t-drift", "score_daily__churn", "drift", day, "2026-02-12T00:00:12Z"),
        airflow_event("COMPLETE", "t-other-day", "score_daily__churn", "score", "2026-02-12", "2026-02-13T00:00:09Z"),
        airflow_event("COMPLETE", "t-other-model", "score_daily__spend", "score", day, "2026-02-12T00:00:09Z"),
    ])
    write(tmp_path / "spark.ndjson", [
        # a Connect client: the session's captured setting names the task on one of the query's events
        spark_event("q1", stated="t-score"),
        spark_event("q1", inputs=[("w/features/dt=2026-02-11/c1", "batchloop.features")]),
        spark_event("q1", outputs=[("w/scores/model=churn/dt=2026-02-11/c2", "batchloop.scores")]),
        # a classic driver: the query's parent is its application, whose parent is the task
        spark_event("app", parent="t-drift", at="2026-02-12T00:00:10.5Z"),
        spark_event("q2", parent="app", outputs=[("w/drift_metrics/model=churn/dt=2026-02-11/c3", None)],
                    at="2026-02-12T00:00:11Z"),
        # the same task run id at another time (a run of the same logical date in another Airflow database)
        spark_event("q4", stated="t-score", outputs=[("w/scores/model=churn/dt=2026-02-10/c5", None)],
                    at="2026-02-11T00:00:05Z"),
        # another task's query
        spark_event("q3", stated="t-other-day", outputs=[("w/scores/model=churn/dt=2026-02-12/c4", None)]),
    ], extra='{"eventType": "COMPLETE", "run": {"runId": "cut sho\n')
    found = day_lineage(tmp_path, day, "churn")
    assert found["events"] == {"airflow": 6, "spark": 7, "unreadable_lines": 1}
    [run] = found["runs"]
    assert (run["dag_id"], run["run_id"]) == ("score_daily__churn", "backfill__2026-02-11")
    score, drift = run["steps"]
    assert (score["task_id"], score["state"], score["spark_queries"]) == ("score", "success", 1)
    assert score["inputs"] == ["s3a://lake/w/features/dt=2026-02-11/c1 (table batchloop.features)"]
    assert score["outputs"] == ["s3a://lake/w/scores/model=churn/dt=2026-02-11/c2 (table batchloop.scores)"]
    assert (drift["task_id"], drift["state"], drift["inputs"]) == ("drift", "failed", [])
    assert drift["outputs"] == ["s3a://lake/w/drift_metrics/model=churn/dt=2026-02-11/c3"]


def test_a_run_triggered_for_a_day_or_a_range_is_found_by_its_conf_and_missing_files_are_no_events(tmp_path):
    write(tmp_path / "airflow.ndjson", [
        airflow_event("COMPLETE", "t", "retrain__churn", "train", "2026-03-01", "2026-03-01T00:00:00Z",
                      conf={"as_of": "2026-02-09"}),
        airflow_event("COMPLETE", "r", "retro_test", "retro", "2026-03-01", "2026-03-01T00:00:00Z",
                      conf={"model_name": "churn", "start": "2026-02-05", "end": "2026-02-10"}),
        airflow_event("COMPLETE", "o", "retro_test", "retro", "2026-03-01", "2026-03-01T00:00:00Z",
                      conf={"model_name": "churn", "start": "2026-02-10", "end": "2026-02-12"})])
    found = day_lineage(tmp_path, "2026-02-09", "churn")
    assert sorted(s["task_id"] for r in found["runs"] for s in r["steps"]) == ["retro", "train"]
    assert found["events"]["spark"] == 0
    assert read_events(tmp_path / "absent.ndjson") == ([], 0)
