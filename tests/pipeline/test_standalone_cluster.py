"""The jobs unchanged on a Spark standalone cluster whose two workers share nothing but S3.

A master and two workers from the pyspark distribution, each worker with its own work and
local directories; the lake on the session's S3 server, the Hive metastore on its PostgreSQL
(the DAG world's). Validate, score and drift run first in local mode, as every step runs
locally (a client of the world's warm Connect server, `local[2]`), then through spark-submit
on the cluster, and leave the same rows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pyspark
import pytest
import requests

from infra.stack import free_ports, port_in_use
from tests.conftest import BIN, MODEL

pytestmark = pytest.mark.integration

SPARK_HOME = Path(pyspark.__file__).parent
DAY = "2026-02-18"
WORKERS = 2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, services):
    """A standalone master and two workers on 127.0.0.1, stopped by PID afterwards. The workers (and the executors
    they start) get the S3 keys from their environment, as on a cluster whose nodes hold an instance role."""
    ports = free_ports(["master", "master_ui", *(f"{k}{i}" for i in range(WORKERS) for k in ("worker", "ui"))])
    base = tmp_path_factory.mktemp("spark-cluster")
    env = {**os.environ, **services.env(), "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_NO_DAEMONIZE": "1", "PYSPARK_PYTHON": str(BIN / "python")}
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    master_url = f"spark://127.0.0.1:{ports['master']}"
    logs, procs = [open(base / "master.log", "wb")], []
    procs.append(subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                   "--port", str(ports["master"]), "--webui-port", str(ports["master_ui"])],
                                  env=env, stdout=logs[0], stderr=subprocess.STDOUT, start_new_session=True))
    deadline = time.monotonic() + 120
    while not port_in_use(ports["master"]):
        assert time.monotonic() < deadline, (base / "master.log").read_text()[-2000:]
        time.sleep(1)
    for i in range(WORKERS):
        own = base / f"worker{i}"
        (own / "work").mkdir(parents=True)
        (own / "local").mkdir()
        logs.append(open(own / "worker.log", "wb"))
        procs.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.worker.Worker", master_url, "--host", "127.0.0.1",
             "--port", str(ports[f"worker{i}"]), "--webui-port", str(ports[f"ui{i}"]),
             "--cores", "1", "--memory", "1g", "--work-dir", str(own / "work")],
            env={**env, "SPARK_LOCAL_DIRS": str(own / "local")}, stdout=logs[-1], stderr=subprocess.STDOUT,
            start_new_session=True))
    ui = f"http://127.0.0.1:{ports['master_ui']}/json/"
    while True:
        try:
            if requests.get(ui, timeout=5).json().get("aliveworkers", 0) >= WORKERS:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, (base / "worker0" / "worker.log").read_text()[-2000:]
        time.sleep(1)
    yield master_url, procs, base
    for proc in reversed(procs):
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)
    for log in logs:
        log.close()


@pytest.fixture(scope="module")
def s3_world(dag_world, trained):
    """The DAG world's settings (its lake on S3, its metastore on PostgreSQL, the day's features already in it)
    for spark-submit drivers; the champion is the world's, in the shared MLflow."""
    return {**dag_world.env, "BATCHLOOP_SPARK_MODE": "submit", "BATCHLOOP_SPARK_MASTER": "local[2]",
            "SPARK_HOME": str(SPARK_HOME)}


def submit(env: dict, cwd: Path, master: str, *args: str) -> subprocess.CompletedProcess:
    """spark-submit of the CLI, as a DAG task on a cluster runs it (the jars from the spark_default connection)."""
    jars = f"{Path(os.environ.get('VIRTUAL_ENV', BIN.parent))}/spark-jars/*"
    return subprocess.run([str(BIN / "spark-submit"), "--master", master, "--driver-memory", "1g",
                           "--conf", "spark.executor.memory=1g", "--conf", f"spark.driver.extraClassPath={jars}",
                           "--conf", f"spark.executor.extraClassPath={jars}",
                           str(Path(__file__).parents[2] / "jobs" / "__main__.py"), *args],
                          env=env, capture_output=True, text=True, timeout=900, cwd=cwd)


