"""The one place that builds the Spark session, in either of Spark's two modes.

- **Connect** (locally and in tests): the step is a client of a warm Spark Connect server
  (`BATCHLOOP_SPARK_REMOTE`, its token in `SPARK_CONNECT_AUTHENTICATE_TOKEN`), which holds
  the JVM, the Hive metastore and the Python workers between steps.
- **Classic**: under `spark-submit` (a cluster, through Airflow's `spark_default`
  connection) the session is the driver's own; run directly without a server, this process
  starts a local driver (`BATCHLOOP_SPARK_MASTER`).

The code of the steps uses only what works in both: no SparkContext, no JVM gateway.
`session_conf` is the one list of Spark settings, for a driver and for the server alike.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import signal
import sys
import time
import uuid
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.connect.client.retries import DefaultPolicy

from jobs.config import Env
from jobs.errors import ConfigError, ServiceUnavailable

log = logging.getLogger(__name__)

LOG4J2 = Path(__file__).with_name("log4j2.properties")

# Held for the life of the process: the embedded Derby metastore admits one driver.
_METASTORE_LOCK: list = []


def lock_embedded_metastore(directory, timeout_s: float = 3600.0) -> None:
    """Wait for, then hold, the embedded metastore; a second driver would fail to boot Derby.

    The local Spark Connect server holds the same lock for as long as it runs. With a
    remote metastore (BATCHLOOP_METASTORE_URI) no lock is needed.
    """
    if _METASTORE_LOCK:
        return
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / "driver.lock", "a+")
    deadline, announced = time.monotonic() + timeout_s, False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if not announced:
                handle.seek(0)
                log.info("waiting for the embedded metastore, held by %s", handle.read().strip() or "another driver")
                announced = True
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"the embedded metastore in {directory} stayed busy for {timeout_s:.0f} s; "
                    "another Spark driver holds it (see driver.lock)") from None
            time.sleep(0.5)
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}: {' '.join(os.path.basename(a) for a in sys.argv[:3])}\n")
    handle.flush()
    _METASTORE_LOCK.append(handle)


def session_conf(env: Env) -> dict[str, str]:
    """Every Spark setting batchloop relies on: a classic driver's and the Connect server's."""
    conf = {
        "spark.driver.memory": env.spark_driver_memory,
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.pyspark.python": env.pyspark_python,
        "spark.sql.warehouse.dir": env.warehouse,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.shuffle.partitions": "8",
    }
    java_options = [f"-Dlog4j2.configurationFile={LOG4J2}"]
    if env.lake_format == "hive" and env.metastore_jdbc_url:
        conf.update({  # the metastore's own tables, in a database of their own (its password: metastore_secret)
            "spark.hadoop.javax.jdo.option.ConnectionURL": env.metastore_jdbc_url,
            "spark.hadoop.javax.jdo.option.ConnectionDriverName": "org.postgresql.Driver",
            "spark.hadoop.javax.jdo.option.ConnectionUserName": env.metastore_user,
            # the schema is created once, before any driver starts (infra/metastore.py); a driver never
            # creates or alters it, and refuses a schema of another Hive version
            "spark.hadoop.hive.metastore.schema.verification": "true",
            "spark.hadoop.datanucleus.schema.autoCreateAll": "false",
            # the Hive client filters partitions in SQL on PostgreSQL; where that fails (a filter on the `dt` DATE
            # column of a table also partitioned by the model's STRING name: PostgreSQL may cast every key's values
            # to a date) its fallback refuses any filter on a key that is not a string. Spark then lists the
            # partition names, prunes them itself and fetches only the partitions that match.
            "spark.sql.hive.metastorePartitionPruningFallbackOnException": "true",
            "spark.sql.hive.metastorePartitionPruningFastFallback": "true",
        })
    elif env.lake_format == "hive" and env.metastore_uri:
        conf["spark.hadoop.hive.metastore.uris"] = env.metastore_uri
    elif env.lake_format == "hive":
        conf["spark.hadoop.javax.jdo.option.ConnectionURL"] = (
            f"jdbc:derby:;databaseName={env.metastore / 'metastore_db'};create=true")
        java_options.append(f"-Dderby.system.home={env.metastore}")
    if env.lake_format == "hive":
        conf["spark.sql.catalogImplementation"] = "hive"
    if env.lake_on_s3 or env.metastore_jdbc_url or env.lineage:
        classpath = f"{env.spark_jars_dir}/*"
        conf["spark.driver.extraClassPath"] = conf["spark.executor.extraClassPath"] = classpath
    if env.lake_on_s3:
        conf.update(s3a_conf(env))
    if env.lineage:
        conf.update(lineage_conf(env))
    conf["spark.driver.extraJavaOptions"] = " ".join(java_options)
    return conf


# the Airflow task a session's queries belong to (its OpenLineage run, handed to the step in
# BATCHLOOP_LINEAGE_PARENT); the Spark events carry these settings and the step's tag (spark.job.tags)
LINEAGE_PARENT_KEYS = ("spark.openlineage.parentJobNamespace", "spark.openlineage.parentJobName",
                       "spark.openlineage.parentRunId", "spark.openlineage.rootParentJobNamespace",
                       "spark.openlineage.rootParentJobName", "spark.openlineage.rootParentRunId")


def lineage_conf(env: Env) -> dict[str, str]:
    """OpenLineage's Spark listener: a run event for each query with the datasets it read and wrote, to the
    folder's spark.ndjson (one JSON event per line) or to an OpenLineage backend over HTTP (Marquez).

    A Connect server reads the parent run once, at its start; each session therefore states its Airflow task in
    its own settings, which every event of its queries carries (captured properties)."""
    conf = {
        "spark.extraListeners": "io.openlineage.spark.agent.OpenLineageSparkListener",
        "spark.openlineage.namespace": env.lineage_namespace,
        "spark.openlineage.capturedProperties": ",".join(
            ["spark.master", "spark.app.name", "spark.job.tags", *LINEAGE_PARENT_KEYS]),
    }
    if env.lineage_url:
        conf.update({"spark.openlineage.transport.type": "http",
                     "spark.openlineage.transport.url": env.lineage_url.rstrip("/"),
                     "spark.openlineage.transport.endpoint": "/api/v1/lineage"})
    else:
        env.lineage_dir.mkdir(parents=True, exist_ok=True)
        conf.update({"spark.openlineage.transport.type": "file",
                     "spark.openlineage.transport.location": str(env.lineage_dir / "spark.ndjson")})
    return conf


def s3a_conf(env: Env) -> dict[str, str]:
    """The lake on an S3 API server through s3a://: path-style requests to the configured endpoint, keys
    from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, read by the connector itself), and
    writes committed by the S3A magic committer, which puts each file where it belongs at job commit (a
    multipart upload completed) instead of writing it elsewhere and copying it: on S3 a rename is a copy."""
    endpoint = env.s3_endpoint_url or ""
    conf = {
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.endpoint.region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "spark.hadoop.fs.s3a.committer.name": "magic",
        "spark.hadoop.fs.s3a.committer.magic.enabled": "true",
        "spark.sql.sources.commitProtocolClass": "org.apache.spark.internal.io.cloud.PathOutputCommitProtocol",
        "spark.sql.parquet.output.committer.class":
            "org.apache.spark.internal.io.cloud.BindingParquetOutputCommitter",
        # an unreachable S3 fails the step in seconds, not after the connector's retries of every call (about two
        # minutes each, measured: a write and its abort, tens of minutes); the DAG's task retries then do the
        # waiting. Throttling (503) has its own, longer retries (fs.s3a.retry.throttle.*).
        "spark.hadoop.fs.s3a.attempts.maximum": "2",
        "spark.hadoop.fs.s3a.retry.limit": "3",
        "spark.hadoop.fs.s3a.connection.establish.timeout": "15s",  # the lowest S3A accepts
    }
    if endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = endpoint
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https://")).lower()
    return conf


# the metastore schema the Hive client inside pyspark (Hive 2.3.10) reads and writes
HIVE_SCHEMA_VERSION = "2.3.0"


def pgpass_password(host: str, port: int, database: str, user: str) -> str | None:
    """The password libpq would take from PGPASSFILE (host:port:database:user:password, `*` matches any)."""
    path = Path(os.environ.get("PGPASSFILE", Path.home() / ".pgpass"))
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    wanted = (host, str(port), database, user)
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        fields = re.split(r"(?<!\\):", line, maxsplit=4)
        if len(fields) == 5 and all(f in ("*", w) for f, w in zip(fields[:4], wanted, strict=True)):
            return fields[4].replace("\\:", ":").replace("\\\\", "\\")
    return None


def jdbc_address(url: str) -> tuple[str, int, str]:
    """(host, port, database) of a jdbc:postgresql:// URL."""
    found = re.fullmatch(r"jdbc:postgresql://([^:/?]+)(?::(\d+))?/([^?]+)(\?.*)?", url)
    if not found:
        raise ConfigError(f"BATCHLOOP_METASTORE_JDBC_URL={url!r}: expected jdbc:postgresql://HOST:PORT/DATABASE")
    return found.group(1), int(found.group(2) or 5432), found.group(3)


