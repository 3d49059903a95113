"""The scoring job unchanged on a Spark standalone cluster: a master and a worker from the pyspark distribution."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pyspark
import pytest
import requests

from infra.stack import free_ports, port_in_use
from tests.conftest import BIN, MODEL
from tests.reliability.test_kill_and_concurrency import content, visible_partition

pytestmark = pytest.mark.integration

SPARK_HOME = Path(pyspark.__file__).parent
DAY = "2026-02-18"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A standalone master and one worker on 127.0.0.1, stopped by PID afterwards."""
    ports = free_ports(["master", "master_ui", "worker", "worker_ui"])
    work = tmp_path_factory.mktemp("spark-worker")
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_NO_DAEMONIZE": "1", "PYSPARK_PYTHON": str(BIN / "python")}
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    master_url = f"spark://127.0.0.1:{ports['master']}"
    logs = [open(work / "master.log", "wb"), open(work / "worker.log", "wb")]
    procs = [subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(ports["master"]), "--webui-port", str(ports["master_ui"])],
                              env=env, stdout=logs[0], stderr=subprocess.STDOUT, start_new_session=True)]
    deadline = time.monotonic() + 120
    while not port_in_use(ports["master"]):
        assert time.monotonic() < deadline, (work / "master.log").read_text()[-2000:]
        time.sleep(1)
    procs.append(subprocess.Popen([spark_class, "org.apache.spark.deploy.worker.Worker", master_url, "--host",
                                   "127.0.0.1", "--port", str(ports["worker"]), "--webui-port", str(ports["worker_ui"]),
                                   "--cores", "2", "--memory", "2g", "--work-dir", str(work)],
                                  env=env, stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True))
    ui = f"http://127.0.0.1:{ports['master_ui']}/json/"
    while True:
        try:
            if requests.get(ui, timeout=5).json().get("aliveworkers", 0) >= 1:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, (work / "worker.log").read_text()[-2000:]
        time.sleep(1)
    yield master_url, procs
    for proc in reversed(procs):
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)
    for log in logs:
        log.close()


def submit(world, master: str) -> subprocess.CompletedProcess:
    """spark-submit of the same CLI a DAG task runs."""
    return subprocess.run([str(BIN / "spark-submit"), "--master", master, "--driver-memory", "1g",
                           "--conf", "spark.executor.memory=1g", str(Path(__file__).parents[2] / "jobs" / "__main__.py"),
                           "score", "--date", DAY, "--model", f"models:/{MODEL}/1", "--no-shadow"],
                          env=world.env, capture_output=True, text=True, timeout=900, cwd=world.root)


def committed_version(world, done: subprocess.CompletedProcess) -> Path:
    """The version folder of the day's scores that this run's log says it committed."""
    found = re.search(rf"committed batchloop\.scores model={MODEL}/dt={DAY}: \d+ rows \(([\w-]+)\)",
                      done.stdout + done.stderr)
    assert found, (done.stdout + done.stderr)[-3000:]
    folders = list(world.root.glob(f"**/scores/model={MODEL}/dt={DAY}/{found.group(1)}"))
    assert len(folders) == 1, folders
    return folders[0]


def test_the_cluster_run_gives_the_same_scores_as_local_mode(cluster, dag_world, trained):
    from tests.integration.test_stack import LOOPBACK, listening_addresses

    master, procs = cluster
    # the master and the worker listen on loopback only
    for proc in procs:
        assert listening_addresses(proc.pid) <= LOOPBACK
    # (spark-submit drivers boot the world's embedded metastore themselves: its Connect server steps aside
    # for both; the metastore is asked again once it is back)
    with dag_world.server_stopped():
        # given the day scored in local mode
        local = submit(dag_world, "local[2]")
        assert local.returncode == 0, local.stderr[-3000:]
        expected = content(str(committed_version(dag_world, local)))  # before the next commit supersedes it
        # when the same job is submitted to the standalone cluster
        remote = submit(dag_world, master)
        assert remote.returncode == 0, remote.stderr[-3000:]
    assert "master=local[2]" in local.stdout + local.stderr  # a classic driver, not a Connect client
    assert f"master={master}" in remote.stdout + remote.stderr  # the job logs the master it runs on
    # then the cluster's version is the one the metastore shows, and its scores are the same, row for row
    visible = visible_partition(dag_world, "scores", DAY)
    assert Path(visible.removeprefix("file:")).resolve() == committed_version(dag_world, remote).resolve()
    assert content(visible) == expected
