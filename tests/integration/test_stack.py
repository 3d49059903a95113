"""The local stack: loopback-only servers, clear messages for a taken port or a failed start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from contextlib import closing

import psutil
import pytest

from infra.stack import ROOT, Stack, StackError, free_ports, generate_config

pytestmark = pytest.mark.integration


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def listening_addresses(pgid: int) -> set[str]:
    """The addresses the processes of a process group listen on (IPv4-mapped loopback counts as loopback)."""
    addresses = set()
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) != pgid:
                continue
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    addresses.add(conn.laddr.ip)
        except (psutil.Error, ProcessLookupError):
            continue
    return addresses


def test_every_server_listens_on_loopback_only(services):
    for service in services.services({"postgres", "s3", "mlflow"}):
        pid = services.pid(service)
        assert pid, f"{service.name} is not running"
        addresses = listening_addresses(pid)
        assert addresses, f"{service.name} listens nowhere"
        assert addresses <= LOOPBACK, f"{service.name} listens on {addresses}"


def test_buckets_exist_and_refuse_anonymous_reads(services):
    import requests

    client = services.s3_client()
    names = {b["Name"] for b in client.list_buckets()["Buckets"]}
    assert {"batchloop-dvc", "batchloop-mlflow", "batchloop-reports"} <= names
    client.put_object(Bucket="batchloop-reports", Key="probe.txt", Body=b"x")
    anonymous = requests.get(f"{services.config['BATCHLOOP_S3_ENDPOINT_URL']}/batchloop-reports/probe.txt")
    assert anonymous.status_code in (401, 403)


def test_postgres_holds_the_stacks_databases_and_refuses_a_wrong_password(services):
    import psycopg2

    server = services.postgres()
    with closing(server.connect()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database")
        names = {r[0] for r in cursor.fetchall()}
    assert {"airflow", "mlflow"} <= names  # MLflow's tables are in it: the server runs on it
    with closing(server.connect("mlflow")) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'experiments'")
        assert cursor.fetchone()[0] == 1
    host, port = server.health_url.removeprefix("postgresql://").rsplit(":", 1)
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host=host, port=int(port), user="batchloop", password="wrong", dbname="postgres",
                         connect_timeout=5)


def test_without_postgresql_installed_up_names_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHLOOP_POSTGRES_BIN", str(tmp_path / "nowhere"))
    stack = Stack(generate_config(tmp_path / "state", free_ports(["BATCHLOOP_POSTGRES_PORT"])))
    with pytest.raises(StackError) as err:
        stack.up({"postgres"})
    assert "postgres" in str(err.value) and "BATCHLOOP_DB_BACKEND=sqlite" in str(err.value)


def test_a_taken_port_is_one_clear_message(tmp_path):
    config = generate_config(tmp_path / "state", free_ports(["BATCHLOOP_S3_PORT", "BATCHLOOP_WEED_MASTER_PORT",
                                                              "BATCHLOOP_WEED_VOLUME_PORT",
                                                              "BATCHLOOP_WEED_FILER_PORT"]))
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in config.items()))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(config["BATCHLOOP_S3_PORT"])))
        squatter.listen()
        result = subprocess.run([sys.executable, "-m", "infra.stack", "up", "s3"], cwd=ROOT,
                                env={**os.environ, "BATCHLOOP_ENV_FILE": str(env_file)},
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"s3: port {config['BATCHLOOP_S3_PORT']} on 127.0.0.1 is already in use" in result.stderr


def test_a_service_that_fails_to_start_is_named_with_its_log(tmp_path, monkeypatch):
    stack = Stack(generate_config(tmp_path, free_ports(["BATCHLOOP_MLFLOW_PORT", "BATCHLOOP_POSTGRES_PORT"])))
    broken = stack.mlflow()
    broken.argv = [*broken.argv[:-1], "not-a-number"]  # --workers
    monkeypatch.setattr(stack, "mlflow", lambda: broken)
    try:
        with pytest.raises(StackError) as err:
            stack.up({"mlflow"})
    finally:
        stack.down()  # its database server, started for it
    message = str(err.value)
    assert message.startswith("mlflow exited during start-up")
    assert str(stack.log_file(broken)) in message and "not-a-number" in message
    assert stack.pid(broken) is None


def test_down_stops_every_process_it_started(tmp_path):
    stack = Stack(generate_config(tmp_path, free_ports(["BATCHLOOP_MLFLOW_PORT", "BATCHLOOP_POSTGRES_PORT"])))
    stack.up({"mlflow"})  # and the PostgreSQL server it keeps its state in
    pids = [stack.pid(s) for s in (stack.mlflow(), stack.postgres())]
    assert all(pids) and all(psutil.pid_exists(p) for p in pids)
    stack.down()
    left = [p.info for p in psutil.process_iter(["pid", "status", "cmdline"])
            if (p.info["pid"] in pids or _pgid(p.info["pid"]) in pids) and p.info["status"] != psutil.STATUS_ZOMBIE]
    assert left == []


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
