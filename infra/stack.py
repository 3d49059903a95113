"""The embedded local stack: PostgreSQL, S3 (SeaweedFS), MLflow, a warm Spark Connect server, Airflow.

    python -m infra.stack up|down|status [postgres,s3,mlflow,spark,airflow]

Every server binds 127.0.0.1. Credentials and ports are generated once into the
project's .env (git-ignored); all state lives under one folder (BATCHLOOP_STATE_DIR,
default .batchloop/). Tests use the same classes with free ports and a temp folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"

DEFAULT_PORTS = {
    "BATCHLOOP_S3_PORT": 8333,
    "BATCHLOOP_WEED_MASTER_PORT": 9333,
    "BATCHLOOP_WEED_VOLUME_PORT": 9340,
    "BATCHLOOP_WEED_FILER_PORT": 8888,
    "BATCHLOOP_MLFLOW_PORT": 5000,
    "BATCHLOOP_AIRFLOW_PORT": 8080,
    "BATCHLOOP_SPARK_CONNECT_PORT": 15002,
    "BATCHLOOP_POSTGRES_PORT": 5433,
}
GRPC_OFFSET = 10000  # SeaweedFS's convention: each server's gRPC port is its HTTP port + 10000
BUCKETS = ("BATCHLOOP_BUCKET_DVC", "BATCHLOOP_BUCKET_MLFLOW", "BATCHLOOP_BUCKET_REPORTS")
POOLS = {  # name: (slots, what for); BATCHLOOP_LAKE_SLOTS sets the lake pool's slots
    "lake": (2, "Spark steps: as many at once as there are local cores (the Connect server runs them all; "
                "while one step waits on its client, S3 or MLflow, another computes)"),
    "dvc": (1, "steps that run DVC commands: never two at once"),
}


class StackError(Exception):
    """A service could not start or be reached; the message says which and why."""


PORT_CLAIMS = Path(os.environ.get("BATCHLOOP_PORT_CLAIMS", Path(tempfile.gettempdir()) / "batchloop-port-claims"))


def claim_port(port: int) -> bool:
    """Claim a port for this process against every other process on the machine that picks ports here.

    A free port is only free until someone binds it: two test workers (or a benchmark beside a test run)
    that each check the same port before either server binds it would both take it. A claim is a file
    named after the port, created exclusively and holding the claimer's PID; it holds until that process
    ends (a stopped server can start again on its ports), and a claim whose process is gone is void.
    Claimers take turns on a lock file, so none reads a claim another is still writing, or voids a
    claim another has just taken over."""
    PORT_CLAIMS.mkdir(parents=True, exist_ok=True)
    with open(PORT_CLAIMS / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
        return _claim(PORT_CLAIMS / str(port))


def _claim(claim: Path) -> bool:
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = int(claim.read_text() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner == os.getpid():
                return False  # this process has it already (for another of its servers)
            if owner and _alive(owner):
                return False
            with contextlib.suppress(FileNotFoundError):
                claim.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def free_port() -> int:
    """A free TCP port on 127.0.0.1 whose +10000 neighbour (SeaweedFS gRPC) is free too, both claimed.

    Where the kernel leaves room, both lie below its ephemeral range, so no outgoing connection can take
    them while a test has the server stopped and is about to start it again on the same ports."""
    ephemeral_low = 32768
    with contextlib.suppress(OSError, ValueError):
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(1000):
        if ephemeral_low - GRPC_OFFSET > 11000:
            port = random.randrange(10000, ephemeral_low - GRPC_OFFSET)
        else:  # an ephemeral range reaching down to 20000 or below: take a port the kernel hands out
            with socket.socket() as s:
                s.bind((HOST, 0))
                port = s.getsockname()[1]
        if port + GRPC_OFFSET >= 65536 or port_in_use(port) or port_in_use(port + GRPC_OFFSET):
            continue
        if claim_port(port):
            if claim_port(port + GRPC_OFFSET):
                return port
            (PORT_CLAIMS / str(port)).unlink(missing_ok=True)
    raise StackError(f"no free pair of ports (p, p + {GRPC_OFFSET}) found on {HOST}")


def free_ports(names: list[str]) -> dict[str, int]:
    """Distinct free ports for the given settings (tests use these instead of the defaults).

    Each port and its +10000 neighbour are claimed for this process (claim_port), so concurrent test
    workers never pick each other's; within the process, a claim is never handed out twice."""
    return {name: free_port() for name in names}


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


# the server's own settings beyond the drivers' (jobs.io.spark.session_conf)
CONNECT_SERVER_CONF = {
    # an operation whose client is gone (killed) is interrupted after this long, not five minutes; the
    # server notices a gone client when a response stream ends, so streams end (and live clients
    # reattach at once) every 10 s instead of every 2 minutes
    "spark.connect.execute.manager.detachedTimeout": "20s",
    "spark.connect.execute.reattachable.senderMaxStreamDuration": "10s",
    "spark.connect.execute.manager.maintenanceInterval": "5s",
    # a session whose client died without releasing it goes after this long (with its cached frames)
    "spark.connect.session.manager.defaultSessionTimeout": "10min",
    "spark.connect.session.manager.maintenanceInterval": "30s",
    # the driver serves Connect from its start (infra/connect_server.py), its sessions sharing one pool of
    # Python workers: with per-session isolation each step started its own and imported everything again
    "spark.plugins": "org.apache.spark.sql.connect.SparkConnectPlugin",
    "spark.sql.artifact.isolation.enabled": "false",
}


