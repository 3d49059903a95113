"""The one place that reads and writes lake tables, partition by partition.

Tables live in a Hive database (the default) or under plain Parquet paths; both are
partitioned by `dt`, and batchloop's own tables by the model first (`model`, then `dt`:
`scores/model=churn/dt=2026-03-01`), so one model's day is one partition and a write of it
never touches another model's rows. A write replaces whole partitions and is atomic:

- Hive: each write goes straight to a new version prefix `<table>/[model=<name>/]dt=<day>/<commit>/`
  (a write of many days: `.../dt=<day>/commit=<commit>/`), nothing is renamed (on S3 a rename is a
  copy; the S3A magic committer puts the files there at job commit), its manifest is written
  beside the data, and only then does the metastore switch the partition's location (one
  metastore call). A job killed before the switch leaves the previous version in place;
  superseded versions are removed after a grace period, judged by what the manifests record,
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
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from py4j.protocol import Py4JJavaError
from pyarrow import fs
from pyspark.errors import AnalysisException, PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import Env
from jobs.errors import ContractViolation, InvalidParameter, PartitionNotFound
from jobs.io import lineage

log = logging.getLogger(__name__)

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
READ_ERRORS = (Py4JJavaError, PySparkException)
MANIFEST = "_manifest.json"
# a version folder without a manifest is a write in progress, or one that died: removed once this old
WRITE_TIMEOUT = timedelta(hours=12)
Keys = dict[str, str] | None  # partition values before `dt`, e.g. {"model": "churn"}


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


def commit_time(name: str) -> datetime | None:
    """When a version folder's write began, from its name (`<commit>` or `commit=<commit>`); None if not one."""
    try:
        return datetime.strptime(name.rsplit("=", 1)[-1][:21], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
    except ValueError:
        return None


def checksum(df: DataFrame, columns: list[str]) -> dict[str, int]:
    """An order-independent checksum of rows over `columns`: count, sum and xor of row hashes."""
    h = F.xxhash64(*[F.col(c) for c in columns])
    row = df.agg(F.count(F.lit(1)).alias("rows"), F.sum(h.bitwiseAND(F.lit(0xFFFFFFFF))).alias("sum32"),
                 F.bit_xor(h).alias("xor64")).first()
    return {"rows": int(row["rows"]), "sum32": int(row["sum32"] or 0), "xor64": int(row["xor64"] or 0)}


def schema_ddl(df: DataFrame) -> str:
    """The frame's columns as a DDL column list, as Spark's StructType.toDDL writes it."""
    return ", ".join(f"`{f.name}` {f.dataType.simpleString()}{'' if f.nullable else ' NOT NULL'}"
                     for f in df.schema.fields)


class FileSystem:
    """The lake's files (local disk, s3a, HDFS alike) through pyarrow's file systems.

    This process reads and writes them itself, so it works the same beside a Spark
    Connect server and inside a spark-submit driver: no call goes through Spark's JVM.
    """

    def __init__(self, env: Env):
        self.env = env
        self._by_scheme: dict[str, Any] = {}

    def _resolve(self, path: str):
        """(pyarrow file system, path inside it) for a lake location."""
        scheme, _, rest = path.partition("://") if "://" in path else ("file", "", path)
        if scheme == "file":  # a plain path, file:/... or file:///...
            local = path.removeprefix("file://").removeprefix("file:")
            return self._cached("file", fs.LocalFileSystem), local
        if scheme in ("s3a", "s3"):
            return self._cached("s3", self._s3), rest
        return fs.FileSystem.from_uri(path)

    def _cached(self, scheme: str, make):
        if scheme not in self._by_scheme:
            self._by_scheme[scheme] = make()
        return self._by_scheme[scheme]

    def _s3(self):
        endpoint = self.env.s3_endpoint_url or ""
        return fs.S3FileSystem(access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
                               secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
                               region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                               endpoint_override=endpoint.split("://", 1)[-1] or None,
                               scheme=endpoint.split("://", 1)[0] if "://" in endpoint else "https",
                               force_virtual_addressing=False)

    def exists(self, path: str) -> bool:
        filesystem, inner = self._resolve(path)
        return filesystem.get_file_info(inner).type != fs.FileType.NotFound

    def open_input_file(self, path: str):
        """A file opened for random access (Parquet footers and row groups)."""
        filesystem, inner = self._resolve(path)
        return filesystem.open_input_file(inner)

    def children(self, path: str) -> list[tuple[str, bool, int]]:
        """(name, is_dir, modification time in ms) of each entry; [] when path is missing."""
        filesystem, inner = self._resolve(path)
        if filesystem.get_file_info(inner).type != fs.FileType.Directory:
            return []
        now_ms = int(time.time() * 1000)
        return [(i.base_name, i.type == fs.FileType.Directory,
                 int(i.mtime_ns // 1_000_000) if i.mtime_ns is not None else now_ms)
                for i in filesystem.get_file_info(fs.FileSelector(inner, allow_not_found=True))]

    def total_size(self, path: str) -> int:
        """Bytes of every file under path."""
        filesystem, inner = self._resolve(path)
        if filesystem.get_file_info(inner).type != fs.FileType.Directory:
            return 0
        # allow_not_found: an object store may list a folder that has just been emptied
        return sum(i.size or 0 for i in filesystem.get_file_info(fs.FileSelector(inner, recursive=True,
                                                                                 allow_not_found=True))
                   if i.type == fs.FileType.File)

    def mkdirs(self, path: str) -> None:
        filesystem, inner = self._resolve(path)
        filesystem.create_dir(inner, recursive=True)

    def rename(self, src: str, dst: str) -> None:
        if not self.exists(src):
            raise OSError(f"could not rename {src} to {dst}: {src} does not exist")
        self.mkdirs(dst.rsplit("/", 1)[0])
        filesystem, inner_src = self._resolve(src)
        _, inner_dst = self._resolve(dst)
        filesystem.move(inner_src, inner_dst)

    def delete(self, path: str) -> None:
        filesystem, inner = self._resolve(path)
        kind = filesystem.get_file_info(inner).type
        if kind == fs.FileType.Directory:
            filesystem.delete_dir(inner)
        elif kind != fs.FileType.NotFound:
            filesystem.delete_file(inner)

    def write_text(self, path: str, text: str) -> None:
        """Write a small file whole: an object store's PUT is atomic; elsewhere a temporary name, renamed."""
        filesystem, inner = self._resolve(path)
        if type(filesystem).__name__ == "S3FileSystem":
            with filesystem.open_output_stream(inner) as out:
                out.write(text.encode())
            return
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        filesystem, inner = self._resolve(tmp)
        with filesystem.open_output_stream(inner) as out:
            out.write(text.encode())
        self.rename(tmp, path)

    def _create_new(self, path: str) -> bool:
        """Create the lock file, holding this process's host and pid, only if none exists (O_EXCL locally)."""
        owner = f"{socket.gethostname()} {os.getpid()}".encode()
        filesystem, inner = self._resolve(path)
        if type(filesystem).__name__ == "LocalFileSystem":
            try:
                fd = os.open(inner, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as out:
                out.write(owner)
            return True
        if self.exists(path):  # object stores: no create-if-absent; a best effort
            return False
        with filesystem.open_output_stream(inner) as out:
            out.write(owner)
        return True

    def _holder_gone(self, lock: str) -> bool:
        """The lock was taken by a process of this host that no longer runs (killed while committing)."""
        try:
            host, pid = (self.read_text(lock) or "").split()
        except (ValueError, OSError):
            return False
        if host != socket.gethostname():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            return False
        return False

    @contextmanager
    def exclusive(self, lock: str, timeout_s: float = 600.0, stale_s: float = 600.0) -> Iterator[None]:
        """Hold a lock file (created only if absent: atomic on local disks and HDFS) while committing."""
        deadline = time.monotonic() + timeout_s
        folder, name = lock.rsplit("/", 1)
        self.mkdirs(folder)
        while not self._create_new(lock):  # it exists: another writer commits this partition
            age = [m for n, _, m in self.children(folder) if n == name]
            if self._holder_gone(lock) or (age and time.time() * 1000 - age[0] > stale_s * 1000):
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
        filesystem, inner = self._resolve(path)
        with filesystem.open_input_stream(inner) as stream:
            return stream.read().decode()


@dataclass(frozen=True)
class FileOpener:
    """`FileOpener(endpoint)()` opens the lake's files by path on whichever machine calls it: picklable, it
    carries only the S3 endpoint, and the machine's own keys (or role) reach S3, as for the s3a connector."""

    s3_endpoint_url: str | None

    def __call__(self):
        return FileSystem(Env(_env_file=None, s3_endpoint_url=self.s3_endpoint_url)).open_input_file


class DatabaseLocks:
    """Commit locks held in the metastore's PostgreSQL (advisory locks), for lakes on object stores.

    An object store has no create-if-absent, so a lock file there is a best effort; an advisory lock
    is exclusive across every driver and host, and goes with the connection when its holder dies."""

    def __init__(self, env: Env):
        from jobs.io.spark import jdbc_address, metastore_password

        self.host, self.port, self.database = jdbc_address(env.metastore_jdbc_url)
        self.user, self.password = env.metastore_user, metastore_password(env)

    @contextmanager
    def exclusive(self, name: str, timeout_s: float = 600.0) -> Iterator[None]:
        import psycopg2

        connection = psycopg2.connect(host=self.host, port=self.port, dbname=self.database, user=self.user,
                                      password=self.password, connect_timeout=10,
                                      application_name="batchloop commit lock")
        connection.autocommit = True
        deadline = time.monotonic() + timeout_s
        try:
            with connection.cursor() as cursor:
                while True:
                    cursor.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (name,))
                    if cursor.fetchone()[0]:
                        break
                    if time.monotonic() > deadline:
                        raise ContractViolation(f"{name} stayed locked for {timeout_s:.0f} s: another writer is "
                                                "committing this partition") from None
                    time.sleep(0.2)
            yield
        finally:
            connection.close()  # the lock goes with the session


def partition_keys(by: Keys) -> tuple[tuple[str, str], ...]:
    """The partition columns and values before `dt`, each checked like an identifier."""
    return tuple((check_identifier(c, "partition column"), check_identifier(v, c)) for c, v in (by or {}).items())


def partition_path(by: Keys, day: date) -> str:
    """The partition's folder below the table: `model=churn/dt=2026-03-01`."""
    return "/".join([*(f"{c}={v}" for c, v in partition_keys(by)), f"dt={day.isoformat()}"])


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
        self.fs = FileSystem(env)
        # commit locks: in the metastore's database where there is one (any lake), else lock files
        self._locks = DatabaseLocks(env) if self.format == "hive" and env.metastore_jdbc_url else self.fs
        # Hive tables seen to exist: batchloop never drops a table, so each is looked up once per step
        # (every lookup is a round trip to the metastore; a partition read made four of them)
        self._tables: set[str] = set()
        if self.format == "hive" and not spark.catalog.databaseExists(self.namespace):
            location = f"{self.root}/{self.namespace}.db"
            try:
                spark.sql(f"CREATE DATABASE IF NOT EXISTS `{self.namespace}` LOCATION '{location}'")
            except AnalysisException:  # another driver created it meanwhile (a shared metastore)
                if not spark.catalog.databaseExists(self.namespace):
                    raise

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

    def _spec(self, day: date, by: Keys) -> str:
        values = [f"{c}='{v}'" for c, v in partition_keys(by)] + [f"dt='{day.isoformat()}'"]
        return f"PARTITION ({', '.join(values)})"

    def _journal(self, table: str, day: date, by: Keys) -> str:
        """The partition's journal and lock name: one flat file per partition."""
        return f"{self.table_root(table)}/_journal/{partition_path(by, day).replace('/', ',')}"

    # -- reading ---------------------------------------------------------------------------
    def exists(self, table: str) -> bool:
        if self.format == "hive":
            if table not in self._tables and self.spark.catalog.tableExists(
                    f"{self.namespace}.{check_identifier(table, 'table')}"):
                self._tables.add(table)
            return table in self._tables
        self._recover(table)
        return any(is_dir and "=" in name and not name.startswith("_")
                   for name, is_dir, _ in self.fs.children(self.table_root(table)))

    def read(self, table: str) -> DataFrame:
        """The whole table, lazily; filter on `dt` to prune partitions."""
        if not self.exists(table):
            raise PartitionNotFound(f"table {self.namespace}.{table} does not exist yet")
        if self.format == "hive":
            return self.spark.table(self.name(table))
        try:
            # mergeSchema: partitions of a table keyed by model may hold different columns
            df = self.spark.read.option("basePath", self.name(table)).option("mergeSchema", "true") \
                .parquet(self.name(table))
            df.schema  # noqa: B018 - analyse now: a Connect session would otherwise fail later, elsewhere
            return df
        except READ_ERRORS as exc:
            raise unreadable(exc, f"{self.namespace}.{table}") from None

    def partitions(self, table: str, by: Keys = None) -> list[date]:
        """The days present in a table (of one model, `by`), oldest first, from the metastore or the folders."""
        if not self.exists(table):
            return []
        keys = partition_keys(by)
        if self.format == "hive":
            where = f" PARTITION ({', '.join(f'{c}={chr(39)}{v}{chr(39)}' for c, v in keys)})" if keys else ""
            names = [r[0].rsplit("/", 1)[-1] for r in self.spark.sql(f"SHOW PARTITIONS {self.name(table)}{where}")
                     .collect()]
        else:
            folder = "/".join([self.table_root(table), *(f"{c}={v}" for c, v in keys)])
            names = [n for n, is_dir, _ in self.fs.children(folder) if is_dir]
        return sorted(date.fromisoformat(n.split("=", 1)[1]) for n in names if n.startswith("dt="))

    def location(self, table: str, day: date, by: Keys = None) -> str | None:
        """Where the committed version of a partition lives, or None."""
        if not self.exists(table):
            return None
        if self.format == "parquet":
            path = f"{self.table_root(table)}/{partition_path(by, day)}"
            return path if self.fs.exists(path) else None
        try:
            rows = self.spark.sql(f"DESCRIBE FORMATTED {self.name(table)} {self._spec(day, by)}") \
                .where(F.col("col_name") == "Location").collect()
        except AnalysisException:
            return None
        # the partition's own location comes first, the table's after it
        return rows[0]["data_type"] if rows else None

    def _data_files(self, location: str) -> tuple[str, ...] | None:
        """The data files of a committed version, for readers outside Spark (the drift fold), or None when its
        folder holds a sub-folder (which Spark would read as a partition). Names starting with `_` or `.` (the
        manifest, checksums) are not data, as for Spark's reader. Only local disk and S3 are read outside
        Spark: a version elsewhere (HDFS) gives None too."""
        if "://" in location and location.split("://", 1)[0] not in ("file", "s3", "s3a"):
            return None
        files = []
        for name, is_dir, _ in self.fs.children(location):
            if name.startswith(("_", ".")):
                continue
            if is_dir:
                return None
            files.append(f"{location.rstrip('/')}/{name}")
        return tuple(sorted(files))

    def manifest(self, table: str, day: date, by: Keys = None) -> dict[str, Any] | None:
        """The manifest written with a partition's committed version, if any."""
        location = self.location(table, day, by)
        return self._manifest_at(location) if location else None

    def _manifest_at(self, location: str) -> dict[str, Any] | None:
        text = self.fs.read_text(f"{location}/{MANIFEST}")
        return json.loads(text) if text else None

    def read_partition(self, table: str, day: date, by: Keys = None) -> DataFrame:
        """One day of a table (of one model, `by`); a missing or empty partition is a clear error."""
        return self._read_partition(table, day, by, files=False)[0]

    def read_partition_files(self, table: str, day: date, by: Keys = None) -> tuple[DataFrame, tuple[str, ...] | None]:
        """`read_partition`, and the data files of the same committed version (None where Spark must read
        them): one metastore lookup for both."""
        return self._read_partition(table, day, by, files=True)

    def _read_partition(self, table: str, day: date, by: Keys, files: bool) -> tuple[DataFrame, tuple[str, ...] | None]:
        missing = PartitionNotFound(
            f"{self.namespace}.{table} has no rows for {partition_path(by, day).replace('/', ' ')} (the partition "
            "is missing or empty): check that the upstream load for that day ran")
        if not self.exists(table):
            raise PartitionNotFound(f"table {self.namespace}.{table} does not exist yet")
        location = self.location(table, day, by)
        if location is None:
            raise missing
        df = self._files(location, table, day, by)
        manifest = self._manifest_at(location)
        if manifest is not None:
            empty = manifest.get("rows", 1) == 0
        else:  # written by someone else: look at the data
            try:
                empty = df.limit(1).count() == 0
            except READ_ERRORS as exc:
                raise unreadable(exc, f"{self.namespace}.{table} dt={day}") from None
        if empty:
            raise missing
        return df, self._data_files(location) if files else None

    def _files(self, location: str, table: str, day: date, by: Keys) -> DataFrame:
        """The committed files of one partition, read by their location, with its partition values as columns.

        Read this way, a DataFrame's plan starts from the partition's files rather than from the
        table: the metastore is asked once (for the location), not again each time a plan derived
        from it is analysed, which under Spark Connect is at every action and every schema."""
        try:
            df = self.spark.read.parquet(location)
            df.schema  # noqa: B018 - analyse now: a corrupt or foreign file fails here, at the read
        except READ_ERRORS as exc:
            raise unreadable(exc, f"{self.namespace}.{table} {partition_path(by, day)}") from None
        keys = partition_keys(by)
        return df.select(*[F.col(f"`{c}`") for c in df.columns if c != "dt" and c not in dict(keys)],
                         *[F.lit(v).alias(c) for c, v in keys], F.lit(day).alias("dt"))

    def read_range(self, table: str, first: date, last: date, by: Keys = None) -> DataFrame:
        """Days first..last inclusive (of one model, `by`)."""
        return self._only(self.read(table), by).where(F.col("dt").between(F.lit(first), F.lit(last)))

    @staticmethod
    def _only(df: DataFrame, by: Keys) -> DataFrame:
        for column, value in partition_keys(by):
            df = df.where(F.col(column) == F.lit(value))
        return df

    # -- writing ---------------------------------------------------------------------------
    def write_partition(self, df: DataFrame, table: str, day: date,
                        manifest: dict[str, Any] | None = None, by: Keys = None) -> Commit:
        """Make day `day` of `table` (of one model, `by`) hold exactly df's rows (df has no `dt`, or only `day`)."""
        data = df.drop("dt", *dict(partition_keys(by)))
        commit_id = new_commit_id()
        if self.format == "hive":
            self._ensure_hive_table(table, data, by)
            version = f"{self.table_root(table)}/{partition_path(by, day)}/{commit_id}"
            data.write.mode("error").parquet(version)  # straight to its own new prefix: nothing is moved after
            return self._commit(table, day, version, commit_id, data, manifest or {}, by)
        staging = f"{self.table_root(table)}/_staging/{commit_id}"
        data.write.mode("error").parquet(staging)
        return self._commit(table, day, staging, commit_id, data, manifest or {}, by)

    def write_partitions(self, df: DataFrame, table: str, manifest: dict[str, Any] | None = None,
                         by: Keys = None) -> list[Commit]:
        """Replace every `dt` partition present in df (of one model, `by`), each atomically; other days are
        untouched."""
        if "dt" not in df.columns:
            raise ValueError("a multi-partition lake write needs a dt column")
        df = df.drop(*dict(partition_keys(by)))
        commit_id = new_commit_id()
        if self.format == "hive":
            # one job writes every day straight to its own new version prefix, `<day folder>/commit=<commit>`
            self._ensure_hive_table(table, df.drop("dt"), by)
            base = "/".join([self.table_root(table), *(f"{c}={v}" for c, v in partition_keys(by))])
            df.withColumn("commit", F.lit(commit_id)).write.mode("append").partitionBy("dt", "commit").parquet(base)
            written = self.spark.read.option("basePath", base).parquet(f"{base}/dt=*/commit={commit_id}")
            versions = {}
        else:
            staging = f"{self.table_root(table)}/_staging/{commit_id}"
            df.write.mode("error").partitionBy("dt").parquet(staging)
            written = self.spark.read.parquet(staging)
        # every day's row count in one job (from the Parquet footers: a check the files read)
        counts = {r["dt"]: int(r["count"]) for r in written.groupBy("dt").count().collect()}
        days = sorted(counts)
        if self.format == "hive":
            versions = {d: f"{base}/dt={d.isoformat()}/commit={commit_id}" for d in days}
        else:
            versions = {d: f"{staging}/dt={d.isoformat()}" for d in days}
        commits = self._add_hive_partitions(table, versions, commit_id, counts, manifest or {}, by) \
            if self.format == "hive" and len(days) > 1 else []
        added = {c.day for c in commits}
        commits += [self._commit(table, d, versions[d], commit_id, df.drop("dt"), manifest or {}, by,
                                 rows=counts[d]) for d in days if d not in added]
        if self.format != "hive":
            self.fs.delete(staging)
        return sorted(commits, key=lambda c: c.day)

    def _add_hive_partitions(self, table: str, versions: dict[date, str], commit_id: str,
                             counts: dict[date, int], manifest: dict[str, Any], by: Keys) -> list[Commit]:
        """The days the table does not have yet, added in one metastore call (an upstream load's or a
        backfill's many days), each under its lock with its manifest written first, as a single write does.
        The days it has already are switched one by one (`_commit`)."""
        days = sorted(versions)
        with ExitStack() as locks:
            for d in days:
                locks.enter_context(self._locks.exclusive(f"{self._journal(table, d, by)}.lock"))
            present = set(self.partitions(table, by))  # asked under the locks: a day another writer added is switched
            new = [d for d in days if d not in present]
            if not new:
                return []
            for d in new:
                self.fs.write_text(f"{versions[d]}/{MANIFEST}", json.dumps(
                    self._record(table, d, commit_id, counts[d], manifest, by), indent=1, sort_keys=True, default=str))
            specs = " ".join(f"{self._spec(d, by)} LOCATION '{versions[d]}'" for d in new)
            self.spark.sql(f"ALTER TABLE {self.name(table)} ADD {specs}")
            self.spark.catalog.refreshTable(f"{self.namespace}.{table}")
            for d in new:  # versions a killed earlier attempt left behind
                self._collect_garbage(f"{self.table_root(table)}/{partition_path(by, d)}", versions[d])
        log.info("committed %s.%s: %d new days in one metastore call (%s)", self.namespace, table, len(new), commit_id)
        return [Commit(table, d, versions[d], counts[d], commit_id) for d in new]

    def _record(self, table: str, day: date, commit_id: str, rows: int, manifest: dict[str, Any],
                by: Keys) -> dict[str, Any]:
        return {"table": f"{self.namespace}.{table}", **dict(partition_keys(by)), "dt": day.isoformat(),
                "commit": commit_id, "rows": rows, "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "run_id": lineage.run_id(), "code_version": lineage.code_version(), **manifest}

    def _commit(self, table: str, day: date, staged: str, commit_id: str, data: DataFrame,
                manifest: dict[str, Any], by: Keys, rows: int | None = None) -> Commit:
        if rows is None:
            rows = self.spark.read.parquet(staged).count()  # from the Parquet footers: a check the files read
        record = json.dumps(self._record(table, day, commit_id, rows, manifest, by), indent=1, sort_keys=True,
                            default=str)
        if self.format == "hive":
            location = self._switch_hive(table, day, staged, record, by)
        else:
            self.fs.write_text(f"{staged}/{MANIFEST}", record)
            location = self._swap_parquet(table, day, staged, commit_id, by)
        log.info("committed %s.%s %s: %d rows (%s)", self.namespace, table, partition_path(by, day), rows, commit_id)
        return Commit(table, day, location, rows, commit_id)

    def _switch_hive(self, table: str, day: date, version: str, manifest: str, by: Keys) -> str:
        """Write `version`'s manifest, then make it the partition's location (one metastore call)."""
        folder = f"{self.table_root(table)}/{partition_path(by, day)}"
        spec = self._spec(day, by)
        # writers of the same day commit one at a time, each writing its manifest and switching under the lock,
        # and the garbage collection after a switch runs under it too: there, a version with a manifest that is
        # not the one shown is certainly superseded (or its writer died after writing it), never one in progress
        with self._locks.exclusive(f"{self._journal(table, day, by)}.lock"):
            self.fs.write_text(f"{version}/{MANIFEST}", manifest)
            if self.location(table, day, by) is None:
                self.spark.sql(f"ALTER TABLE {self.name(table)} ADD {spec} LOCATION '{version}'")
            else:
                self.spark.sql(f"ALTER TABLE {self.name(table)} {spec} SET LOCATION '{version}'")
            self.spark.catalog.refreshTable(f"{self.namespace}.{table}")
            self._collect_garbage(folder, version)
        return version

    def _ensure_hive_table(self, table: str, data: DataFrame, by: Keys) -> None:
        keys = [c for c, _ in partition_keys(by)]
        if not self.exists(table):
            self.fs.mkdirs(self.table_root(table))
            ddl = schema_ddl(data.drop("dt", *keys))
            columns = "".join(f", `{c}` STRING" for c in keys)
            try:
                self.spark.sql(f"CREATE TABLE IF NOT EXISTS {self.name(table)} ({ddl}{columns}, dt DATE) USING parquet "
                               f"PARTITIONED BY ({', '.join([*keys, 'dt'])}) LOCATION '{self.table_root(table)}'")
                self._tables.add(table)
                return
            except AnalysisException:  # another driver created it meanwhile (a shared metastore): check it below
                if not self.spark.catalog.tableExists(f"{self.namespace}.{table}"):
                    raise
                self._tables.add(table)
        partitioned = [c.name for c in self.spark.catalog.listColumns(f"{self.namespace}.{table}") if c.isPartition]
        if partitioned != [*keys, "dt"]:
            raise ContractViolation(
                f"{self.namespace}.{table} is partitioned by ({', '.join(partitioned)}), but this write is "
                f"partitioned by ({', '.join([*keys, 'dt'])}): a table of a batchloop version that kept one model "
                "per table; move it aside (ALTER TABLE ... RENAME TO ...) or use a new database")
        current = {f.name: f.dataType.simpleString() for f in self.spark.table(self.name(table)).schema.fields}
        # a table keyed by model holds every model's columns (another key name, contributions or not):
        # a partition's rows may lack some of them (they read as null there); a type conflict is refused
        missing = [] if keys else sorted(set(current) - set(data.columns) - {"dt"})
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

    def _swap_parquet(self, table: str, day: date, staged: str, commit_id: str, by: Keys) -> str:
        root = self.table_root(table)
        final, trash = f"{root}/{partition_path(by, day)}", f"{root}/_trash/{commit_id}/{partition_path(by, day)}"
        journal = f"{self._journal(table, day, by)}.json"
        with self.fs.exclusive(f"{self._journal(table, day, by)}.lock"):
            self._recover(table)
            self.fs.write_text(journal, json.dumps({"staged": staged, "final": final, "trash": trash}))
            if self.fs.exists(final):
                self.fs.rename(final, trash)
            self.fs.rename(staged, final)
            self.fs.delete(journal)
        self._collect_trash(f"{root}/_trash", keep={commit_id})
        return final

    def _recover(self, table: str) -> None:
        """Finish a Parquet swap that was cut short between its two renames."""
        if self.format != "parquet":
            return
        journal_dir = f"{self.table_root(table)}/_journal"
        for name, _, _ in self.fs.children(journal_dir):
            if not name.endswith(".json"):  # the commit locks live beside the journals
                continue
            lock = f"{journal_dir}/{name.removesuffix('.json')}.lock"
            if self.fs.exists(lock) and not self.fs._holder_gone(lock):
                continue  # its writer is committing right now: the journal is its own
            text = self.fs.read_text(f"{journal_dir}/{name}")
            if not text:
                continue
            j = json.loads(text)
            if self.fs.exists(j["staged"]) and not self.fs.exists(j["final"]):
                self.fs.rename(j["staged"], j["final"])
                log.warning("completed an interrupted commit of %s", j["final"])
            self.fs.delete(f"{journal_dir}/{name}")

    def _collect_trash(self, folder: str, keep: set[str]) -> None:
        """Remove the Parquet swaps' superseded folders once they are older than the grace period."""
        cutoff = time.time() * 1000 - self.env.lake_gc_grace_minutes * 60_000
        for name, is_dir, modified in self.fs.children(folder):
            if is_dir and name not in keep and modified < cutoff:
                self.fs.delete(f"{folder}/{name}")

    def _collect_garbage(self, folder: str, visible: str) -> None:
        """Remove the versions of one partition (its folder) that no query can still be reading.

        Judged by what is recorded, not by file times (an object store keeps none for folders): a
        version with a manifest that is not the visible one was superseded at the latest when the
        visible one was committed, and goes once that is longer ago than the grace period (queries
        begun on it before the switch have had that long); a version without a manifest is a write in
        progress or one that died before its commit, and goes once its commit id is older than
        WRITE_TIMEOUT. Runs under the partition's lock."""
        now = datetime.now(UTC)
        grace = timedelta(minutes=self.env.lake_gc_grace_minutes)
        shown = self._manifest_at(visible) or {}
        try:
            switched = datetime.fromisoformat(shown["written_at"])
        except (KeyError, TypeError, ValueError):
            switched = now
        visible_name = visible.rstrip("/").rsplit("/", 1)[-1]
        for name, is_dir, _ in self.fs.children(folder):
            started = commit_time(name)
            if not is_dir or name == visible_name or started is None:
                continue
            if self.fs.exists(f"{folder}/{name}/{MANIFEST}"):
                expired = now - switched >= grace
            else:
                expired = now - started >= max(grace, WRITE_TIMEOUT)
            if expired:
                self.fs.delete(f"{folder}/{name}")

    def drop_partition(self, table: str, day: date, by: Keys = None) -> None:
        """Remove one day (of one model, `by`; its data stays until garbage collection)."""
        if self.location(table, day, by) is None:
            return
        if self.format == "hive":
            self.spark.sql(f"ALTER TABLE {self.name(table)} DROP IF EXISTS {self._spec(day, by)}")
        else:
            self.fs.rename(f"{self.table_root(table)}/{partition_path(by, day)}",
                           f"{self.table_root(table)}/_trash/{new_commit_id()}/{partition_path(by, day)}")


def committed_on_disk(env: Env, table: str, day: date, namespace: str | None = None, by: Keys = None) -> bool:
    """Has a version of this partition been committed? A storage check without Spark, for sensors.

    A committed version carries `_manifest.json`; writers other than batchloop should
    publish one (or swap the sensor for a metastore sensor).
    """
    ns = check_identifier(namespace or env.database, "namespace")
    check_identifier(table, "table")
    root = env.warehouse.rstrip("/")
    folder = f"{root}/{ns}.db/{table}" if env.lake_format == "hive" else f"{root}/{ns}/{table}"
    prefix = f"{folder}/{partition_path(by, day)}"
    if prefix.startswith(("s3a://", "s3://")):
        from jobs.io import objectstore

        bucket, _, key = prefix.split("://", 1)[1].partition("/")
        listing = objectstore.client(env).list_objects_v2(Bucket=bucket, Prefix=f"{key}/")
        return any(o["Key"].endswith(MANIFEST) for o in listing.get("Contents", []))
    local = Path(prefix.removeprefix("file://"))
    return (local / MANIFEST).exists() or any(local.glob(f"*/{MANIFEST}"))
