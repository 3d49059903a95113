"""Performance on matured labels: what production served on day D-30, judged by the labels known on D.

One aggregation per run and task. Binary models: scores (and shadow scores) joined with
the day's labels are counted per model version and score bin (10,000 bins of the [0, 1]
score range), and AUC, log loss, Brier score and calibration error are computed from
those counts; AUC treats scores within one bin as tied, which moves it by well under
1e-4. Regression models: sums of errors, squared errors and outcomes per version give
RMSE, MAE and R-squared exactly; the calibration error uses prediction deciles from
Spark's approximate percentiles (relative error 1e-4) and a second, grouped pass.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import TASK_METRICS, ModelSpec
from jobs.io.lake import Lake

log = logging.getLogger(__name__)

SCORE_BINS = 10_000
CALIBRATION_BINS = 10

# one table for both tasks: a binary model's rows leave the regression metrics empty and the other way round
SCHEMA = T.StructType([
    T.StructField("source", T.StringType()), T.StructField("model_name", T.StringType()),
    T.StructField("model_version", T.StringType()), T.StructField("rows", T.LongType()),
    T.StructField("positives", T.LongType()), T.StructField("auc", T.DoubleType()),
    T.StructField("log_loss", T.DoubleType()), T.StructField("brier", T.DoubleType()),
    T.StructField("calibration_error", T.DoubleType()), T.StructField("measured_on", T.DateType()),
    T.StructField("computed_at", T.TimestampType()), T.StructField("task", T.StringType()),
    T.StructField("label_mean", T.DoubleType()), T.StructField("rmse", T.DoubleType()),
    T.StructField("mae", T.DoubleType()), T.StructField("r2", T.DoubleType()),
])
KEYS = ("source", "model_name", "model_version")


def auc_from_bins(positives: np.ndarray, negatives: np.ndarray) -> float:
    """AUC from per-bin label counts in ascending score order; a bin's pairs count as ties."""
    pos, neg = np.asarray(positives, float), np.asarray(negatives, float)
    if pos.sum() == 0 or neg.sum() == 0:
        return float("nan")
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def calibration_from_bins(count: np.ndarray, score_sum: np.ndarray, label_sum: np.ndarray) -> float:
    """Expected calibration error over equal-width bins."""
    return float(np.abs(score_sum - label_sum).sum() / max(count.sum(), 1))


def measure(joined, label: str, task: str = "binary", bins: int = CALIBRATION_BINS) -> list[dict[str, Any]]:
    """Quality per (source, model version) over scored, labelled rows, with the task's metrics."""
    return measure_binary(joined, label, bins) if task == "binary" else measure_regression(joined, label, bins)


def measure_regression(joined, label: str, bins: int = CALIBRATION_BINS) -> list[dict[str, Any]]:
    """RMSE, MAE, R-squared and the decile calibration error per (source, model version)."""
    y = F.col(label).cast("double")
    e = F.col("score") - y
    levels = [i / bins for i in range(1, bins)]
    stats = {tuple(r[k] for k in KEYS): r for r in joined.groupBy(*KEYS).agg(
        F.count(F.lit(1)).alias("n"), F.sum(e * e).alias("sq"), F.sum(F.abs(e)).alias("ab"), F.sum(y).alias("sy"),
        F.sum(y * y).alias("syy"), F.percentile_approx("score", levels, 10_000).alias("edges")).collect()}
    if not stats:
        return []
    edges = joined.sparkSession.createDataFrame(
        [(*k, sorted(set(float(x) for x in r["edges"]))) for k, r in stats.items()],
        T.StructType([*(T.StructField(k, T.StringType()) for k in KEYS),
                      T.StructField("edges", T.ArrayType(T.DoubleType()))]))
    # a row's bin: how many edges are at or below its prediction (numpy's searchsorted, side right)
    binned = joined.join(F.broadcast(edges), list(KEYS)).withColumn(
        "bin", F.size(F.filter("edges", lambda x: x <= F.col("score"))))
    gaps: dict[tuple, float] = {}
    for r in binned.groupBy(*KEYS, "bin").agg(F.sum(e).alias("gap")).collect():
        key = tuple(r[k] for k in KEYS)
        gaps[key] = gaps.get(key, 0.0) + abs(float(r["gap"]))
    out = []
    for key, r in sorted(stats.items()):
        n = float(r["n"])
        mean = r["sy"] / n
        variance = max(r["syy"] / n - mean * mean, 0.0)
        total = r["syy"] - r["sy"] * r["sy"] / n
        out.append({**dict(zip(KEYS, key, strict=True)), "task": "regression", "rows": int(n),
                    "label_mean": float(mean), "rmse": float(np.sqrt(r["sq"] / n)), "mae": float(r["ab"] / n),
                    "r2": float(1 - r["sq"] / total) if total > 0 else float("nan"),
                    "calibration_error": float(gaps.get(key, 0.0) / n / np.sqrt(variance))
                    if variance > 0 else float("nan")})
    return out


