"""The whole batchloop loop once, end to end (the demo's DAG)."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag
from spark_steps import batchloop_step

DOC = """
### batchloop: the loop, once

`generate` writes `days` daily subscriber snapshots from `start` (and the churn labels
that mature in that range) -> `train` fits LightGBM on the labels known on the last
day and registers it in MLflow (alias `champion` for the first version, `challenger`
after) -> `score` scores `score_date` with the champion into the Hive table
`batchloop.scores` -> `drift` compares that day with the model's reference profile and
logs the summary to MLflow.

Every task is `batchloop <command>` under spark-submit (connection `spark_default`).
"""


@dag(
    dag_id="batchloop_loop",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=DOC,
    tags=["batchloop", "demo"],
    params={
        "start": Param("2026-01-01", type="string", format="date", description="first day to generate"),
        "days": Param(60, type="integer", minimum=31, maximum=366,
                      description="days to generate (more than the 30-day label delay)"),
        "rows": Param(20000, type="integer", minimum=100, maximum=10_000_000,
                      description="subscribers per day"),
        "score_date": Param("2026-03-01", type="string", format="date",
                            description="day to score (within the generated range)"),
    },
    render_template_as_native_obj=False,
)
def batchloop_loop():
    generate = batchloop_step("generate", "generate", "--start", "{{ params.start }}",
                              "--days", "{{ params.days }}", "--rows", "{{ params.rows }}")
    train = batchloop_step("train", "train", "--as-of", "{{ params.score_date }}")
    score = batchloop_step("score", "score", "--date", "{{ params.score_date }}")
    drift = batchloop_step("drift", "drift", "--date", "{{ params.score_date }}")
    generate >> train >> score >> drift


loop_dag = batchloop_loop()
