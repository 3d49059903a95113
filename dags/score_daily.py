"""score_daily__NAME, one per declared model: score each day's features with the model's champion of that
day, then measure drift."""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, PokeReturnValue, dag, task
from steps import DEFAULTS, MODEL_REF, MODELS, cli_step, dag_id, drift_breach, spark_step

DAY = "{{ data_interval_start.strftime('%Y-%m-%d') }}"

DOC = """
### score_daily__{model}

The model `{model}` (params.yaml `models.{model}`), on its feature table `{table}`.
Driven by the data interval, never by "now": the run for interval [D, D+1) scores the
partition `dt=D`, so re-runs and backfills redo exactly that day.

`wait_for_features` -> `score` (first the day against its table's contract, bad rows to
`quarantine`; then the champion **as of D** from the alias history, and the challenger
into `scores_shadow`, both under `model={model}`; then the output against the model's
scores contract) -> `drift` (against the version's reference profile; HTML report) and,
beside it, `publish` (Data Docs of the day's validations, rendered once `score` is done,
however it ended). When drift breaches the policy,
`raise_drift_alarm` emits the `batchloop_drift_breach__{model}` Asset event that
`retrain__{model}` listens to.

Backfill: `airflow backfill create --dag-id score_daily__{model} --from-date 2026-02-10 --to-date 2026-02-20`
(each day scored with the champion it had; pin a version with
`--dag-run-conf '{{"model": "models:/{model}/3"}}'`).
"""


def build(model: str, table: str, schedule: str):
    """The score_daily DAG of one declared model."""
    breach = drift_breach(model)

    @dag(
        dag_id=dag_id("score_daily", model),
        schedule=CronDataIntervalTimetable(schedule, timezone="UTC"),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=3,
        default_args=DEFAULTS,
        doc_md=DOC.format(model=model, table=table),
        tags=["batchloop", "scoring", model],
        params={
            "model": Param(None, type=["null", "string"], pattern=MODEL_REF, title="Pinned model (optional)",
                           description=f"models:/{model}/VERSION to score with; empty: the champion on the "
                                       "scored day"),
        },
    )
    def score_daily():
        @task.sensor(poke_interval=30, timeout=6 * 3600, mode="reschedule")
        def wait_for_features(data_interval_start=None) -> PokeReturnValue:
            """The upstream load committed dt=D of the model's feature table (its manifest is there)."""
            from jobs.config import load_env
            from jobs.io.lake import committed_on_disk

            return PokeReturnValue(is_done=committed_on_disk(load_env(), table, data_interval_start.date()))

        name = ("--model-name", model)
        # score validates the day against its table's contract before it scores (one validation, one record)
        score = spark_step("score", "score", "--date", DAY, "--model", "{{ params.model or '' }}", *name)
        drift = spark_step("drift", "drift", "--date", DAY, *name, links="drift")
        publish = cli_step("publish", "publish", "--date", DAY, *name, trigger_rule="all_done")

        @task(outlets=[breach])
        def raise_drift_alarm(summary: dict, outlet_events=None) -> dict:
            """Emit the drift Asset event only when drift breached the policy (a skip emits nothing)."""
            from airflow.sdk.exceptions import AirflowSkipException

            if not summary or not summary.get("breached"):
                raise AirflowSkipException("drift within the policy: no event")
            outlet_events[breach].extra = {k: summary.get(k) for k in (
                "date", "model", "share_drifted", "drifted_features", "prediction_drifted", "report", "mlflow_run")}
            return summary

        # publish needs only the validation records (score's), not drift: the two run side by side
        wait_for_features() >> score >> [drift, publish]
        raise_drift_alarm(drift.output)

    return score_daily()


for _model, _declared in MODELS.items():
    globals()[dag_id("score_daily", _model)] = build(_model, _declared["table"], _declared["schedule"])
