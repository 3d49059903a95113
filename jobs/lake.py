"""The one place that reads and writes lake tables, partition by partition.

Tables live in a Hive database (the default) or under Parquet paths; both are
partitioned by `dt` and written per partition, so re-running a day replaces exactly
that day.
"""

from __future__ import annotations

import logging
import re
from datetime import date

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.errors import ContractViolation, InvalidParameter, PartitionNotFound
from jobs.settings import Env

log = logging.getLogger(__name__)

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
READ_ERRORS = (Py4JJavaError, PySparkException)


def unreadable(exc: Exception, what: str) -> ContractViolation:
    """A Spark read failure (corrupt or foreign file) as one actionable line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    cause = next((line for line in lines if "FAILED_READ_FILE" in line or "not a Parquet" in line),
                 lines[0] if lines else type(exc).__name__)
    return ContractViolation(f"{what}: the data could not be read ({cause[:400]}); "
                             "re-run the upstream load for this partition")


def check_identifier(value: str, what: str) -> str:
    """Reject anything but a plain lower-case identifier before it can reach SQL or a path."""
    if not IDENTIFIER.fullmatch(value):
        raise InvalidParameter(
            f"{what} {value!r} is not a valid identifier: use lower-case letters, digits and _, "
            "starting with a letter (at most 63 characters)"
        )
    return value


class Lake:
    """Partitioned tables of one namespace (a Hive database or a Parquet folder)."""

    def __init__(self, spark: SparkSession, env: Env, namespace: str | None = None):
        self.spark = spark
        self.format = env.lake_format
        self.namespace = check_identifier(namespace or env.database, "namespace")
        self.root = env.warehouse.rstrip("/")
        if self.format == "hive":
            location = f"{self.root}/{self.namespace}.db"
            spark.sql(f"CREATE DATABASE IF NOT EXISTS `{self.namespace}` LOCATION '{location}'")

    def name(self, table: str) -> str:
        """The fully qualified table name (Hive) or path (Parquet)."""
        check_identifier(table, "table")
        if self.format == "hive":
            return f"`{self.namespace}`.`{table}`"
        return f"{self.root}/{self.namespace}/{table}"

    def exists(self, table: str) -> bool:
        if self.format == "hive":
            return self.spark.catalog.tableExists(f"{self.namespace}.{table}")
        jvm = self.spark.sparkContext._jvm
        path = jvm.org.apache.hadoop.fs.Path(self.name(table))
        fs = path.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration())
        return bool(fs.exists(path))

    def read(self, table: str) -> DataFrame:
        """The whole table, lazily; filter on `dt` to prune partitions."""
        if not self.exists(table):
            raise PartitionNotFound(f"table {self.namespace}.{table} does not exist yet")
        if self.format == "hive":
            return self.spark.table(self.name(table))
        try:
            return self.spark.read.option("basePath", self.name(table)).parquet(self.name(table))
        except READ_ERRORS as exc:
            raise unreadable(exc, f"{self.namespace}.{table}") from None

    def read_partition(self, table: str, day: date) -> DataFrame:
        """One day of a table; a missing or empty partition is a clear error."""
        df = self.read(table).where(F.col("dt") == F.lit(day))
        try:
            empty = df.limit(1).count() == 0
        except READ_ERRORS as exc:
            raise unreadable(exc, f"{self.namespace}.{table} dt={day}") from None
        if empty:
            raise PartitionNotFound(
                f"{self.namespace}.{table} has no rows for dt={day.isoformat()} (the partition is missing "
                "or empty): check that the upstream load for that day ran"
            )
        return df

    def read_range(self, table: str, first: date, last: date) -> DataFrame:
        """Days first..last inclusive."""
        return self.read(table).where(F.col("dt").between(F.lit(first), F.lit(last)))

    def partitions(self, table: str) -> list[date]:
        """The days present in a table, oldest first."""
        if not self.exists(table):
            return []
        rows = self.read(table).select("dt").distinct().orderBy("dt").collect()
        return [r.dt for r in rows]

    def replace_partition(self, df: DataFrame, table: str, day: date) -> None:
        """Make day `day` of `table` hold exactly df's rows; an empty df leaves no partition."""
        if df.limit(1).count():
            self.overwrite_partitions(df, table)
        elif self.exists(table):
            if self.format == "hive":
                self.spark.sql(f"ALTER TABLE {self.name(table)} DROP IF EXISTS PARTITION (dt='{day.isoformat()}')")
            else:
                jvm = self.spark.sparkContext._jvm
                path = jvm.org.apache.hadoop.fs.Path(f"{self.name(table)}/dt={day.isoformat()}")
                path.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration()).delete(path, True)

    def overwrite_partitions(self, df: DataFrame, table: str) -> None:
        """Replace exactly the `dt` partitions present in df; other days are untouched."""
        if "dt" not in df.columns:
            raise ValueError("a lake write needs a dt column")
        if self.format == "parquet":
            df.write.mode("overwrite").partitionBy("dt").parquet(self.name(table))
        elif not self.exists(table):
            df.write.format("parquet").partitionBy("dt").saveAsTable(self.name(table))
        else:
            columns = self.spark.table(self.name(table)).columns
            df.select(*columns).write.insertInto(self.name(table), overwrite=True)
        log.info("wrote %s", self.name(table))
