"""The warm Spark Connect server under faults: a killed step, a stopped step, a server that dies mid-step.

Each step is a client process like an Airflow task's; what it ran on the server is watched
from outside, through the heartbeat file its Python UDF writes while it runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from infra.stack import Stack, free_ports
from tests.conftest import BIN, ROOT, start_connect_server
from tests.integration.test_stack import LOOPBACK, listening_addresses

pytestmark = pytest.mark.reliability

# a step whose one job runs a Python UDF for minutes, beating a file every 0.2 s while it runs
LONG_STEP = """
import sys, time
from jobs.config import load_env
from jobs.io.spark import build_session

beat = sys.argv[1]

def slow(batches):
    for batch in batches:
        for _ in range(1200):
            with open(beat, "a") as out:
                out.write("x")
            time.sleep(0.2)
        yield batch

spark = build_session(load_env(), "long-step")
print("started", flush=True)
spark.range(2, numPartitions=1).mapInArrow(slow, "id long").collect()
"""


def beats(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def start_long_step(env: dict[str, str], beat: Path) -> subprocess.Popen:
    proc = subprocess.Popen([str(BIN / "python"), "-c", LONG_STEP, str(beat)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while beats(beat) < 5:  # the server runs the step's UDF
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.2)
    return proc


def stops_beating(beat: Path, within: float) -> float | None:
    """Seconds until the heartbeat stops (no beat for 3 s), or None if it is still beating after `within`."""
    start, last, seen = time.monotonic(), beats(beat), time.monotonic()
    while time.monotonic() - start < within:
        time.sleep(0.5)
        now = beats(beat)
        if now != last:
            last, seen = now, time.monotonic()
        elif time.monotonic() - seen > 3:
            return round(seen - start, 1)
    return None


@pytest.fixture
def client_env(services, env):
    return {**os.environ, **services.env(), "BATCHLOOP_STATE_DIR": str(services.state),
            "BATCHLOOP_SPARK_REMOTE": env.spark_remote, "PYTHONPATH": str(ROOT)}


def test_the_server_listens_on_loopback_and_its_token_is_on_no_command_line(spark, services):
    server = services.spark()
    pid = services.pid(server)
    assert pid and listening_addresses(pid) <= LOOPBACK
    token = services.config["SPARK_CONNECT_AUTHENTICATE_TOKEN"]
    lines = []
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        try:
            lines.append(" ".join(proc.cmdline()))
        except psutil.Error:  # a Python worker that has just exited (a zombie) has no command line left
            continue
    assert len(lines) >= 2 and not any(token in line for line in lines)
    # and a client with another token is refused
    probe = "from pyspark.sql import SparkSession; import sys; SparkSession.builder.remote(sys.argv[1]).create().range(1).count()"
    done = subprocess.run([sys.executable, "-c", probe, services.config["BATCHLOOP_SPARK_REMOTE"]], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "SPARK_CONNECT_AUTHENTICATE_TOKEN": "wrong"})
    assert done.returncode != 0 and "UNAUTHENTICATED" in done.stderr.upper() + done.stdout.upper()


def test_a_sigkilled_steps_query_is_interrupted_on_the_server(spark, client_env, tmp_path):
    # given a step running a long query on the server
    beat = tmp_path / "beat"
    proc = start_long_step(client_env, beat)
    # when the step is SIGKILLed (nothing of it can clean up)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # then the server interrupts its operation once the client has been gone for the detach timeout (20 s),
    # rather than letting it run for its four minutes
    stopped = stops_beating(beat, within=90)
    assert stopped is not None, "the killed step's query was still running on the server after 90 s"
    print(f"\nthe killed step's query stopped on the server {stopped} s after the kill")
    # and the server serves the next step as before
    assert spark.range(10).count() == 10


def test_a_stopped_step_interrupts_its_query_at_once(spark, client_env, tmp_path):
    # given a step running a long query on the server
    beat = tmp_path / "beat"
    proc = start_long_step(client_env, beat)
    # when Airflow stops it (SIGTERM, what a task's on_kill sends)
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    # then the step interrupted its own operations (by its tag) before it exited
    assert stops_beating(beat, within=30) is not None, "the stopped step's query went on running on the server"


def test_a_server_that_dies_mid_step_is_exit_code_3_not_a_hang(services, tmp_path):
    # given a server of its own and a step running a long query on it
    config = {**services.config, **{k: str(v) for k, v in free_ports(["BATCHLOOP_SPARK_CONNECT_PORT"]).items()},
              "BATCHLOOP_STATE_DIR": str(tmp_path / "state")}
    config["BATCHLOOP_SPARK_REMOTE"] = f"sc://localhost:{config['BATCHLOOP_SPARK_CONNECT_PORT']}"
    stack = Stack(config)
    stack.prepare()
    server = start_connect_server(stack)
    env = {**os.environ, **stack.env(), "BATCHLOOP_SPARK_REMOTE": config["BATCHLOOP_SPARK_REMOTE"]}
    step = subprocess.Popen([str(BIN / "batchloop"), "sql", "SELECT sum(id % 7) AS s FROM range(0, 1000000000000)"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        time.sleep(8)
        assert step.poll() is None, step.stderr.read()[-2000:]
        # when the server dies
        os.killpg(stack.pid(server), signal.SIGKILL)
        died = time.monotonic()
        # then the step ends within seconds with exit code 3 (a service is down: the DAG retries), naming it
        _, err = step.communicate(timeout=120)
        waited = time.monotonic() - died
    finally:
        if step.poll() is None:
            step.kill()
        stack.stop(server)
    assert step.returncode == 3, err[-2000:]
    assert "Spark Connect server" in err.strip().splitlines()[-1]
    print(f"\nthe step gave up {waited:.1f} s after the server died")