def metastore_password(env: Env) -> str:
    """The metastore database's password: BATCHLOOP_METASTORE_PASSWORD, else PGPASSFILE's entry (the stack hands
    its tasks one), else the local stack's own (BATCHLOOP_POSTGRES_PASSWORD in .env: a command run in a shell)."""
    if env.metastore_password is not None:
        return env.metastore_password.get_secret_value()
    host, port, database = jdbc_address(env.metastore_jdbc_url)
    password = pgpass_password(host, port, database, env.metastore_user)
    if password is None and env.postgres_password is not None:
        password = env.postgres_password.get_secret_value()
    if password is None:
        raise ConfigError(f"no password for the metastore database {database} at {host}:{port} (user "
                          f"{env.metastore_user}): set BATCHLOOP_METASTORE_PASSWORD or add it to PGPASSFILE")
    return password


def metastore_secret(env: Env) -> dict[str, str]:
    """The settings that hold a secret: given to a driver in its own process, never on a command line or in
    a file (Spark redacts them in its logs and UI)."""
    if env.lake_format != "hive" or not env.metastore_jdbc_url:
        return {}
    return {"spark.hadoop.javax.jdo.option.ConnectionPassword": metastore_password(env)}


def check_jars(env: Env) -> None:
    """The jars a lake on S3 or a metastore on PostgreSQL needs are installed (make install)."""
    if not (env.lake_on_s3 or (env.lake_format == "hive" and env.metastore_jdbc_url) or env.lineage):
        return
    names = [p.name for p in env.spark_jars_dir.glob("*.jar")] if env.spark_jars_dir.is_dir() else []
    needed = (["hadoop-aws-", "bundle-", "spark-hadoop-cloud"] if env.lake_on_s3 else []) + \
        (["postgresql-"] if env.metastore_jdbc_url else []) + (["openlineage-spark"] if env.lineage else [])
    missing = [n for n in needed if not any(name.startswith(n) for name in names)]
    if missing:
        raise ConfigError(f"the Spark jars {', '.join(m.rstrip('-') for m in missing)} are missing from "
                          f"{env.spark_jars_dir}: install them with `make install` (infra/jars.sh), or set "
                          "BATCHLOOP_SPARK_JARS_DIR to where they are")


