"""`make demo`: run the loop through the real Airflow scheduler and say where to look."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date, timedelta

from infra.airflow_api import AirflowClient, AirflowError
from infra.stack import VENV_BIN, Stack, StackError, load_or_create_env

DAG_ID = "batchloop_loop"
START, DAYS, ROWS = date(2026, 1, 1), 60, 20000


def main() -> int:
    stack = Stack(load_or_create_env())
    score_date = START + timedelta(days=DAYS - 1)
    conf = {"start": START.isoformat(), "days": DAYS, "rows": ROWS, "score_date": score_date.isoformat()}
    t0 = time.monotonic()
    try:
        client = AirflowClient.from_password_file(stack.config["BATCHLOOP_AIRFLOW_URL"], stack.password_file())
        client.wait_for_dag(DAG_ID)
        client.unpause(DAG_ID)
        run_id = client.trigger(DAG_ID, conf)
        print(f"demo: triggered {DAG_ID} run {run_id} through the REST API with {conf}")

        def progress(task: str, state: str | None) -> None:
            print(f"demo: [{time.monotonic() - t0:6.0f}s] {task:10} {state or 'waiting'}", flush=True)

        final = client.wait(DAG_ID, run_id, on_change=progress)
    except (AirflowError, StackError, OSError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    if final != "success":
        print(f"demo: the run ended {final}; task logs: {stack.airflow_home / 'logs'}", file=sys.stderr)
        return 1
    query = (f"SELECT dt, model_name, model_version, count(*) AS rows, count(DISTINCT subscriber_id) AS subscribers "
             f"FROM scores WHERE dt = DATE'{score_date}' GROUP BY dt, model_name, model_version")
    print(f"demo: run {final} in {time.monotonic() - t0:.0f} s; the scores table for {score_date}:")
    subprocess.run([str(VENV_BIN / "batchloop"), "sql", query], env=stack.env(), check=False,
                   stderr=subprocess.DEVNULL)
    c = stack.config
    print(f"""
Where to look
  Airflow UI   {c['BATCHLOOP_AIRFLOW_URL']}/dags/{DAG_ID}   user admin, password in
               {stack.password_file()}
  MLflow UI    {c['MLFLOW_TRACKING_URI']}   (model 'churn', experiments batchloop-training / batchloop-drift)
  Scores       Hive table batchloop.scores, partition dt={score_date}, {ROWS} subscribers expected:
               .venv/bin/batchloop sql "SELECT * FROM scores WHERE dt = DATE'{score_date}' LIMIT 10"
  Drift        .venv/bin/batchloop sql "SELECT feature, statistic, drifted FROM drift_metrics WHERE dt = DATE'{score_date}'"
  Stop         make down
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
