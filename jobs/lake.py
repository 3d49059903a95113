"""The one place that reads and writes lake tables, partition by partition.

Tables live in a Hive database (the default) or under plain Parquet paths; both are
partitioned by `dt`. A write replaces whole partitions and is atomic:

- Hive: each write goes to a new version directory `<table>/dt=<day>/<commit>/`, its
  manifest is written beside the data, and only then does the metastore switch the
  partition's location (one metastore call). A job killed before the switch leaves
  the previous version in place; superseded versions are removed after a grace period
  so that queries already reading them can finish.
- Parquet: each write is staged under `<table>/_staging/<commit>/` (ignored by Parquet
  readers) and swapped in with two renames recorded in a journal; a swap cut short is
  completed by the next reader or writer of the table. Renames are atomic on local
  disks and HDFS, not on S3: there, use Hive tables.

Every committed partition carries `_manifest.json`: rows, commit, run id, code version,
plus what the writer adds (input fingerprint, model, contract, row counts).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from py4j.protocol import Py4JJavaError
from pyspark.errors import AnalysisException, PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import lineage
from jobs.errors import ContractViolation, InvalidParameter, PartitionNotFound
from jobs.settings import Env

log = logging.getLogger(__name__)

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
READ_ERRORS = (Py4JJavaError, PySparkException)
MANIFEST = "_manifest.json"


def unreadable(exc: Exception, what: str) -> ContractViolation:
    """A Spark read failure (corrupt or foreign file) as one actionable line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    cause = next((line for line in lines if "FAILED_READ_FILE" in line or "not a Parquet" in line),
                 lines[0] if lines else type(exc).__name__)
    return ContractViolation(f"{what}: the data could not be read ({cause[:400]}); "
                             "re-run the upstream load for this partition")


def check_identifier(value: str, what: str) -> str:
    """Reject anything but a plain lower-case identifier before it can reach SQL or a path."""
    if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
        raise InvalidParameter(
            f"{what} {value!r} is not a valid identifier: use lower-case letters, digits and _, "
            "starting with a letter (at most 63 characters)"
        )
    return value


