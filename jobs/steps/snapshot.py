"""Training snapshots: the labelled window known on a day, written as Parquet and versioned by DVC.

A snapshot holds every feature row of the window's days with its label (null when the
label is missing: the label contract then quarantines it), one sorted Parquet file per
day under `dt=<day>/part-0.parquet`, and `_window.json` with the window and the row
counts. The same rows always give the same bytes, so DVC's hash identifies the data.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from pyspark.sql import functions as F

from jobs.config import ModelSpec, TrainParams
from jobs.contracts.validate import require_columns
from jobs.errors import PartitionNotFound, SnapshotMismatch

log = logging.getLogger(__name__)

WINDOW_FILE = "_window.json"


@dataclass(frozen=True)
class Window:
    """The labelled days a model is trained on; the last `holdout_days` are held out."""

    as_of: date
    first: date
    last: date
    holdout_first: date

    def as_dict(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> Window:
        return cls(**{k: date.fromisoformat(d[k]) for k in ("as_of", "first", "last", "holdout_first")})


def choose_window(label_days: list[date], as_of: date, window_days: int, holdout_days: int,
                  delay_days: int) -> Window:
    """The latest `window_days` labelled days whose labels were known on `as_of`."""
    known = sorted(d for d in label_days if d + timedelta(days=delay_days) <= as_of)
    if len(known) < holdout_days + 2:
        raise PartitionNotFound(
            f"only {len(known)} labelled day(s) known as of {as_of}; training needs at least "
            f"{holdout_days + 2} (labels arrive {delay_days} days late): generate more days or move --as-of later"
        )
    days = known[-window_days:]
    return Window(as_of=as_of, first=days[0], last=days[-1], holdout_first=days[-holdout_days])


def write(lake, spec: ModelSpec, train: TrainParams, as_of: date, out: Path) -> dict:
    """Write the window known on `as_of` into `out` (replacing it); return what _window.json records."""
    window = choose_window(lake.partitions(spec.label.table), as_of, train.window_days, train.holdout_days,
                           spec.label.delay_days)
    features = lake.read_range(spec.table, window.first, window.last)
    require_columns(spec, features, spec.table, (spec.key, *spec.features.all))
    raw_labels = lake.read_range(spec.label.table, window.first, window.last)
    require_columns(spec, raw_labels, spec.label.table, (spec.key, spec.label.column, "available_at"))
    labels = (raw_labels
              .where(F.col("available_at") <= F.lit(as_of))
              .select(spec.key, "dt", spec.label.column, "available_at"))
    rows = features.join(labels, [spec.key, "dt"], "left")
    counts = {r["dt"].isoformat(): int(r["count"]) for r in rows.groupBy("dt").count().collect()}
    orphans = labels.join(features.select(spec.key, "dt"), [spec.key, "dt"], "left_anti").count()
    if out.exists():
        shutil.rmtree(out)
    staging = out.with_name(f".{out.name}.staging")
    if staging.exists():
        shutil.rmtree(staging)
    for day in sorted(counts):
        write_day(rows.where(F.col("dt") == F.lit(date.fromisoformat(day))).drop("dt").orderBy(spec.key),
                  staging / f"dt={day}" / "part-0.parquet")
    record = {"window": window.as_dict(), "rows": sum(counts.values()), "rows_per_day": dict(sorted(counts.items())),
              "labels_without_features": orphans}
    (staging / WINDOW_FILE).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    staging.rename(out)
    log.info("snapshot %s..%s (as of %s): %d rows in %s", window.first, window.last, as_of, record["rows"], out)
    if orphans:
        log.warning("%d label rows in the window have no feature row; they are not in the snapshot", orphans)
    return record


def write_day(rows, path: Path) -> None:
    """One day's rows as one Parquet file, written by pyarrow so the same rows give the same bytes.

    (Spark's Parquet writer lists column encodings in hash-set order, which changes the
    bytes from one run to the next; the rows of a training window fit the driver anyway,
    since training loads them.)
    """
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows.toArrow(), path, compression="snappy", write_statistics=True)


def read_window(folder: Path) -> dict:
    """The snapshot's _window.json; a folder without it is not a snapshot."""
    path = folder / WINDOW_FILE
    if not path.exists():
        raise SnapshotMismatch(f"{folder} is not a training snapshot (no {WINDOW_FILE}): "
                               "write one with `batchloop snapshot`")
    return json.loads(path.read_text())


def read(spark, folder: Path):
    """The snapshot's rows as a Spark DataFrame (with `dt` from the folder names)."""
    read_window(folder)
    return spark.read.option("basePath", folder.resolve().as_uri()).parquet(folder.resolve().as_uri())