COMMITTED = re.compile(r"committed batchloop\.(\w+) (\S+): (\d+) rows \(([\w-]+)\)")


def committed(env: dict, done: subprocess.CompletedProcess) -> dict[str, pd.DataFrame]:
    """Each partition the run committed, read back from S3: {table: its rows, sorted}."""
    from jobs.config import Env
    from jobs.io.lake import FileSystem

    settings = Env(_env_file=None, s3_endpoint_url=env["BATCHLOOP_S3_ENDPOINT_URL"])
    out = {}
    for table, partition, rows, commit in COMMITTED.findall(done.stdout + done.stderr):
        location = f"{env['BATCHLOOP_LAKE_ROOT']}/batchloop.db/{table}/{partition}/{commit}"
        filesystem, inner = FileSystem(settings)._resolve(location)
        frame = ds.dataset(inner, filesystem=filesystem, format="parquet").to_table().to_pandas()
        assert len(frame) == int(rows), (table, partition)
        run_specific = [c for c in frame.columns if c in ("scored_at", "computed_at", "run_id", "airflow_run_id")]
        frame = frame.drop(columns=run_specific)
        out[table] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return out


def client(env: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI as a client of the world's Connect server, as every step runs locally."""
    return subprocess.run([str(BIN / "batchloop"), *args], env=env, capture_output=True, text=True, timeout=900,
                          cwd=cwd)


def steps(env: dict, cwd: Path, master: str | None) -> dict:
    """validate, score, drift of the day through spark-submit on `master` (None: on the Connect server): what each
    printed and committed."""
    run = (lambda *args: client(env, cwd, *args)) if master is None else (lambda *args: submit(env, cwd, master, *args))
    findings = Path(cwd) / f"validate-{'local' if master is None else 'cluster'}.json"
    validated = run("validate", "--dataset", "features", "--date", DAY, "--no-docs", "--model-name", MODEL,
                    "--report", str(findings))
    assert validated.returncode == 0, validated.stderr[-3000:]
    scored = run("score", "--date", DAY, "--model", f"models:/{MODEL}/1", "--no-shadow")
    assert scored.returncode == 0, scored.stderr[-3000:]
    drifted = run("drift", "--date", DAY, "--model", f"models:/{MODEL}/1")
    assert drifted.returncode == 0, drifted.stderr[-3000:]
    record = {k: v for k, v in json.loads(findings.read_text()).items() if k != "run_id"}  # counts, verdicts
    return {"validate": record, "logs": [scored.stdout + scored.stderr, drifted.stdout + drifted.stderr],
            **committed(env, scored), **committed(env, drifted)}


def test_a_two_worker_cluster_sharing_only_s3_leaves_the_rows_of_local_mode(cluster, s3_world, dag_world):
    from tests.integration.test_stack import LOOPBACK, listening_addresses

    master, procs, base = cluster
    # the master and the workers listen on loopback only
    for proc in procs:
        assert listening_addresses(proc.pid) <= LOOPBACK
    # given the day validated, scored and drifted in local mode, on the world's Connect server
    local = steps(dag_world.env, dag_world.root, None)
    # when the same steps are submitted to the cluster
    remote = steps(s3_world, dag_world.root, master)
    assert all(f"via Spark Connect {dag_world.remote}" in log for log in local["logs"])
    assert all(f"master={master}" in log for log in remote["logs"])  # each job logs the master it runs on
    # then both workers ran executors of the jobs, each in its own work directory
    for i in range(WORKERS):
        assert list((base / f"worker{i}" / "work").glob("app-*/*/stderr")), f"worker {i} ran no executor"
    # and the contract's verdict, the scores and the drift metrics are the same, row for row
    assert remote["validate"] == local["validate"]
    assert {"scores", "drift_metrics"} <= remote.keys()
    for table in ("scores", "quarantine", "drift_metrics"):
        if table in local or table in remote:
            pd.testing.assert_frame_equal(remote[table], local[table], check_exact=table != "drift_metrics",
                                          rtol=1e-9)
