"""monitor_performance: quality of what production served, once its labels have matured."""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag
from steps import DEFAULTS, spark_step

DOC = """
### monitor_performance

Daily, driven by the data interval. Labels for day D-30 mature on day D: the run for D
joins them with the scores production served on D-30 (and the shadow scores of the
challenger) and writes AUC, log loss, Brier score and calibration error per model
version into `performance_metrics`. The retraining policy reads it.
"""


@dag(
    dag_id="monitor_performance",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULTS,
    doc_md=DOC,
    tags=["batchloop", "monitoring"],
)
def monitor_performance():
    spark_step("monitor", "monitor", "--date", "{{ data_interval_start.strftime('%Y-%m-%d') }}")


monitor_performance_dag = monitor_performance()