def airflow_sqlite(home: Path) -> str:
    """Airflow's SQLite metadata database, waiting up to a minute for a lock (sqlite3's default: 5 s).

    The scheduler, the DAG processor, the API server and every task share one file; a write that
    waits longer than the busy timeout fails with "database is locked" (the API answered such a
    request with HTTP 500 while the scheduler wrote). The timeout rides on the URL, so the sync
    engine and the async one Airflow derives from it both get it."""
    return f"sqlite:///{home / 'airflow.db'}?timeout=60"


DATABASES = ("BATCHLOOP_AIRFLOW_DB", "BATCHLOOP_MLFLOW_DB")  # the stack's databases on its PostgreSQL
POSTGRES_USER = "batchloop"


def metastore_mode(config: dict[str, str]) -> str:
    """Where the Hive metastore lives: `postgres` (a database on the stack's server, several Spark drivers at once)
    or `derby` (embedded in the one driver). It follows BATCHLOOP_DB_BACKEND unless BATCHLOOP_METASTORE says."""
    mode = config.get("BATCHLOOP_METASTORE") or ("postgres" if database_mode(config) == "postgres" else "derby")
    if mode not in ("postgres", "derby"):
        raise StackError(f"BATCHLOOP_METASTORE={mode!r}: use postgres (the stack's PostgreSQL) or derby (embedded)")
    if mode == "postgres" and database_mode(config) != "postgres":
        raise StackError("BATCHLOOP_METASTORE=postgres needs the stack's PostgreSQL (BATCHLOOP_DB_BACKEND=postgres)")
    return mode


def metastore_jdbc_url(config: dict[str, str]) -> str:
    """The metastore's JDBC URL on the stack's PostgreSQL ('' for the embedded Derby one)."""
    if metastore_mode(config) != "postgres":
        return ""
    return f"jdbc:postgresql://{HOST}:{config['BATCHLOOP_POSTGRES_PORT']}/{config.get('BATCHLOOP_METASTORE_DB') or 'metastore'}"


def database_mode(config: dict[str, str]) -> str:
    """Where Airflow and MLflow keep their state: `postgres` (the stack's server, default) or `sqlite` (files)."""
    mode = config.get("BATCHLOOP_DB_BACKEND", "postgres")
    if mode not in ("postgres", "sqlite"):
        raise StackError(f"BATCHLOOP_DB_BACKEND={mode!r}: use postgres (the stack's PostgreSQL server) or sqlite")
    return mode


def postgres_bin() -> Path:
    """The folder of PostgreSQL's server programs (Debian: /usr/lib/postgresql/<major>/bin)."""
    if os.environ.get("BATCHLOOP_POSTGRES_BIN"):
        found = [Path(os.environ["BATCHLOOP_POSTGRES_BIN"]) / "postgres"]
    else:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
                       if p.parent.parent.name.isdigit() else 0)
    if not found or not found[-1].exists():
        raise StackError("PostgreSQL's server was not found (/usr/lib/postgresql/*/bin/postgres): install it with "
                         "`make install` (infra/system-deps.sh: apt-get install postgresql), set BATCHLOOP_POSTGRES_BIN "
                         "to its bin folder, or set BATCHLOOP_DB_BACKEND=sqlite in .env")
    return found[-1].parent


def unprivileged() -> list[str]:
    """The prefix that runs PostgreSQL as a user other than root (it refuses to run as root).

    As root, the server runs in a user namespace of its own where this user is `nobody`: it
    reads and writes the state folder as the root user outside, wherever the project lies."""
    if os.geteuid() != 0:
        return []
    return ["unshare", "--user", "--map-user=65534", "--map-group=65534"]


def database_url(config: dict[str, str], key: str, driver: str = "postgresql") -> str:
    """The SQLAlchemy URL of one of the stack's databases; the password comes from PGPASSFILE, never the URL."""
    return (f"{driver}://{POSTGRES_USER}@{HOST}:{config['BATCHLOOP_POSTGRES_PORT']}/"
            f"{config.get(key) or key.removeprefix('BATCHLOOP_').removesuffix('_DB').lower()}")


def connect_connection(config: dict[str, str]) -> dict:
    """Airflow's `spark_default`: the local Connect server (its token comes from the environment)."""
    port = int(config["BATCHLOOP_SPARK_CONNECT_PORT"])
    return {"conn_type": "spark_connect", "host": "sc://localhost", "port": port}


SUBMIT_CONNECTION = {"conn_type": "spark", "host": "local[2]",
                     "extra": {"deploy-mode": "client", "spark-binary": "spark-submit"}}


def spark_mode(config: dict[str, str]) -> str:
    """How the stack's DAG steps reach Spark: `connect` (the warm server, default) or `submit` (spark-submit)."""
    mode = config.get("BATCHLOOP_SPARK_MODE", "connect")
    if mode not in ("connect", "submit"):
        raise StackError(f"BATCHLOOP_SPARK_MODE={mode!r}: use connect (the warm Spark Connect server) or submit")
    return mode


