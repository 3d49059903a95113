"""The loop DAG, run with dag.test() on small data against the real S3 and MLflow servers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.dags

RUN = """
import sys
sys.path.insert(0, "{dags}")
from batchloop_loop import loop_dag
run = loop_dag.test(run_conf={conf!r})
print("STATE", run.state)
sys.exit(0 if run.state == "success" else 1)
"""


def test_loop_dag_runs_every_step_through_spark_submit(services, tmp_path):
    # given: Airflow's metadata database for this test, a lake and a registered model name of its own
    own_params = yaml.safe_load((ROOT / "params.yaml").read_text())
    own_params["model"]["name"] = "churn_dag_test"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(own_params))
    env = {**services.env(), "BATCHLOOP_STATE_DIR": str(tmp_path / "state"),
           "AIRFLOW_HOME": str(tmp_path / "airflow"), "BATCHLOOP_PARAMS": str(tmp_path / "params.yaml")}
    (tmp_path / "airflow").mkdir()
    migrated = subprocess.run([f"{sys.prefix}/bin/airflow", "db", "migrate"], env=env, capture_output=True,
                              text=True, timeout=600)
    assert migrated.returncode == 0, migrated.stdout[-2000:] + migrated.stderr[-2000:]
    conf = {"start": "2026-01-01", "days": 35, "rows": 500, "score_date": "2026-02-04"}
    # when
    result = subprocess.run([sys.executable, "-c", RUN.format(dags=ROOT / "dags", conf=conf)], env=env,
                            capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    # then
    (tmp_path / "dag_test.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, f"see {tmp_path / 'dag_test.log'}: " + (result.stdout + result.stderr)[-3000:]
    check = subprocess.run([f"{sys.prefix}/bin/batchloop", "sql", "--json",
                            "SELECT count(*) AS n, count(DISTINCT model_version) AS v FROM scores "
                            "WHERE dt = DATE'2026-02-04'"], env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-2000:]
    assert json.loads(check.stdout.strip().splitlines()[-1]) == {"n": 500, "v": 1}
