"""Per-feature histograms of a Spark DataFrame in one pass, for reference profiles and drift.

One `mapInArrow` job: every Python worker folds its Arrow batches into small
accumulators (per numeric column: counts and value sums per bin against fixed edges,
missing values, min, max, sum, sum of squares; per categorical column: value counts; a
bounded sample of rows), optionally per group (a day); the driver merges the few
accumulators that come back. No rows reach the driver except the bounded sample.

Bins are right-closed, as `numpy.searchsorted(edges, x, side="left")` numbers them:
bin 0 is (-inf, e0], bin i is (e[i-1], e[i]], the last is (e[-1], inf). NaN, +-inf and
null count as missing, not in any bin.
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql.types import BinaryType, StructField, StructType

ALL = "__all__"  # the group of every row when no group column is given


@dataclass
class NumericHistogram:
    """Counts and value sums per bin, with the moments drift tests need."""

    edges: np.ndarray
    counts: np.ndarray
    sums: np.ndarray
    missing: int = 0
    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    min: float = np.inf
    max: float = -np.inf

    @classmethod
    def empty(cls, edges: np.ndarray) -> NumericHistogram:
        return cls(edges, np.zeros(len(edges) + 1, np.int64), np.zeros(len(edges) + 1))

    def add(self, values: np.ndarray) -> None:
        finite = np.isfinite(values)
        self.missing += int(values.size - finite.sum())
        x = values[finite]
        if x.size == 0:
            return
        idx = np.searchsorted(self.edges, x, side="left")
        self.counts += np.bincount(idx, minlength=self.counts.size)
        self.sums += np.bincount(idx, weights=x, minlength=self.sums.size)
        self.n += int(x.size)
        self.total += float(x.sum())
        self.total_sq += float(np.dot(x, x))
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))

    def merge(self, other: NumericHistogram) -> None:
        self.counts += other.counts
        self.sums += other.sums
        self.missing += other.missing
        self.n += other.n
        self.total += other.total
        self.total_sq += other.total_sq
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else float("nan")

    @property
    def std(self) -> float:
        """Population standard deviation (ddof=0)."""
        if self.n == 0:
            return float("nan")
        var = self.total_sq / self.n - self.mean ** 2
        return float(np.sqrt(max(var, 0.0)))

    def coarse(self, keep: np.ndarray) -> np.ndarray:
        """Counts on a subset of the edges (indices into edges, sorted): bins merged, exactly."""
        bounds = np.concatenate([keep + 1, [self.counts.size]])
        starts = np.concatenate([[0], keep + 1])
        return np.array([self.counts[a:b].sum() for a, b in zip(starts, bounds, strict=True)], np.int64)


@dataclass
class CategoryCounts:
    counts: dict[str, int] = field(default_factory=dict)
    missing: int = 0

    def add(self, values: pa.Array) -> None:
        self.missing += values.null_count
        for item in pc.value_counts(values.drop_null()).to_pylist():
            key = str(item["values"])
            self.counts[key] = self.counts.get(key, 0) + int(item["counts"])

    def merge(self, other: CategoryCounts) -> None:
        self.missing += other.missing
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v

    @property
    def n(self) -> int:
        return sum(self.counts.values())


@dataclass
class Sample:
    """The rows with the smallest hash-derived priorities: a uniform sample without replacement."""

    size: int
    columns: tuple[str, ...]
    priority: np.ndarray = field(default_factory=lambda: np.empty(0))
    rows: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))

    def add(self, priority: np.ndarray, matrix: np.ndarray) -> None:
        if self.size == 0:
            return
        p = np.concatenate([self.priority, priority]) if self.priority.size else priority
        m = np.vstack([self.rows, matrix]) if self.rows.size else matrix
        if p.size > self.size:
            keep = np.argpartition(p, self.size - 1)[: self.size]
            p, m = p[keep], m[keep]
        self.priority, self.rows = p, m

    def merge(self, other: Sample) -> None:
        if other.priority.size:
            self.add(other.priority, other.rows)


@dataclass
class Profile:
    """Histograms of one group of rows."""

    rows: int
    numeric: dict[str, NumericHistogram]
    categorical: dict[str, CategoryCounts]
    sample: Sample

    def merge(self, other: Profile) -> None:
        self.rows += other.rows
        for k, h in other.numeric.items():
            self.numeric[k].merge(h)
        for k, c in other.categorical.items():
            self.categorical[k].merge(c)
        self.sample.merge(other.sample)


def _empty(edges: dict[str, np.ndarray], categorical: tuple[str, ...], sample_rows: int,
           sample_columns: tuple[str, ...]) -> Profile:
    return Profile(0, {c: NumericHistogram.empty(e) for c, e in edges.items()},
                   {c: CategoryCounts() for c in categorical}, Sample(sample_rows, sample_columns))


def _as_float(column: pa.Array) -> np.ndarray:
    if pa.types.is_floating(column.type) and column.null_count == 0:
        return column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    return column.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)


def fold(batches: Iterator[pa.RecordBatch], edges: dict[str, np.ndarray], categorical: tuple[str, ...],
         group: str | None, sample_rows: int, priority_col: str | None,
         sample_columns: tuple[str, ...] | None = None) -> dict[str, Profile]:
    """Fold Arrow batches into one Profile per group (pure: usable without Spark)."""
    sampled = tuple(edges) if sample_columns is None else sample_columns
    out: dict[str, Profile] = {}
    for batch in batches:
        groups = [ALL] if group is None else [str(g) for g in pc.unique(batch.column(group)).to_pylist()]
        for g in groups:
            part = batch if group is None else batch.filter(pc.equal(pc.cast(batch.column(group), pa.string()), g))
            prof = out.setdefault(g, _empty(edges, categorical, sample_rows, sampled))
            prof.rows += part.num_rows
            matrix = []
            for col, hist in prof.numeric.items():
                values = _as_float(part.column(col))
                hist.add(values)
                if col in sampled:
                    matrix.append(values)
            for col, counts in prof.categorical.items():
                counts.add(part.column(col).cast(pa.string()))
            if sample_rows and priority_col is not None and matrix:
                prio = part.column(priority_col).to_numpy(zero_copy_only=False)
                prof.sample.add(prio, np.column_stack(matrix))
    return out


def collect(df: DataFrame, edges: dict[str, np.ndarray], categorical: tuple[str, ...], group: str | None = None,
            sample_rows: int = 0, sample_key: str | None = None,
            sample_columns: tuple[str, ...] | None = None) -> dict[str, Profile]:
    """Run the one-pass aggregation over df and merge the per-worker results in the driver."""
    from pyspark.sql import functions as F

    edges = {c: np.asarray(e, dtype=np.float64) for c, e in edges.items()}
    priority_col = None
    if sample_rows and sample_key:
        priority_col = "__priority"
        df = df.withColumn(priority_col, F.xxhash64(F.col(sample_key), F.lit("sample")))
    wanted = [*edges, *categorical, *([group] if group else []), *([priority_col] if priority_col else [])]
    schema = StructType([StructField("state", BinaryType())])

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        state = fold(batches, edges, categorical, group, sample_rows, priority_col, sample_columns)
        blob = zlib.compress(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), 1)
        yield pa.RecordBatch.from_arrays([pa.array([blob], pa.binary())], names=["state"])

    merged: dict[str, Profile] = {}
    for row in df.select(*wanted).mapInArrow(run, schema).collect():
        for g, prof in pickle.loads(zlib.decompress(row["state"])).items():  # noqa: S301 - our own workers' state
            if g in merged:
                merged[g].merge(prof)
            else:
                merged[g] = prof
    return merged


def overall(profiles: dict[str, Profile]) -> Profile:
    """All groups merged into one."""
    groups = iter(profiles.values())
    first = next(groups)
    total = pickle.loads(pickle.dumps(first))
    for prof in groups:
        total.merge(prof)
    return total