def airflow_lineage(env) -> dict[str, str]:
    """Airflow's OpenLineage provider (`env`: the stack's jobs.config.Env): an event at the start and end of every
    task, to the lineage folder's airflow.ndjson or the backend at BATCHLOOP_LINEAGE (Marquez); a spark-submit step
    passes the task's run on to its driver (SparkStep does the same for a Connect client)."""
    if env.lineage_url:
        transport = {"type": "http", "url": env.lineage_url.rstrip("/"), "endpoint": "api/v1/lineage"}
    elif env.lineage_dir:
        transport = {"type": "file", "log_file_path": str(env.lineage_dir / "airflow.ndjson"), "append": True}
    else:
        return {"AIRFLOW__OPENLINEAGE__DISABLED": "True"}
    return {"AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": env.lineage_namespace,
            "AIRFLOW__OPENLINEAGE__SPARK_INJECT_PARENT_JOB_INFO": "True"}


def generate_config(state_dir: Path, ports: dict[str, int] | None = None) -> dict[str, str]:
    """A fresh configuration: generated credentials, ports, endpoints."""
    p = {**DEFAULT_PORTS, **(ports or {})}
    s3 = f"http://{HOST}:{p['BATCHLOOP_S3_PORT']}"
    from cryptography.fernet import Fernet

    return {
        "BATCHLOOP_STATE_DIR": str(state_dir),
        **{k: str(v) for k, v in p.items()},
        "AWS_ACCESS_KEY_ID": "bl" + secrets.token_hex(9),
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
        "AWS_DEFAULT_REGION": "us-east-1",
        "BATCHLOOP_S3_ENDPOINT_URL": s3,
        "MLFLOW_S3_ENDPOINT_URL": s3,
        "AWS_ENDPOINT_URL_S3": s3,
        "BATCHLOOP_BUCKET_DVC": "batchloop-dvc",
        "BATCHLOOP_BUCKET_MLFLOW": "batchloop-mlflow",
        "BATCHLOOP_BUCKET_REPORTS": "batchloop-reports",
        "MLFLOW_TRACKING_URI": f"http://{HOST}:{p['BATCHLOOP_MLFLOW_PORT']}",
        "BATCHLOOP_AIRFLOW_URL": f"http://{HOST}:{p['BATCHLOOP_AIRFLOW_PORT']}",
        # Spark Connect: a client reads the token from this variable, the server too (never an argument)
        "BATCHLOOP_SPARK_REMOTE": f"sc://localhost:{p['BATCHLOOP_SPARK_CONNECT_PORT']}",
        "SPARK_CONNECT_AUTHENTICATE_TOKEN": secrets.token_urlsafe(32),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        # Airflow's and MLflow's databases: on the stack's PostgreSQL (BATCHLOOP_DB_BACKEND=sqlite: files instead)
        "BATCHLOOP_DB_BACKEND": "postgres",
        "BATCHLOOP_POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "BATCHLOOP_AIRFLOW_DB": "airflow",
        "BATCHLOOP_MLFLOW_DB": "mlflow",
        # the Hive metastore's database on it (BATCHLOOP_METASTORE=derby: embedded instead); the URL is for
        # commands run in a shell: the stack's services and tasks are given the one its settings make
        "BATCHLOOP_METASTORE_DB": "metastore",
        "BATCHLOOP_METASTORE_JDBC_URL": f"jdbc:postgresql://{HOST}:{p['BATCHLOOP_POSTGRES_PORT']}/metastore",
        # the lake: Hive tables on the stack's S3 server (a local folder instead: set it to one)
        "BATCHLOOP_LAKE_ROOT": "s3a://batchloop-lake/warehouse",
        # OpenLineage events of every task and Spark query, as files in this folder (`batchloop lineage --events`);
        # an http(s) URL sends them to Marquez or another OpenLineage backend instead; empty: none
        "BATCHLOOP_LINEAGE": str(state_dir / "lineage"),
    }


def load_or_create_env(path: Path = ROOT / ".env") -> dict[str, str]:
    """The project's .env; created with generated credentials on first use."""
    if not path.exists():
        config = generate_config(ROOT / ".batchloop")
        lines = ["# Local stack settings and credentials, generated by `make up`. Never commit."]
        lines += [f"{k}={v}" for k, v in config.items()]
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        print(f"stack: generated credentials and ports in {path}")
    values = {k: v for k, v in dotenv_values(path).items() if v is not None}
    missing = {k: v for k, v in generate_config(Path(values.get("BATCHLOOP_STATE_DIR", ROOT / ".batchloop")),
                                                {k: int(values[k]) for k in DEFAULT_PORTS if k in values}).items()
               if k not in values}
    if "BATCHLOOP_METASTORE_JDBC_URL" in missing:  # as its settings make it (sqlite: none)
        missing["BATCHLOOP_METASTORE_JDBC_URL"] = metastore_jdbc_url({**values, **missing})
    if missing:  # a .env from an older version: add what this one needs, keep everything it has
        with path.open("a") as out:
            out.writelines(f"{k}={v}\n" for k, v in missing.items())
        values.update(missing)
        print(f"stack: added {', '.join(sorted(missing))} to {path}")
    # the process environment wins, as it does for the jobs' settings
    return {**values, **{k: os.environ[k] for k in values if k in os.environ}}


@dataclass
class Service:
    """One server process: how to start it, how to tell it is healthy, where it logs."""

    name: str
    argv: list[str]
    ports: list[int]
    health_url: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT
    timeout: float = 120.0
    hidden_env: tuple[str, ...] = ()  # variables this server must not see
    stop_signal: int = signal.SIGTERM
    signal_group: bool = True  # send stop_signal to the whole process group, or to the leader only

    def healthy(self, response: requests.Response) -> bool:
        return response.status_code < 500

    def check(self) -> bool:
        try:
            return self.healthy(requests.get(self.health_url, timeout=3))
        except requests.RequestException:
            return False


