"""The one place that builds the Spark session."""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import time
from pathlib import Path

from pyspark.sql import SparkSession

from jobs.errors import ServiceUnavailable
from jobs.settings import Env

log = logging.getLogger(__name__)

LOG4J2 = Path(__file__).with_name("log4j2.properties")

# Held for the life of the process: the embedded Derby metastore admits one driver.
_METASTORE_LOCK: list = []


def lock_embedded_metastore(directory, timeout_s: float = 3600.0) -> None:
    """Wait for, then hold, the embedded metastore; a second driver would fail to boot Derby.

    With a remote metastore (BATCHLOOP_METASTORE_URI) no lock is needed.
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


def build_session(env: Env, app_name: str = "batchloop") -> SparkSession:
    """A Spark session with Hive support (embedded metastore locally) or plain Parquet.

    Under spark-submit the master comes from the submit command (Airflow's
    `spark_default` connection); run directly, from BATCHLOOP_SPARK_MASTER.
    """
    os.environ.setdefault("PYSPARK_PYTHON", env.pyspark_python)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName(app_name)
    # spark-submit starts this process with a gateway to its JVM: the master is the one it was given
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    if not submitted:
        builder = builder.master(env.spark_master)
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
    if env.lake_format == "hive" and env.metastore_uri:
        conf["spark.hadoop.hive.metastore.uris"] = env.metastore_uri
    elif env.lake_format == "hive":
        lock_embedded_metastore(env.metastore)
        conf["spark.hadoop.javax.jdo.option.ConnectionURL"] = (
            f"jdbc:derby:;databaseName={env.metastore / 'metastore_db'};create=true")
        java_options.append(f"-Dderby.system.home={env.metastore}")
    # only where this process starts the JVM; under spark-submit the DAG passes its own options
    conf["spark.driver.extraJavaOptions"] = " ".join(java_options)
    for key, value in conf.items():
        builder = builder.config(key, value)
    if env.lake_format == "hive":
        builder = builder.enableHiveSupport()
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    log.info("spark %s master=%s lake=%s", spark.version, spark.sparkContext.master, env.warehouse)
    return spark
