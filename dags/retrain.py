"""retrain: decide, snapshot, validate, train, evaluate, gate, promote."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from steps import DATE, DEFAULTS, DRIFT_BREACH, DVC_POOL, cli_step, spark_step

AS_OF = "{{ ti.xcom_pull(task_ids='as_of_day') }}"
SNAPSHOT = "snapshots/" + AS_OF
MODEL = "{{ ti.xcom_pull(task_ids='train')['model'] }}"

DOC = """
### retrain

Runs weekly, whenever `score_daily` emits the `batchloop_drift_breach` Asset event, or
by hand (Params: `as_of`, `force`).

`as_of_day` (the day of the triggering drift event, the `as_of` param, or the run's
date) -> `policy` (drift history, matured-label performance, model age, cooldown, new
labelled data; the decision and its reasons are logged to MLflow, "no" included) ->
`snapshot` (the labelled window known on that day, versioned with DVC and pushed to S3)
-> `validate` (both contracts) -> `train` (registered as `@challenger` with its lineage)
-> `evaluate` (challenger and champion on every holdout row) -> `gate` (params.yaml
`gate`) -> `promote` (auto mode: a passed challenger becomes champion from the next day).
"""


@dag(
    dag_id="retrain",
    # no start_date, run_immediately 0: switched on, the first weekly run is next Monday's, not the past one
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 4 * * 1", timezone="UTC", run_immediately=timedelta(0)),
        assets=[DRIFT_BREACH]),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULTS,
    doc_md=DOC,
    tags=["batchloop", "training"],
    params={
        "as_of": Param(None, type=["null", "string"], format="date", pattern=DATE, title="Train as of (optional)",
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
                        "{{ '--force' if params.force else '--no-force' }}", retries=1)

    @task.short_circuit
    def should_retrain(decision: dict) -> bool:
        """Stop here (the rest is skipped) when the policy says no."""
        return bool(decision and decision.get("retrain"))

    snapshot = spark_step("snapshot", "snapshot", "--as-of", AS_OF, "--out", SNAPSHOT, "--track", pool=DVC_POOL)
    validate = spark_step("validate", "validate", "--snapshot", SNAPSHOT)
    train = spark_step("train", "train", "--snapshot", SNAPSHOT, pool=DVC_POOL, links="mlflow")
    evaluate = spark_step("evaluate", "evaluate", "--model", MODEL, "--snapshot", SNAPSHOT, links="mlflow")
    gate = cli_step("gate", "gate", "--model", MODEL)
    promote = cli_step("promote", "promote", "--model", MODEL, "--if-gate-passed")

    day >> policy
    should_retrain(policy.output) >> snapshot >> validate >> train >> evaluate >> gate >> promote


retrain_dag = retrain()