def measure_binary(joined, label: str, bins: int = CALIBRATION_BINS) -> list[dict[str, Any]]:
    """Quality per (source, model version) from one grouped aggregation over scored, labelled rows."""
    p = F.least(F.greatest(F.col("score"), F.lit(1e-15)), F.lit(1 - 1e-15))
    y = F.col(label).cast("double")
    binned = joined.withColumn("bin", F.least(F.floor(F.col("score") * SCORE_BINS), F.lit(SCORE_BINS - 1)).cast("int"))
    rows = (binned.groupBy("source", "model_name", "model_version", "bin")
            .agg(F.count(F.lit(1)).alias("n"), F.sum(y).alias("pos"), F.sum("score").alias("ssum"),
                 F.sum(-(y * F.log(p) + (1 - y) * F.log(1 - p))).alias("ll"),
                 F.sum((F.col("score") - y) ** 2).alias("sq"))
            .collect())
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["source"], r["model_name"], r["model_version"]), []).append(r)
    out = []
    for (source, name, version), items in sorted(groups.items()):
        items.sort(key=lambda r: r["bin"])
        n = np.array([r["n"] for r in items], float)
        pos = np.array([r["pos"] for r in items], float)
        ssum = np.array([r["ssum"] for r in items], float)
        coarse = np.array([r["bin"] * bins // SCORE_BINS for r in items])
        cal = calibration_from_bins(np.bincount(coarse, n, bins), np.bincount(coarse, ssum, bins),
                                    np.bincount(coarse, pos, bins))
        total = n.sum()
        out.append({"source": source, "model_name": name, "model_version": version, "task": "binary",
                    "rows": int(total),
                    "positives": int(pos.sum()), "auc": auc_from_bins(pos, n - pos),
                    "log_loss": float(sum(r["ll"] for r in items) / total),
                    "brier": float(sum(r["sq"] for r in items) / total), "calibration_error": cal})
    return out


def run(spec: ModelSpec, lake: Lake, day: date, namespaces: tuple[Lake, ...] = ()) -> dict[str, Any]:
    """Judge the scores served on day - label delay with the labels that matured by `day`."""
    scored_day = day - timedelta(days=spec.label.delay_days)
    frames = []
    for table in ("scores", "scores_shadow"):
        if scored_day in lake.partitions(table, spec.partition):
            frames.append(lake.read_partition(table, scored_day, spec.partition)
                          .select(spec.key, "score", "model_name", "model_version", F.lit(table).alias("source")))
    if not frames:
        log.warning("nothing was scored on %s (whose labels matured on %s): nothing to measure", scored_day, day)
        return {"scored_day": scored_day.isoformat(), "labels_matured_on": day.isoformat(), "results": [],
                "skipped": f"nothing was scored on {scored_day}"}
    labels = lake.read_partition(spec.label.table, scored_day).where(F.col("available_at") <= F.lit(day)) \
        .select(spec.key, spec.label.column)
    served = frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])
    results = measure(served.join(labels, spec.key, "inner"), spec.label.column, spec.task, spec.gate.calibration_bins)
    now = datetime.now(UTC)
    rows = [{**{f.name: None for f in SCHEMA.fields}, **r, "measured_on": day, "computed_at": now} for r in results]
    lake.write_partition(lake.spark.createDataFrame(rows, SCHEMA), "performance_metrics", scored_day,
                         {"labels_matured_on": day.isoformat()}, by=spec.partition)
    for r in results:
        log.info("%s %s v%s on %s: %s (%d rows)", r["source"], r["model_name"], r["model_version"], scored_day,
                 ", ".join(f"{m} {r[m]:.4f}" for m in TASK_METRICS[spec.task]), r["rows"])
    return {"scored_day": scored_day.isoformat(), "labels_matured_on": day.isoformat(), "results": results}
