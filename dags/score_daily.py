"""score_daily: score each day's features with the champion of that day, then measure drift."""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, PokeReturnValue, dag, task
from steps import DEFAULTS, DRIFT_BREACH, MODEL_REF, cli_step, spark_step

DAY = "{{ data_interval_start.strftime('%Y-%m-%d') }}"

DOC = """
### score_daily

Driven by the data interval, never by "now": the run for interval [D, D+1) scores the
features partition `dt=D`, so re-runs and backfills redo exactly that day.

`wait_for_features` -> `validate` (the feature contract; bad rows to `quarantine`) ->
`score` (the champion **as of D** from the alias history, and the challenger into
`scores_shadow`) -> `drift` (against the model's reference profile; HTML report) and,
beside it, `publish` (Data Docs of the day's validations, rendered once `score` is done,
however it ended). When drift breaches the policy, `raise_drift_alarm` emits the
`batchloop_drift_breach` Asset event the `retrain` DAG listens to.

Backfill: `airflow backfill create --dag-id score_daily --from-date 2026-02-10 --to-date 2026-02-20`
(each day scored with the champion it had; pin a version with
`--dag-run-conf '{"model": "models:/churn/3"}'`).
"""


@dag(
    dag_id="score_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=3,
    default_args=DEFAULTS,
    doc_md=DOC,
    tags=["batchloop", "scoring"],
    params={
        "model": Param(None, type=["null", "string"], pattern=MODEL_REF, title="Pinned model (optional)",
                       description="models:/NAME/VERSION to score with; empty: the champion on the scored day"),
    },
)
def score_daily():
    @task.sensor(poke_interval=30, timeout=6 * 3600, mode="reschedule")
    def wait_for_features(data_interval_start=None) -> PokeReturnValue:
        """The upstream load committed dt=D (its manifest is there)."""
        from jobs.lake import committed_on_disk
        from jobs.settings import load_env

        return PokeReturnValue(is_done=committed_on_disk(load_env(), "features", data_interval_start.date()))

    validate = spark_step("validate", "validate", "--dataset", "features", "--date", DAY, "--no-docs")
    score = spark_step("score", "score", "--date", DAY, "--model", "{{ params.model or '' }}")
    drift = spark_step("drift", "drift", "--date", DAY, links="drift")
    publish = cli_step("publish", "publish", "--date", DAY, trigger_rule="all_done")

    @task(outlets=[DRIFT_BREACH])
    def raise_drift_alarm(summary: dict, outlet_events=None) -> dict:
        """Emit the drift Asset event only when drift breached the policy (a skip emits nothing)."""
        from airflow.sdk.exceptions import AirflowSkipException

        if not summary or not summary.get("breached"):
            raise AirflowSkipException("drift within the policy: no event")
        outlet_events[DRIFT_BREACH].extra = {k: summary.get(k) for k in (
            "date", "model", "share_drifted", "drifted_features", "prediction_drifted", "report", "mlflow_run")}
        return summary

    # publish needs only the validation records (validate's and score's), not drift: the two run side by side
    wait_for_features() >> validate >> score >> [drift, publish]
    raise_drift_alarm(drift.output)


score_daily_dag = score_daily()