def check_metastore(env: Env) -> None:
    """A metastore on PostgreSQL answers and holds the schema this Spark's Hive client reads.

    Down: ServiceUnavailable (exit 3, the task is retried). Another schema version: refused, naming it."""
    if env.lake_format != "hive" or not env.metastore_jdbc_url:
        return
    import psycopg2

    host, port, database = jdbc_address(env.metastore_jdbc_url)
    try:
        connection = psycopg2.connect(host=host, port=port, dbname=database, user=env.metastore_user,
                                      password=metastore_password(env), connect_timeout=5)
    except psycopg2.OperationalError as exc:
        raise ServiceUnavailable(f"the Hive metastore's PostgreSQL at {host}:{port} (database {database}) is not "
                                 f"reachable ({first_line(exc)}); start it with `make up`") from None
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('public.\"VERSION\"') IS NOT NULL")
            present = cursor.fetchone()[0]
            versions = []
            if present:
                cursor.execute('SELECT "SCHEMA_VERSION" FROM "VERSION"')
                versions = [r[0] for r in cursor.fetchall()]
    finally:
        connection.close()
    if not versions:
        raise ConfigError(f"the metastore database {database} at {host}:{port} holds no Hive schema: create it "
                          "with `make up` (infra/metastore.py) before any Spark driver starts")
    if versions != [HIVE_SCHEMA_VERSION]:
        raise ConfigError(f"the metastore database {database} at {host}:{port} holds Hive schema version "
                          f"{', '.join(versions)}; this Spark's Hive client needs {HIVE_SCHEMA_VERSION}: point "
                          "BATCHLOOP_METASTORE_JDBC_URL at a metastore of that version")


