"""How a DAG runs a batchloop step on Spark: spark-submit of the same CLI a person runs.

The Spark master comes from the Airflow connection `spark_default` (local[2] on the
local stack, a cluster in production: change the connection, not the DAGs).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

JOBS_ENTRYPOINT = str(Path(__file__).resolve().parents[1] / "jobs" / "__main__.py")

# The embedded Derby metastore admits one Spark driver at a time: the `lake` pool
# (one slot locally) serialises Spark steps. With a remote metastore, raise its slots.
LAKE_POOL = "lake"


def batchloop_step(task_id: str, *args: str, **kwargs) -> SparkSubmitOperator:
    """A task that runs `batchloop <args>` under spark-submit, tagged with the Airflow run id."""
    return SparkSubmitOperator(
        task_id=task_id,
        application=JOBS_ENTRYPOINT,
        application_args=list(args),
        conn_id="spark_default",
        name=f"batchloop-{task_id}",
        driver_memory="2g",
        env_vars={"BATCHLOOP_RUN_ID": "{{ run_id }}"},
        pool=LAKE_POOL,
        retries=kwargs.pop("retries", 1),
        retry_delay=kwargs.pop("retry_delay", timedelta(seconds=30)),
        retry_exponential_backoff=True,
        **kwargs,
    )