def new_commit_id() -> str:
    """Sortable and unique: UTC time to the microsecond, then a random suffix."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:6]}"


def checksum(df: DataFrame, columns: list[str]) -> dict[str, int]:
    """An order-independent checksum of rows over `columns`: count, sum and xor of row hashes."""
    h = F.xxhash64(*[F.col(c) for c in columns])
    row = df.agg(F.count(F.lit(1)).alias("rows"), F.sum(h.bitwiseAND(F.lit(0xFFFFFFFF))).alias("sum32"),
                 F.bit_xor(h).alias("xor64")).first()
    return {"rows": int(row["rows"]), "sum32": int(row["sum32"] or 0), "xor64": int(row["xor64"] or 0)}


class FileSystem:
    """Hadoop FileSystem calls (local disk, HDFS, s3a alike) through the Spark JVM."""

    def __init__(self, spark: SparkSession):
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _path(self, path: str):
        return self._jvm.org.apache.hadoop.fs.Path(path)

    def _fs(self, path: str):
        return self._path(path).getFileSystem(self._conf)

    def exists(self, path: str) -> bool:
        return bool(self._fs(path).exists(self._path(path)))

    def children(self, path: str) -> list[tuple[str, bool, int]]:
        """(name, is_dir, modification time in ms) of each entry; [] when path is missing."""
        if not self.exists(path):
            return []
        return [(s.getPath().getName(), bool(s.isDirectory()), int(s.getModificationTime()))
                for s in self._fs(path).listStatus(self._path(path))]

    def total_size(self, path: str) -> int:
        """Bytes of every file under path."""
        return int(self._fs(path).getContentSummary(self._path(path)).getLength()) if self.exists(path) else 0

    def mkdirs(self, path: str) -> None:
        self._fs(path).mkdirs(self._path(path))

    def rename(self, src: str, dst: str) -> None:
        self.mkdirs(dst.rsplit("/", 1)[0])
        if not self._fs(src).rename(self._path(src), self._path(dst)):
            raise OSError(f"could not rename {src} to {dst}")

    def delete(self, path: str) -> None:
        self._fs(path).delete(self._path(path), True)

    def write_text(self, path: str, text: str) -> None:
        """Write a small file whole: to a temporary name, then renamed into place."""
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        out = self._fs(tmp).create(self._path(tmp), True)
        try:
            out.write(bytearray(text.encode()))
        finally:
            out.close()
        if self.exists(path):
            self.delete(path)
        self.rename(tmp, path)

    @contextmanager
    def exclusive(self, lock: str, timeout_s: float = 600.0, stale_s: float = 600.0) -> Iterator[None]:
        """Hold a lock file (created only if absent: atomic on local disks and HDFS) while committing."""
        deadline = time.monotonic() + timeout_s
        self.mkdirs(lock.rsplit("/", 1)[0])
        while True:
            try:
                self._fs(lock).create(self._path(lock), False).close()
                break
            except Py4JJavaError:  # it exists: another writer commits this partition
                age = [m for n, _, m in self.children(lock.rsplit("/", 1)[0]) if n == lock.rsplit("/", 1)[1]]
                if age and time.time() * 1000 - age[0] > stale_s * 1000:
                    log.warning("removing a stale commit lock %s (a writer died holding it)", lock)
                    self.delete(lock)
                elif time.monotonic() > deadline:
                    raise ContractViolation(f"{lock} stayed locked for {timeout_s:.0f} s: another writer is "
                                            "committing this partition") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            self.delete(lock)

    def read_text(self, path: str) -> str | None:
        if not self.exists(path):
            return None
        stream = self._fs(path).open(self._path(path))
        try:
            reader = self._jvm.java.io.BufferedReader(self._jvm.java.io.InputStreamReader(stream, "UTF-8"))
            lines = []
            while (line := reader.readLine()) is not None:
                lines.append(line)
            return "\n".join(lines)
        finally:
            stream.close()


@dataclass(frozen=True)
class Commit:
    """What one partition write committed."""

    table: str
    day: date
    location: str
    rows: int
    commit_id: str


class Lake:
    """Partitioned tables of one namespace (a Hive database or a Parquet folder)."""

    def __init__(self, spark: SparkSession, env: Env, namespace: str | None = None):
        self.spark = spark
        self.env = env
        self.format = env.lake_format
        self.namespace = check_identifier(namespace or env.database, "namespace")
        self.root = env.warehouse.rstrip("/")
        self.fs = FileSystem(spark)
        if self.format == "hive" and not spark.catalog.databaseExists(self.namespace):
            location = f"{self.root}/{self.namespace}.db"
            spark.sql(f"CREATE DATABASE IF NOT EXISTS `{self.namespace}` LOCATION '{location}'")

    def with_namespace(self, namespace: str) -> Lake:
        """The same lake, another namespace (retro-tests write to their own)."""
        return Lake(self.spark, self.env, namespace)

    # -- names -----------------------------------------------------------------------------
    def name(self, table: str) -> str:
        """The fully qualified table name (Hive) or path (Parquet)."""
        check_identifier(table, "table")
        if self.format == "hive":
            return f"`{self.namespace}`.`{table}`"
        return self.table_root(table)

    def table_root(self, table: str) -> str:
        check_identifier(table, "table")
        if self.format == "hive":
            return f"{self.root}/{self.namespace}.db/{table}"
        return f"{self.root}/{self.namespace}/{table}"

    # -- reading ---------------------------------------------------------------------------
    def exists(self, table: str) -> bool:
        if self.format == "hive":
            return bool(self.spark.catalog.tableExists(f"{self.namespace}.{check_identifier(table, 'table')}"))
        self._recover(table)
        return any(name.startswith("dt=") for name, _, _ in self.fs.children(self.table_root(table)))

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

    def partitions(self, table: str) -> list[date]:
        """The days present in a table, oldest first, from the metastore or the folder names."""
        if not self.exists(table):
            return []
        if self.format == "hive":
            names = [r[0] for r in self.spark.sql(f"SHOW PARTITIONS {self.name(table)}").collect()]
        else:
            names = [n for n, is_dir, _ in self.fs.children(self.table_root(table)) if is_dir]
        return sorted(date.fromisoformat(n.split("=", 1)[1]) for n in names if n.startswith("dt="))

    def location(self, table: str, day: date) -> str | None:
        """Where the committed version of a partition lives, or None."""
        if not self.exists(table):
            return None
        if self.format == "parquet":
            path = f"{self.table_root(table)}/dt={day.isoformat()}"
            return path if self.fs.exists(path) else None
        try:
            rows = self.spark.sql(f"DESCRIBE FORMATTED {self.name(table)} PARTITION (dt='{day.isoformat()}')") \
                .where(F.col("col_name") == "Location").collect()
        except AnalysisException:
            return None
        # the partition's own location comes first, the table's after it
        return rows[0]["data_type"] if rows else None

    def manifest(self, table: str, day: date) -> dict[str, Any] | None:
        """The manifest written with a partition's committed version, if any."""
        location = self.location(table, day)
        text = self.fs.read_text(f"{location}/{MANIFEST}") if location else None
        return json.loads(text) if text else None

    def read_partition(self, table: str, day: date) -> DataFrame:
        """One day of a table; a missing or empty partition is a clear error."""
        missing = PartitionNotFound(
            f"{self.namespace}.{table} has no rows for dt={day.isoformat()} (the partition is missing "
            "or empty): check that the upstream load for that day ran")
        if not self.exists(table):
            raise PartitionNotFound(f"table {self.namespace}.{table} does not exist yet")
        if day not in self.partitions(table):
            raise missing
        df = self.read(table).where(F.col("dt") == F.lit(day))
        manifest = self.manifest(table, day)
        if manifest is not None:
            empty = manifest.get("rows", 1) == 0
        else:  # written by someone else: look at the data
            try:
                empty = df.limit(1).count() == 0
            except READ_ERRORS as exc:
                raise unreadable(exc, f"{self.namespace}.{table} dt={day}") from None
        if empty:
            raise missing
        return df

    def read_range(self, table: str, first: date, last: date) -> DataFrame:
        """Days first..last inclusive."""
        return self.read(table).where(F.col("dt").between(F.lit(first), F.lit(last)))

    # -- writing ---------------------------------------------------------------------------
    def write_partition(self, df: DataFrame, table: str, day: date,
                        manifest: dict[str, Any] | None = None) -> Commit:
        """Make day `day` of `table` hold exactly df's rows (df has no `dt`, or only `day`)."""
        data = df.drop("dt") if "dt" in df.columns else df
        if self.format == "hive":
            self._ensure_hive_table(table, data)
        commit_id = new_commit_id()
        staging = f"{self.table_root(table)}/_staging/{commit_id}"
        data.write.mode("errorifexists").parquet(staging)
        return self._commit(table, day, staging, commit_id, data, manifest or {})

    def write_partitions(self, df: DataFrame, table: str,
                         manifest: dict[str, Any] | None = None) -> list[Commit]:
        """Replace every `dt` partition present in df, each atomically; other days are untouched."""
        if "dt" not in df.columns:
            raise ValueError("a multi-partition lake write needs a dt column")
        if self.format == "hive":
            self._ensure_hive_table(table, df.drop("dt"))
        commit_id = new_commit_id()
        staging = f"{self.table_root(table)}/_staging/{commit_id}"
        df.write.mode("errorifexists").partitionBy("dt").parquet(staging)
        days = sorted(date.fromisoformat(n.split("=", 1)[1])
                      for n, is_dir, _ in self.fs.children(staging) if is_dir and n.startswith("dt="))
        commits = [self._commit(table, d, f"{staging}/dt={d.isoformat()}", commit_id, df.drop("dt"),
                                manifest or {}) for d in days]
        self.fs.delete(staging)
        return commits

    def _commit(self, table: str, day: date, staged: str, commit_id: str, data: DataFrame,
                manifest: dict[str, Any]) -> Commit:
        rows = self.spark.read.parquet(staged).count()  # from the Parquet footers: a check the files read
        record = {"table": f"{self.namespace}.{table}", "dt": day.isoformat(), "commit": commit_id,
                  "rows": rows, "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
                  "run_id": lineage.run_id(), "code_version": lineage.code_version(), **manifest}
        self.fs.write_text(f"{staged}/{MANIFEST}", json.dumps(record, indent=1, sort_keys=True, default=str))
        if self.format == "hive":
            location = self._switch_hive(table, day, staged, commit_id, data)
        else:
            location = self._swap_parquet(table, day, staged, commit_id)
        log.info("committed %s.%s dt=%s: %d rows (%s)", self.namespace, table, day, rows, commit_id)
        return Commit(table, day, location, rows, commit_id)

    def _switch_hive(self, table: str, day: date, staged: str, commit_id: str, data: DataFrame) -> str:
        final = f"{self.table_root(table)}/dt={day.isoformat()}/{commit_id}"
        self.fs.rename(staged, final)
        spec = f"PARTITION (dt='{day.isoformat()}')"
        if self.location(table, day) is None:
            self.spark.sql(f"ALTER TABLE {self.name(table)} ADD {spec} LOCATION '{final}'")
        else:
            self.spark.sql(f"ALTER TABLE {self.name(table)} {spec} SET LOCATION '{final}'")
        self.spark.catalog.refreshTable(f"{self.namespace}.{table}")
        self._collect_garbage(f"{self.table_root(table)}/dt={day.isoformat()}", keep=commit_id)
        return final

    def _ensure_hive_table(self, table: str, data: DataFrame) -> None:
        if not self.exists(table):
            self.fs.mkdirs(self.table_root(table))
            ddl = data.drop("dt")._jdf.schema().toDDL() if "dt" in data.columns else data._jdf.schema().toDDL()
            self.spark.sql(f"CREATE TABLE IF NOT EXISTS {self.name(table)} ({ddl}, dt DATE) USING parquet "
                           f"PARTITIONED BY (dt) LOCATION '{self.table_root(table)}'")
            return
        current = {f.name: f.dataType.simpleString() for f in self.spark.table(self.name(table)).schema.fields}
        missing = sorted(set(current) - set(data.columns) - {"dt"})
        changed = sorted(f.name for f in data.schema.fields
                         if f.name in current and current[f.name] != f.dataType.simpleString())
        if missing or changed:
            raise ContractViolation(
                f"{self.namespace}.{table}: the rows to write do not match the table "
                f"(missing {missing or 'none'}, other type {changed or 'none'}); "
                "write to a new namespace or migrate the table")
        added = [f for f in data.schema.fields if f.name not in current]
        if added:
            cols = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in added)
            self.spark.sql(f"ALTER TABLE {self.name(table)} ADD COLUMNS ({cols})")

    def _swap_parquet(self, table: str, day: date, staged: str, commit_id: str) -> str:
        root = self.table_root(table)
        final, trash = f"{root}/dt={day.isoformat()}", f"{root}/_trash/{commit_id}/dt={day.isoformat()}"
        journal = f"{root}/_journal/dt={day.isoformat()}.json"
        with self.fs.exclusive(f"{root}/_journal/dt={day.isoformat()}.lock"):
            self._recover(table)
            self.fs.write_text(journal, json.dumps({"staged": staged, "final": final, "trash": trash}))
            if self.fs.exists(final):
                self.fs.rename(final, trash)
            self.fs.rename(staged, final)
            self.fs.delete(journal)
        self._collect_garbage(f"{root}/_trash", keep=commit_id)
        return final

    def _recover(self, table: str) -> None:
        """Finish a Parquet swap that was cut short between its two renames."""
        if self.format != "parquet":
            return
        journal_dir = f"{self.table_root(table)}/_journal"
        for name, _, _ in self.fs.children(journal_dir):
            text = self.fs.read_text(f"{journal_dir}/{name}")
            if not text:
                continue
            j = json.loads(text)
            if self.fs.exists(j["staged"]) and not self.fs.exists(j["final"]):
                self.fs.rename(j["staged"], j["final"])
                log.warning("completed an interrupted commit of %s", j["final"])
            self.fs.delete(f"{journal_dir}/{name}")

    def _collect_garbage(self, folder: str, keep: str) -> None:
        """Remove superseded versions once they are older than the grace period."""
        cutoff = time.time() * 1000 - self.env.lake_gc_grace_minutes * 60_000
        for name, is_dir, modified in self.fs.children(folder):
            if is_dir and name != keep and modified < cutoff:
                self.fs.delete(f"{folder}/{name}")

    def drop_partition(self, table: str, day: date) -> None:
        """Remove one day (its data stays until garbage collection)."""
        if self.location(table, day) is None:
            return
        if self.format == "hive":
            self.spark.sql(f"ALTER TABLE {self.name(table)} DROP IF EXISTS PARTITION (dt='{day.isoformat()}')")
        else:
            self.fs.rename(f"{self.table_root(table)}/dt={day.isoformat()}",
                           f"{self.table_root(table)}/_trash/{new_commit_id()}/dt={day.isoformat()}")


def committed_on_disk(env: Env, table: str, day: date, namespace: str | None = None) -> bool:
    """Has a version of this partition been committed? A storage check without Spark, for sensors.

    A committed version carries `_manifest.json`; writers other than batchloop should
    publish one (or swap the sensor for a metastore sensor).
    """
    ns = check_identifier(namespace or env.database, "namespace")
    check_identifier(table, "table")
    root = env.warehouse.rstrip("/")
    folder = f"{root}/{ns}.db/{table}" if env.lake_format == "hive" else f"{root}/{ns}/{table}"
    prefix = f"{folder}/dt={day.isoformat()}"
    if prefix.startswith(("s3a://", "s3://")):
        from jobs import objectstore

        bucket, _, key = prefix.split("://", 1)[1].partition("/")
        listing = objectstore.client(env).list_objects_v2(Bucket=bucket, Prefix=f"{key}/")
        return any(o["Key"].endswith(MANIFEST) for o in listing.get("Contents", []))
    local = Path(prefix.removeprefix("file://"))
    return (local / MANIFEST).exists() or any(local.glob(f"*/{MANIFEST}"))