def build_session(env: Env, app_name: str = "batchloop") -> SparkSession:
    """A Spark session with Hive support (embedded metastore locally) or plain Parquet.

    Under spark-submit the master comes from the submit command (Airflow's `spark_default`
    connection); with BATCHLOOP_SPARK_REMOTE set, a session on the warm Connect server;
    otherwise a local driver on BATCHLOOP_SPARK_MASTER.
    """
    os.environ.setdefault("PYSPARK_PYTHON", env.pyspark_python)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # spark-submit starts this process with a gateway to its JVM: the master is the one it was given
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    if env.spark_mode == "connect" and env.spark_remote and not submitted:
        check_metastore(env)  # the server's metastore: a step fails at once, naming it, when it is down
        return _connect(env, app_name)
    # a classic driver, whatever this process inherited from a Connect client that started it (pyspark marks
    # its environment when it opens a remote session)
    for name in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "SPARK_LOCAL_REMOTE"):
        os.environ.pop(name, None)
    builder = SparkSession.builder.appName(app_name)
    if not submitted:
        builder = builder.master(env.spark_master)
    check_jars(env)
    check_metastore(env)
    conf = {**session_conf(env), **metastore_secret(env), **lineage_parent()}
    if env.embedded_metastore:
        lock_embedded_metastore(env.metastore)
    if submitted:  # the DAG's spark-submit passes the driver's own JVM options and class path
        for key in ("spark.driver.extraJavaOptions", "spark.driver.extraClassPath"):
            conf.pop(key, None)
    for key, value in conf.items():
        if key != "spark.sql.catalogImplementation":
            builder = builder.config(key, value)
    if env.lake_format == "hive":
        builder = builder.enableHiveSupport()
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    log.info("spark %s master=%s lake=%s", spark.version, spark.sparkContext.master, env.warehouse)
    return spark


def lineage_parent() -> dict[str, str]:
    """The OpenLineage parent run a DAG task hands its step (dags/steps.py: BATCHLOOP_LINEAGE_PARENT)."""
    raw = os.environ.get("BATCHLOOP_LINEAGE_PARENT")
    if not raw:
        return {}
    try:
        given = json.loads(raw)
    except ValueError:
        log.warning("BATCHLOOP_LINEAGE_PARENT is not JSON; the step's lineage events name no parent")
        return {}
    return {k: str(v) for k, v in given.items() if k in LINEAGE_PARENT_KEYS}


def _connect(env: Env, app_name: str) -> SparkSession:
    """A session on the Connect server; its operations carry the step's tag, a dead server fails fast."""
    try:
        spark = SparkSession.builder.remote(env.spark_remote).getOrCreate()
        spark.client.set_retry_policies([ShortRetries()])
        tag = step_tag(app_name)
        spark.addTag(tag)
        for key, value in lineage_parent().items():  # the Airflow task this step runs for (lineage events)
            spark.conf.set(key, value)
        version = spark.version  # the first call: the server answers, or this fails
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server is the same failure
        if connect_unavailable(exc):
            raise ServiceUnavailable(
                f"the Spark Connect server at {env.spark_remote} is not reachable ({first_line(exc)}); "
                "start it with `make up`") from None
        raise
    _interrupt_on_sigterm(spark, tag)
    log.info("spark %s via Spark Connect %s (tag %s) lake=%s", version, env.spark_remote, tag, env.warehouse)
    return spark


