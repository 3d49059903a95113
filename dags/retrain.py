"""retrain__NAME, one per declared model: decide, snapshot, train (the snapshot validated first), evaluate, gate,
promote."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from steps import DATE, DEFAULTS, DVC_POOL, MODELS, cli_step, dag_id, drift_breach, spark_step

AS_OF = "{{ ti.xcom_pull(task_ids='as_of_day') }}"
TRAINED = "{{ ti.xcom_pull(task_ids='train')['model'] }}"

DOC = """
### retrain__{model}

Runs weekly, whenever `score_daily__{model}` emits the `batchloop_drift_breach__{model}`
Asset event, or by hand (Params: `as_of`, `force`).

`as_of_day` (the day of the triggering drift event, the `as_of` param, or the run's
date) -> `policy` (drift history, matured-label performance, model age, cooldown, new
labelled data; the decision and its reasons are logged to MLflow, "no" included) ->
`snapshot` (the labelled window known on that day, versioned with DVC and pushed to S3)
-> `train` (the snapshot checked against its DVC record and validated against the feature
and label contracts first; then the model's trainer; registered as `@challenger` with its
lineage) -> `evaluate` (challenger and champion on
every holdout row) -> `gate` (the spec's `gate`) -> `promote` (auto mode: a passed
challenger becomes champion from the next day).
"""


def build(model: str):
    """The retrain DAG of one declared model."""
    name = ("--model-name", model)
    snapshot_dir = f"snapshots/{model}/{AS_OF}"

    @dag(
        dag_id=dag_id("retrain", model),
        # no start_date, run_immediately 0: switched on, the first weekly run is next Monday's, not the past one
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable("0 4 * * 1", timezone="UTC", run_immediately=timedelta(0)),
            assets=[drift_breach(model)]),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULTS,
        doc_md=DOC.format(model=model),
        tags=["batchloop", "training", model],
        params={
            "as_of": Param(None, type=["null", "string"], format="date", pattern=DATE,
                           title="Train as of (optional)",
                           description="use the labels known on this day; empty: the drift event's day or the run's"),
            "force": Param(False, type="boolean", description="train whatever the policy says"),
        },
    )
    def retrain():
        @task
        def as_of_day(params=None, triggering_asset_events=None, logical_date=None) -> str:
            """The day to train as of: the param, else the triggering drift event's day, else the run's date."""
            if params.get("as_of"):
                return params["as_of"]
            for events in (triggering_asset_events or {}).values():
                days = [e.extra["date"] for e in events if (e.extra or {}).get("date")]
                if days:
                    return max(days)
            if logical_date is None:
                raise ValueError("no as_of: give the as_of param, or trigger the DAG from a drift event")
            return logical_date.strftime("%Y-%m-%d")

        day = as_of_day()
        policy = spark_step("policy", "policy", "--as-of", AS_OF,
                            "{{ '--force' if params.force else '--no-force' }}", *name, retries=1)

        @task.short_circuit
        def should_retrain(decision: dict) -> bool:
            """Stop here (the rest is skipped) when the policy says no."""
            return bool(decision and decision.get("retrain"))

        snapshot = spark_step("snapshot", "snapshot", "--as-of", AS_OF, "--out", snapshot_dir, "--track", *name,
                              pool=DVC_POOL)
        train = spark_step("train", "train", "--snapshot", snapshot_dir, *name, pool=DVC_POOL, links="mlflow")
        evaluate = spark_step("evaluate", "evaluate", "--model", TRAINED, "--snapshot", snapshot_dir,
                              links="mlflow")
        gate = cli_step("gate", "gate", "--model", TRAINED)
        promote = cli_step("promote", "promote", "--model", TRAINED, "--if-gate-passed")

        day >> policy
        should_retrain(policy.output) >> snapshot >> train >> evaluate >> gate >> promote

    return retrain()


for _model in MODELS:
    globals()[dag_id("retrain", _model)] = build(_model)
