"""The one place that builds the Spark session."""

from __future__ import annotations

import logging
import os

from pyspark import SparkConf
from pyspark.sql import SparkSession

from jobs.settings import Env

log = logging.getLogger(__name__)


def build_session(env: Env, app_name: str = "batchloop") -> SparkSession:
    """A Spark session with Hive support (embedded metastore locally) or plain Parquet.

    Under spark-submit the master comes from the submit command (Airflow's
    `spark_default` connection); run directly, from BATCHLOOP_SPARK_MASTER.
    """
    os.environ.setdefault("PYSPARK_PYTHON", env.pyspark_python)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName(app_name)
    if "spark.master" not in dict(SparkConf().getAll()):
        builder = builder.master(env.spark_master)
    env.metastore.mkdir(parents=True, exist_ok=True)
    conf = {
        "spark.driver.memory": env.spark_driver_memory,
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.pyspark.python": env.pyspark_python,
        "spark.sql.warehouse.dir": env.warehouse,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.shuffle.partitions": "8",
        "spark.hadoop.javax.jdo.option.ConnectionURL": (
            f"jdbc:derby:;databaseName={env.metastore / 'metastore_db'};create=true"
        ),
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={env.metastore}",
    }
    for key, value in conf.items():
        builder = builder.config(key, value)
    if env.lake_format == "hive":
        builder = builder.enableHiveSupport()
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    log.info("spark %s master=%s lake=%s", spark.version, spark.sparkContext.master, env.warehouse)
    return spark
