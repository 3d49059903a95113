"""A world for DAG tests: its own Airflow home, lake, metastore and DVC repository, on the session's S3 and MLflow.

Spark steps run as spark-submit subprocesses, which need the embedded metastore to
themselves, so this world never shares a state folder with the test process's Spark.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, make_dvc_repo

BIN = Path(sys.executable).parent
MODEL = "churn_dags"


@dataclass
class World:
    root: Path
    env: dict[str, str]

    def cli(self, *args: str, timeout: float = 900) -> dict:
        """Run `batchloop ...` in this world; its JSON result."""
        done = subprocess.run([str(BIN / "batchloop"), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    def sql(self, query: str) -> list[dict]:
        done = subprocess.run([str(BIN / "batchloop"), "sql", "--json", "--limit", "1000", query], env=self.env,
                              capture_output=True, text=True, timeout=600, cwd=self.root)
        assert done.returncode == 0, done.stderr[-3000:]
        return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="session")
def dag_world(services, tmp_path_factory) -> World:
    """50 days of small data, a params file of its own (model churn_dags), Airflow's metadata database."""
    root = tmp_path_factory.mktemp("dagworld")
    repo = make_dvc_repo(root / "repo", services)
    own = yaml.safe_load((ROOT / "params.yaml").read_text())
    own["model"]["name"] = MODEL
    own["generator"]["rows"] = 1500
    own["gate"]["max_overfit_gap"] = 0.25  # 1,500 subscribers a day overfit more than production volumes
    (repo / "params.yaml").write_text(yaml.safe_dump(own))
    (root / "airflow").mkdir()
    spark_conn = {"conn_type": "spark", "host": "local[2]", "extra": {"deploy-mode": "client",
                                                                     "spark-binary": "spark-submit"}}
    env = {**services.env(), "BATCHLOOP_STATE_DIR": str(root / "state"), "BATCHLOOP_DVC_ROOT": str(repo),
           "BATCHLOOP_PARAMS": str(repo / "params.yaml"), "AIRFLOW_HOME": str(root / "airflow"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(spark_conn), "BATCHLOOP_LAKE_GC_GRACE_MINUTES": "0"}
    migrated = subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True,
                              timeout=600)
    assert migrated.returncode == 0, migrated.stdout[-2000:] + migrated.stderr[-2000:]
    world = World(root, env)
    world.cli("generate", "--start", "2026-01-01", "--days", "50", "--rows", "1500")
    return world
