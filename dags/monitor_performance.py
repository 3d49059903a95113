"""monitor_performance__NAME, one per declared model: quality of what production served, once its labels
have matured."""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag
from steps import DEFAULTS, MODELS, dag_id, spark_step

DOC = """
### monitor_performance__{model}

Daily, driven by the data interval. Labels for day D - delay (the model's
`label.delay_days`) mature on day D: the run for D joins them with the scores production
served then (and the challenger's shadow scores) and writes the task's metrics per model
version into `performance_metrics` (`model={model}`): AUC, log loss, Brier score and
calibration error for a binary model; RMSE, MAE, R-squared and calibration error for a
regression model. The retraining policy reads it.
"""


def build(model: str):
    """The monitor_performance DAG of one declared model."""

    @dag(
        dag_id=dag_id("monitor_performance", model),
        schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULTS,
        doc_md=DOC.format(model=model),
        tags=["batchloop", "monitoring", model],
    )
    def monitor_performance():
        day = "{{ data_interval_start.strftime('%Y-%m-%d') }}"
        measure = spark_step("monitor", "monitor", "--date", day, "--model-name", model)
        analyse = spark_step("analyze_experiment", "experiment", "analyze", "--date", day, "--model-name", model,
                             links="experiment")
        measure >> analyse

    return monitor_performance()


for _model in MODELS:
    globals()[dag_id("monitor_performance", _model)] = build(_model)