def step_tag(app_name: str) -> str:
    """A tag for every operation this step runs on the server, so it can be found and interrupted."""
    run = os.environ.get("BATCHLOOP_RUN_ID", "manual")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{app_name}.{run}")
    return f"{safe[:80]}.{uuid.uuid4().hex[:8]}"


def _interrupt_on_sigterm(spark: SparkSession, tag: str) -> None:
    """Airflow stops a task with SIGTERM: interrupt what this step runs on the server, then exit.

    (A SIGKILLed step cannot do this: the server interrupts an operation whose client has been
    gone for `spark.connect.execute.manager.detachedTimeout`, infra/stack.py.)
    """
    previous = signal.getsignal(signal.SIGTERM)

    def interrupt(signum, frame):
        try:
            spark.interruptTag(tag)
        finally:
            if callable(previous) and previous not in (signal.SIG_DFL, signal.SIG_IGN):
                previous(signum, frame)
            raise SystemExit(128 + signum)

    try:
        signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (a test's helper thread): the caller manages its own session
        pass


class ShortRetries(DefaultPolicy):
    """pyspark's retry rules for a Connect client with about 16 s of backoff in all (its default: ten minutes).

    0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 3.2 + 5 + 5 s, then the step fails as a service that is down.
    """

    def __init__(self) -> None:
        super().__init__(max_retries=8, backoff_multiplier=2.0, initial_backoff=100, max_backoff=5000,
                         max_server_retry_delay=20_000)


def connect_unavailable(exc: BaseException) -> bool:
    """Is this error a Connect server that cannot be reached (down, restarting, refused)?"""
    text = f"{type(exc).__name__} {exc}"
    return any(s in text for s in ("UNAVAILABLE", "RetriesExceeded", "Connection refused", "failed to connect",
                                   "Socket closed", "DEADLINE_EXCEEDED", "connection reset"))


def first_line(exc: BaseException) -> str:
    """The useful line of an error: a gRPC failure's status and details, else its first line."""
    text = str(exc)
    status = re.search(r"status = StatusCode\.(\w+)", text)
    details = re.search(r'details = "([^"]*)"', text)
    if status:
        return f"{status.group(1)}: {details.group(1) if details else ''}".strip(": ")[:300]
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def is_connect(spark: SparkSession) -> bool:
    """True for a Spark Connect session (no SparkContext, no JVM in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def keep(df: DataFrame) -> DataFrame:
    """df computed once and kept for the rest of the step (it is used by several actions).

    Under Spark Connect every action and every schema sends the whole plan to the server to be
    analysed again: a plan that reads a table, applies the contract's rules and carries a model
    inside a Python function is re-read, re-resolved and re-planned each time. A local
    checkpoint computes it once and leaves a reference to the result, so what is derived from it
    is small. A classic driver keeps the plan itself: there, caching is enough (and survives a
    lost executor by recomputing, which a local checkpoint would not)."""
    if is_connect(df.sparkSession):
        return df.localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)
    return df.persist(StorageLevel.MEMORY_AND_DISK)


def cores(spark: SparkSession) -> int:
    """How many tasks the cluster runs at once (the server's or the driver's default parallelism)."""
    if not is_connect(spark):
        return int(spark.sparkContext.defaultParallelism)
    value = spark.conf.get("spark.default.parallelism", None)
    if value:
        return int(value)
    master = spark.conf.get("spark.master", "local[2]") or "local[2]"
    inside = master[master.find("[") + 1:master.find("]")] if "[" in master else ""
    return int(inside) if inside.isdigit() else os.cpu_count() or 2


def stop(spark: SparkSession | None, server_gone: bool = False) -> None:
    """End the session: a Connect session is released on the server (its state goes with it).

    When the server is gone there is nothing to release, and no reason to wait for its retries.
    """
    if spark is None or not is_connect(spark):
        return
    try:
        if server_gone:  # close the channel: no release, and no retries at exit either
            spark.client.set_retry_policies([DefaultPolicy(max_retries=0)])
            spark.client.close()
        else:
            spark.stop()
    except Exception as exc:  # noqa: BLE001 - the server may already be gone; nothing is left to release
        log.debug("releasing the Spark Connect session: %s", exc)