@dataclass
class ConnectService(Service):
    """The Spark Connect server; healthy once a client's query gets an answer."""

    properties: dict[str, str] = field(default_factory=dict)
    lock: Path | None = None

    def check(self) -> bool:
        port = int(self.health_url.rsplit(":", 1)[1])
        if not port_in_use(port):
            return False
        probe = ("import sys; from pyspark.sql import SparkSession; "
                 "s = SparkSession.builder.remote(sys.argv[1]).getOrCreate(); "
                 "assert s.range(3).count() == 3; s.stop()")
        try:
            done = subprocess.run([sys.executable, "-c", probe, self.health_url], capture_output=True, timeout=60,
                                  env={**os.environ, **self.env})
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def prepare(self, run_dir: Path) -> None:
        """Its settings as a properties file (0600: spark-submit's argv stays free of them)."""
        (run_dir / "spark-conf").mkdir(parents=True, exist_ok=True)
        path = run_dir / "spark-connect.properties"
        lines = [f"{k}={str(v).replace(chr(92), chr(92) * 2)}" for k, v in sorted(self.properties.items())]
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        if self.lock is not None:
            self.lock.parent.mkdir(parents=True, exist_ok=True)
            self.lock.write_text("the Spark Connect server (infra/stack.py)\n")


@dataclass
class PostgresService(Service):
    """The stack's PostgreSQL server: Airflow's and MLflow's databases. Healthy once it accepts a login.

    Stopped by SIGINT to the server alone (a fast shutdown: it ends its own processes)."""

    data: Path = Path()
    passfile: Path = Path()
    bin: Path = Path()

    def connect(self, dbname: str = "postgres"):
        import psycopg2

        host, port = self.health_url.removeprefix("postgresql://").rsplit(":", 1)
        return psycopg2.connect(host=host, port=int(port), user=POSTGRES_USER, dbname=dbname,
                                passfile=str(self.passfile), connect_timeout=3)

    def check(self) -> bool:
        import psycopg2

        try:
            self.connect().close()
        except psycopg2.Error:
            return False
        return True

    def initialise(self, password: str, log: Path) -> None:
        """Create the database cluster once (initdb), its superuser's password from the stack's config."""
        if (self.data / "PG_VERSION").exists():
            return
        self.data.mkdir(parents=True, exist_ok=True)
        self.data.chmod(0o700)
        pwfile = self.data.parent / ".pg-initial-password"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        try:
            with log.open("ab") as out:
                done = subprocess.run([*unprivileged(), str(self.bin / "initdb"), "-D", str(self.data),
                                       "-U", POSTGRES_USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                                       "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
                                      stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            tail = "\n".join("  " + x for x in log.read_text(errors="replace").splitlines()[-15:])
            raise StackError(f"postgres: initdb of {self.data} failed. Last lines of {log}:\n{tail}")

    def create_databases(self, names: list[str]) -> None:
        """Create each database that does not exist yet (the owner: the stack's user)."""
        connection = self.connect()
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                for name in names:
                    if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name):
                        raise StackError(f"database name {name!r}: use lower-case letters, digits and _")
                    cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    if cursor.fetchone() is None:
                        cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()


@dataclass
class AirflowService(Service):
    def healthy(self, response: requests.Response) -> bool:
        if response.status_code != 200:
            return False
        body = response.json()
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((body.get(p) or {}).get("status") == "healthy" for p in parts)


class Stack:
    """The local services for one configuration (the project's .env, or a test's)."""

    def __init__(self, config: dict[str, str]):
        self.config = config
        self.state = Path(config["BATCHLOOP_STATE_DIR"])
        self.run_dir = self.state / "run"
        self.log_dir = self.state / "logs"

    # -- environment -------------------------------------------------------------------
    @property
    def airflow_home(self) -> Path:
        return self.state / "airflow"

    def env(self) -> dict[str, str]:
        """The environment every service and every task of the stack runs with."""
        c = self.config
        api = c["BATCHLOOP_AIRFLOW_URL"]
        spark_conn = connect_connection(c) if spark_mode(c) == "connect" else SUBMIT_CONNECTION
        database = {"PGPASSFILE": str(self.passfile)} if database_mode(c) == "postgres" else {}
        return {
            **os.environ,
            # the database password reaches the clients through PGPASSFILE (libpq, asyncpg), never a URL
            **{k: v for k, v in c.items() if k != "BATCHLOOP_POSTGRES_PASSWORD"},
            **database,
            "BATCHLOOP_METASTORE_JDBC_URL": metastore_jdbc_url(c),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": HOST,
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.airflow_database(),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__API__PORT": c["BATCHLOOP_AIRFLOW_PORT"],
            "AIRFLOW__API__BASE_URL": api,
            "AIRFLOW__API__EXPOSE_CONFIG": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(spark_conn),
            **airflow_lineage(self.spark_env()),
            "NO_PROXY": "*",
        }

    @property
    def passfile(self) -> Path:
        return self.run_dir / "pgpass"

    def airflow_database(self) -> str:
        if database_mode(self.config) == "sqlite":
            return airflow_sqlite(self.airflow_home)
        return database_url(self.config, "BATCHLOOP_AIRFLOW_DB", "postgresql+psycopg2")

    def mlflow_database(self) -> str:
        if database_mode(self.config) == "sqlite":
            return f"sqlite:///{self.state / 'mlflow' / 'mlflow.db'}"
        return database_url(self.config, "BATCHLOOP_MLFLOW_DB", "postgresql+psycopg2")

    # -- services ------------------------------------------------------------------------
    def postgres(self) -> PostgresService:
        """PostgreSQL on 127.0.0.1 only (no Unix socket), its cluster under the state folder."""
        port = self.config["BATCHLOOP_POSTGRES_PORT"]
        data, bin_dir = self.state / "postgres" / "data", postgres_bin()
        return PostgresService(
            name="postgres",
            argv=[*unprivileged(), str(bin_dir / "postgres"), "-D", str(data), "-h", HOST, "-p", port,
                  "-c", "unix_socket_directories=", "-c", "max_connections=300"],
            ports=[int(port)],
            health_url=f"postgresql://{HOST}:{port}",
            cwd=self.state,
            timeout=60,
            hidden_env=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"),
            stop_signal=signal.SIGINT,
            signal_group=False,
            data=data, passfile=self.passfile, bin=bin_dir,
        )

    def s3(self) -> Service:
        c, data = self.config, self.state / "s3"
        http = {name: int(c[f"BATCHLOOP_{key}_PORT"]) for name, key in (
            ("s3", "S3"), ("master", "WEED_MASTER"), ("volume", "WEED_VOLUME"), ("filer", "WEED_FILER"))}
        return Service(
            name="s3",
            argv=[str(VENV_BIN / "weed"), "server", f"-dir={data}", f"-ip={HOST}", f"-ip.bind={HOST}",
                  f"-master.port={http['master']}", f"-master.port.grpc={http['master'] + GRPC_OFFSET}",
                  f"-volume.port={http['volume']}", f"-volume.port.grpc={http['volume'] + GRPC_OFFSET}",
                  "-filer", f"-filer.port={http['filer']}", f"-filer.port.grpc={http['filer'] + GRPC_OFFSET}",
                  f"-filer.localSocket={self.run_dir / 'weed-filer.sock'}",
                  "-s3", f"-s3.port={http['s3']}", f"-s3.port.grpc={http['s3'] + GRPC_OFFSET}",
                  f"-s3.localSocket={self.run_dir / 'weed-s3.sock'}",
                  f"-s3.config={self.run_dir / 's3-identities.json'}",
                  "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
                  "-volume.max=0", "-master.volumeSizeLimitMB=256"],
            ports=[p + d for p in http.values() for d in (0, GRPC_OFFSET)],
            health_url=f"{c['BATCHLOOP_S3_ENDPOINT_URL']}/",
            cwd=self.state,
            # its keys come from the identities file; given AWS_* variables, weed adds (and logs) an identity
            hidden_env=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"),
        )

    def mlflow(self) -> Service:
        c, data = self.config, self.state / "mlflow"
        return Service(
            name="mlflow",
            argv=[str(VENV_BIN / "mlflow"), "server",
                  "--backend-store-uri", self.mlflow_database(),
                  "--artifacts-destination", f"s3://{c['BATCHLOOP_BUCKET_MLFLOW']}/artifacts",
                  "--serve-artifacts", "--host", HOST, "--port", c["BATCHLOOP_MLFLOW_PORT"],
                  "--workers", "1"],
            ports=[int(c["BATCHLOOP_MLFLOW_PORT"])],
            health_url=f"{c['MLFLOW_TRACKING_URI']}/health",
            # batchloop runs no MLflow server jobs: without this the server starts a job runner
            # (huey consumers) that holds memory for nothing
            env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            cwd=data,
        )

    def airflow(self) -> list[Service]:
        """Airflow's standalone components, each started with loopback-only binds."""
        c, airflow = self.config, str(VENV_BIN / "airflow")
        api = c["BATCHLOOP_AIRFLOW_URL"]
        health = f"{api}/api/v2/monitor/health"
        return [
            Service("airflow-api-server", [airflow, "api-server", "--host", HOST, "--port",
                                           c["BATCHLOOP_AIRFLOW_PORT"], "--workers", "1"],
                    [int(c["BATCHLOOP_AIRFLOW_PORT"])], health, cwd=self.airflow_home),
            # the log servers of scheduler and triggerer would bind every interface;
            # task logs are read from local files instead
            Service("airflow-scheduler", [airflow, "scheduler", "--skip-serve-logs"], [], health,
                    cwd=self.airflow_home),
            Service("airflow-dag-processor", [airflow, "dag-processor"], [], health, cwd=self.airflow_home),
            AirflowService("airflow-triggerer", [airflow, "triggerer", "--skip-serve-logs"], [], health,
                           cwd=self.airflow_home, timeout=180),
        ]

    def spark_env(self):
        """The Spark settings of this stack's lake, as the jobs read them (jobs.config.Env)."""
        from jobs.config import Env

        known = {k.removeprefix("BATCHLOOP_").lower(): v for k, v in self.config.items()
                 if k.startswith("BATCHLOOP_")}
        fields = {k: v for k, v in known.items() if k in Env.model_fields}
        return Env(_env_file=None, **{**fields, "state_dir": self.state, "pyspark_python": sys.executable,
                                      "metastore_jdbc_url": metastore_jdbc_url(self.config)})

    def spark(self) -> Service:
        """The Spark Connect server: every local step is its client (jobs.io.spark.build_session)."""
        import pyspark

        from jobs.io.spark import session_conf

        env = self.spark_env()
        port = int(self.config["BATCHLOOP_SPARK_CONNECT_PORT"])
        home = Path(pyspark.__file__).parent
        lock = env.metastore / "driver.lock" if env.embedded_metastore else None
        # flock holds the embedded metastore's driver lock for as long as the server runs, so a spark-submit
        # driver on the same lake waits for it instead of failing to boot Derby (a metastore on PostgreSQL
        # takes any number of drivers)
        held = ["flock", "--nonblock", "--conflict-exit-code", "75", str(lock)] if lock else []
        return ConnectService(
            name="spark-connect",
            argv=[*held, str(home / "bin" / "spark-submit"), "--name", "batchloop-connect", "--master", env.spark_master,
                  "--properties-file", str(self.run_dir / "spark-connect.properties"),
                  str(ROOT / "infra" / "connect_server.py")],
            ports=[port],
            health_url=f"sc://localhost:{port}",
            env={"SPARK_HOME": str(home), "SPARK_CONF_DIR": str(self.run_dir / "spark-conf"),
                 "SPARK_LOG_DIR": str(self.log_dir),
                 "SPARK_CONNECT_AUTHENTICATE_TOKEN": self.config["SPARK_CONNECT_AUTHENTICATE_TOKEN"]},
            cwd=self.state,
            timeout=180,
            properties={**session_conf(env), **CONNECT_SERVER_CONF,
                        "spark.connect.grpc.binding.address": HOST, "spark.connect.grpc.binding.port": str(port)},
            lock=lock,
        )

    def services(self, only: set[str] | None = None) -> list[Service]:
        # in submit mode every step is a driver of its own, which needs the embedded metastore to itself
        spark = [self.spark()] if spark_mode(self.config) == "connect" else []
        database = [self.postgres()] if database_mode(self.config) == "postgres" else []
        groups = {"postgres": database, "s3": [self.s3()], "mlflow": [self.mlflow()], "spark": spark,
                  "airflow": self.airflow()}
        if only is not None and (unknown := sorted(only - groups.keys())):
            raise StackError(f"no such part of the stack: {', '.join(unknown)} (choose from {', '.join(groups)})")
        return [s for g, items in groups.items() if only is None or g in only for s in items]

    # -- process control -----------------------------------------------------------------
    def pid_file(self, service: Service) -> Path:
        return self.run_dir / f"{service.name}.pid"

    def log_file(self, service: Service) -> Path:
        return self.log_dir / f"{service.name}.log"

    def pid(self, service: Service) -> int | None:
        try:
            pid = int(self.pid_file(service).read_text())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def prepare(self) -> None:
        for d in (self.run_dir, self.log_dir, self.state / "s3", self.state / "mlflow", self.airflow_home):
            d.mkdir(parents=True, exist_ok=True)
        identities = {"identities": [{
            "name": "batchloop",
            "credentials": [{"accessKey": self.config["AWS_ACCESS_KEY_ID"],
                             "secretKey": self.config["AWS_SECRET_ACCESS_KEY"]}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}
        path = self.run_dir / "s3-identities.json"
        path.write_text(json.dumps(identities))
        path.chmod(0o600)
        if database_mode(self.config) == "postgres":
            self.passfile.write_text(f"{HOST}:{self.config['BATCHLOOP_POSTGRES_PORT']}:*:{POSTGRES_USER}:"
                                     f"{self.config['BATCHLOOP_POSTGRES_PASSWORD']}\n")
            self.passfile.chmod(0o600)
        # Airflow prints a password it generates to its log: generate it here instead, into its file
        passwords = self.password_file()
        if not passwords.exists():
            passwords.parent.mkdir(parents=True, exist_ok=True)
            passwords.write_text(json.dumps({"admin": secrets.token_urlsafe(16)}) + "\n")
            passwords.chmod(0o600)

    def start(self, service: Service) -> None:
        if self.pid(service):
            print(f"stack: {service.name} is already running (pid {self.pid(service)})")
            return
        for port in service.ports:
            if port_in_use(port):
                raise StackError(
                    f"{service.name}: port {port} on {HOST} is already in use by another process. "
                    f"Stop that process, or choose another port for {service.name} in .env "
                    "(the BATCHLOOP_*_PORT keys; SeaweedFS also takes each of its ports + 10000 for gRPC) "
                    "and run `make up` again."
                )
        if isinstance(service, ConnectService):
            service.prepare(self.run_dir)
        if isinstance(service, PostgresService):
            service.initialise(self.config["BATCHLOOP_POSTGRES_PASSWORD"], self.log_file(service))
        log = self.log_file(service).open("ab")
        env = {k: v for k, v in {**self.env(), **service.env}.items() if k not in service.hidden_env}
        proc = subprocess.Popen(service.argv, cwd=service.cwd, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self.pid_file(service).write_text(str(proc.pid))

    def wait_healthy(self, service: Service) -> None:
        deadline = time.monotonic() + service.timeout
        while time.monotonic() < deadline:
            if not self.pid(service):
                raise StackError(self.failure(service, "exited during start-up"))
            if service.check():
                return
            time.sleep(1)
        raise StackError(self.failure(service, f"was not healthy after {service.timeout:.0f} s"))

    def failure(self, service: Service, what: str) -> str:
        tail = self.log_tail(service)
        return f"{service.name} {what}. Last lines of {self.log_file(service)}:\n{tail}"

    def log_tail(self, service: Service, lines: int = 25) -> str:
        try:
            text = self.log_file(service).read_text(errors="replace").splitlines()
        except OSError:
            return "  (no log)"
        return "\n".join("  " + line for line in text[-lines:])

    def stop(self, service: Service, grace: float = 15.0) -> bool:
        pid = self.pid(service)
        if not pid:
            self.pid_file(service).unlink(missing_ok=True)
            return False
        try:
            if service.signal_group:
                os.killpg(pid, service.stop_signal)
            else:
                os.kill(pid, service.stop_signal)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.2)
        if _group_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:  # reap the leader when this process started it (tests); else init does
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        self.pid_file(service).unlink(missing_ok=True)
        return True

    # -- the whole stack -----------------------------------------------------------------
    def up(self, only: set[str] | None = None, while_airflow_starts: Callable[[], None] | None = None) -> None:
        """Start what is wanted (everything by default), each part as soon as what it needs is up.

        PostgreSQL first (MLflow and Airflow keep their state in it); then S3, MLflow and the Spark
        Connect server start side by side while Airflow's database is migrated; Airflow's components
        last. `while_airflow_starts` runs once S3, MLflow and Spark answer, while Airflow comes up."""
        self.prepare()
        if only is not None and only & {"mlflow", "airflow"} and database_mode(self.config) == "postgres" \
                and not self.postgres().check():
            only = only | {"postgres"}  # their database server, unless one is already up on the configured port
        wanted = self.services(only)
        database = [s for s in wanted if isinstance(s, PostgresService)]
        airflow = [s for s in wanted if s.name.startswith("airflow")]
        others = [s for s in wanted if s not in database and s not in airflow]
        for service in database:
            self.start(service)
            self.wait_healthy(service)
            print(f"stack: {service.name} is up")
        if database_mode(self.config) == "postgres" and any(s.name in ("mlflow", "airflow-api-server",
                                                                       "spark-connect") for s in wanted):
            self.create_databases()
            if metastore_mode(self.config) == "postgres":
                self.create_metastore_schema()
        for service in others:
            if isinstance(service, ConnectService) and self.pid(service):
                # a fresh JVM and fresh Python workers: what the steps run is the code of today
                self.stop(service)
                print(f"stack: restarting {service.name}")
            self.start(service)
        if airflow:
            self.migrate_airflow()
            for service in airflow:
                self.start(service)
        for service in others:
            self.wait_healthy(service)
            print(f"stack: {service.name} is up")
            if service.name == "s3":
                self.create_buckets()
        if while_airflow_starts is not None:
            while_airflow_starts()
        if airflow:
            print("stack: waiting for Airflow (api-server, scheduler, dag-processor, triggerer)...")
            for service in airflow:
                if not self.pid(service):
                    raise StackError(self.failure(service, "exited during start-up"))
            self.wait_healthy(airflow[-1])
            print("stack: airflow is up")

    def down(self, only: set[str] | None = None) -> None:
        for service in reversed(self.services(only)):
            if self.stop(service):
                print(f"stack: stopped {service.name}")

    def create_databases(self) -> None:
        """Airflow's and MLflow's databases on the stack's PostgreSQL (a server this stack, or another, started)."""
        server = self.postgres()
        if not server.check():
            raise StackError(f"PostgreSQL at {server.health_url} is not reachable (start it with `make up`, see "
                             f"{self.log_file(server)}), or set BATCHLOOP_DB_BACKEND=sqlite")
        server.create_databases([database_url(self.config, key).rsplit("/", 1)[1] for key in self.database_keys()])

    def database_keys(self) -> list[str]:
        """The settings naming the stack's databases: Airflow's, MLflow's and the metastore's (unless Derby)."""
        return [*DATABASES, *(["BATCHLOOP_METASTORE_DB"] if metastore_mode(self.config) == "postgres" else [])]

    def create_metastore_schema(self) -> None:
        """The Hive metastore's tables, once, before any Spark driver starts (infra/metastore.py)."""
        from infra.metastore import MetastoreError, ensure_schema

        server, env = self.postgres(), self.spark_env()
        connection = server.connect(database_url(self.config, "BATCHLOOP_METASTORE_DB").rsplit("/", 1)[1])
        try:
            done = ensure_schema(connection, env.metastore_jdbc_url, POSTGRES_USER,
                                 self.config["BATCHLOOP_POSTGRES_PASSWORD"], env.spark_jars_dir,
                                 self.run_dir / "metastore-schema", self.log_dir / "metastore-schema.log")
        except MetastoreError as exc:
            raise StackError(f"metastore: {exc}") from None
        finally:
            connection.close()
        if done == "created":
            print("stack: created the Hive metastore's schema on PostgreSQL")

    def migrate_airflow(self) -> None:
        """Create or upgrade Airflow's metadata database before its components start."""
        log = self.log_dir / "airflow-db-migrate.log"
        with log.open("ab") as out:
            result = subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], env=self.env(),
                                    cwd=self.airflow_home, stdout=out, stderr=subprocess.STDOUT)
            for pool, (slots, description) in POOLS.items():
                slots = int(self.config.get(f"BATCHLOOP_{pool.upper()}_SLOTS", slots))
                if result.returncode == 0:
                    result = subprocess.run([str(VENV_BIN / "airflow"), "pools", "set", pool, str(slots), description],
                                            env=self.env(), cwd=self.airflow_home, stdout=out, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            tail = "\n".join("  " + x for x in log.read_text(errors="replace").splitlines()[-25:])
            raise StackError(f"airflow db migrate failed. Last lines of {log}:\n{tail}")

    def s3_client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.config["BATCHLOOP_S3_ENDPOINT_URL"],
                            aws_access_key_id=self.config["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.config["AWS_SECRET_ACCESS_KEY"],
                            region_name=self.config.get("AWS_DEFAULT_REGION", "us-east-1"))

    def create_buckets(self, timeout: float = 60.0) -> None:
        """Create the DVC, MLflow and reports buckets (the filer may need a moment)."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.s3_client()
        deadline = time.monotonic() + timeout
        lake = self.config.get("BATCHLOOP_LAKE_ROOT", "")
        lake_bucket = [lake.split("://", 1)[1].split("/", 1)[0]] if lake.startswith(("s3a://", "s3://")) else []
        for bucket in [*(self.config[key] for key in BUCKETS), *lake_bucket]:
            while True:
                try:
                    client.head_bucket(Bucket=bucket)
                    break
                except ClientError as exc:
                    if exc.response["Error"]["Code"] in ("404", "NoSuchBucket"):
                        try:
                            client.create_bucket(Bucket=bucket)
                            break
                        except (ClientError, BotoCoreError):
                            pass
                except BotoCoreError:
                    pass
                if time.monotonic() > deadline:
                    raise StackError(f"s3: could not create bucket {bucket}; see {self.log_dir / 's3.log'}")
                time.sleep(1)

    def status(self) -> list[tuple[str, str, str]]:
        rows = []
        for service in self.services():
            pid = self.pid(service)
            state = "down" if not pid else ("healthy" if service.check() else "starting/unhealthy")
            rows.append((service.name, state, f"pid {pid}" if pid else ""))
        return rows

    def password_file(self) -> Path:
        return self.airflow_home / "simple_auth_manager_passwords.json.generated"


def _alive(pid: int) -> bool:
    """True while the process runs; an exited child of ours is reaped, a zombie counts as gone."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie leader counts as gone
    try:
        state = Path(f"/proc/{pgid}/stat").read_text().split()[2]
        return state != "Z" or _other_members(pgid)
    except OSError:
        return _other_members(pgid)


def _other_members(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def configure_dvc_remote(config: dict[str, str]) -> None:
    """Point the project's DVC remote at this S3 endpoint (.dvc/config.local is git-ignored)."""
    if (ROOT / ".dvc").is_dir():
        subprocess.run([str(VENV_BIN / "dvc"), "remote", "modify", "--local", "storage", "endpointurl",
                        config["BATCHLOOP_S3_ENDPOINT_URL"]], cwd=ROOT, check=True)


def describe(stack: Stack) -> str:
    """Which stack this is: where the lake, the metastore and Airflow's and MLflow's state live."""
    c = stack.config
    metastore = (f"the Hive metastore on PostgreSQL (database {c.get('BATCHLOOP_METASTORE_DB') or 'metastore'})"
                 if metastore_mode(c) == "postgres" else "an embedded Derby metastore")
    state = "PostgreSQL" if database_mode(c) == "postgres" else "SQLite files"
    return f"lake {stack.spark_env().warehouse} with {metastore}; Airflow and MLflow on {state}"


def print_status(stack: Stack) -> None:
    c = stack.config
    for name, state, detail in stack.status():
        print(f"  {name:24} {state:20} {detail}")
    print()
    print(f"  S3 endpoint      {c['BATCHLOOP_S3_ENDPOINT_URL']}  (keys in .env)")
    print(f"  MLflow UI        {c['MLFLOW_TRACKING_URI']}")
    print(f"  Airflow UI       {c['BATCHLOOP_AIRFLOW_URL']}  user admin, password in {stack.password_file()}")
    print(f"  Spark Connect    {c['BATCHLOOP_SPARK_REMOTE']}  (token in .env)")
    if database_mode(c) == "postgres":
        print(f"  PostgreSQL       {HOST}:{c['BATCHLOOP_POSTGRES_PORT']}  user {POSTGRES_USER}, databases "
              f"{', '.join(database_url(c, k).rsplit('/', 1)[1] for k in stack.database_keys())} (password in .env)")
    print(f"  Stack            {describe(stack)}")
    print("  Lake (Hive)      query: .venv/bin/batchloop sql \"SHOW TABLES\"")
    print(f"  Logs             {stack.log_dir}")


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    only = set(argv[1].split(",")) if len(argv) > 1 else None
    try:
        stack = Stack(load_or_create_env(Path(os.environ.get("BATCHLOOP_ENV_FILE", ROOT / ".env"))))
        if command == "up":
            stack.up(only)
            configure_dvc_remote(stack.config)
            print_status(stack)
        elif command == "down":
            stack.down()
        elif command == "status":
            print_status(stack)
        else:
            print("usage: python -m infra.stack up|down|status [postgres,s3,mlflow,spark,airflow]", file=sys.stderr)
            return 2
    except StackError as exc:
        print(f"stack: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
