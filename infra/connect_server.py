"""The Spark Connect server of the local stack: a Spark driver that serves Connect clients until it is stopped.

Started by `infra/stack.py` through spark-submit with `spark.plugins` set to Spark's
SparkConnectPlugin (the gRPC service starts with the driver) and artifact isolation off.
Spark's own `SparkConnectServer` class forces per-session artifact isolation, under which
every session (every batchloop step) starts a Python worker daemon of its own, and so
imports pandas, pyarrow, numpy and LightGBM again in each step's first Python task. With
isolation off, the sessions share the server's Python workers, which stay warm from one
step to the next. batchloop adds no artifacts (jars, files, classes) to a session, the only
thing the isolation keeps apart.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

URL, USER, PASSWORD = (f"spark.hadoop.javax.jdo.option.Connection{k}" for k in ("URL", "UserName", "Password"))


def metastore_secret() -> dict[str, str]:
    """The metastore database's password, for a metastore on PostgreSQL: from BATCHLOOP_METASTORE_PASSWORD or
    PGPASSFILE, set in this process (never in the properties file or on the command line)."""
    from jobs.io.spark import jdbc_address, pgpass_password

    SparkContext._ensure_initialized()  # the JVM spark-submit started: its settings are the properties file's
    conf = SparkConf()
    url = conf.get(URL, "")
    if not url.startswith("jdbc:postgresql:"):
        return {}
    password = os.environ.get("BATCHLOOP_METASTORE_PASSWORD") or pgpass_password(*jdbc_address(url), conf.get(USER))
    if not password:
        raise SystemExit(f"batchloop: no password for the metastore database {url}: set PGPASSFILE")
    return {PASSWORD: password}


def main() -> int:
    # a classic driver whatever the environment it was started from says (a process that was itself a
    # Connect client passes on SPARK_CONNECT_MODE_ENABLED, which would make this a client too)
    for name in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "SPARK_LOCAL_REMOTE"):
        os.environ.pop(name, None)
    spark = SparkSession.builder.config(map=metastore_secret()).getOrCreate()
    jvm = os.getppid()  # spark-submit's JVM started this process and runs the server
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"batchloop: Spark Connect server up (Spark {spark.version})", flush=True)
    # until stopped, or until the JVM is gone (killed on its own): never outlive it
    while not stop.wait(5):
        if os.getppid() != jvm:
            return 1
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
