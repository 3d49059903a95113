"""Benchmark: drift of 5M current rows against a 1M-row reference, against Evidently and exact scipy.

    make bench            (BENCH_REFERENCE_ROWS=1000000, BENCH_CURRENT_ROWS=5000000 by default)

20 numeric columns (normal, log-normal, exponential, Poisson) and 4 categorical ones
(3 to 30 categories) plus a score column, written once as Parquet. The current data
drifts on purpose in a few columns: a mean shift, a wider spread, 5% missing values,
changed category shares and a new category. On the same files in one run:

- batchloop: the reference profile built as training builds it (timed on its own), then
  the drift job's work for a day as `drift.collect_day` does it: one Spark job whose Python
  workers read the Parquet files' row groups themselves and fold features and scores into
  histograms (`drift.collect_partitions`), Spark's row counts of both sides to reconcile, and
  every statistic and verdict (`drift.compare`); beside it the same with every row handed
  from Spark to the workers (`drift.collect`, what the job did before);
- Evidently's DataDriftPreset on the two pandas frames (reading them is timed apart);
- the exact baseline: scipy/numpy on the raw values (tests/exact_drift.py), for the
  largest deviation of each statistic and the verdicts.
batchloop: median of 3 after a warm-up; Evidently and the exact baseline take minutes,
so one run each. Peak resident memory of this process tree per phase.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

import exact_drift  # noqa: E402
from measure import PeakMemory, timed, write  # noqa: E402

from jobs.config import Env, load_params  # noqa: E402
from jobs.core import drift_stats
from jobs.core.reference import build_profile  # noqa: E402
from jobs.io.lake import FileOpener  # noqa: E402
from jobs.io.spark import build_session  # noqa: E402
from jobs.steps import drift  # noqa: E402

NUMERIC = [f"n{i:02d}" for i in range(20)]
CATEGORICAL = {"c0": 5, "c1": 12, "c2": 3, "c3": 30}
CHUNK = 500_000
DAY = date(2026, 3, 1)


def chunk(rows: int, seed: int, current: bool, first_key: int) -> pa.Table:
    """One chunk of data; the current side drifts in n00 (mean), n01 (spread), n05 (missing), c1 and c3."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {"id": np.arange(first_key, first_key + rows, dtype=np.int64)}
    for i, name in enumerate(NUMERIC):
        kind = i % 4
        if kind == 0:
            x = rng.normal(i, 1 + i / 10, rows) + (0.25 * (1 + i / 10) if current and i == 0 else 0.0)
        elif kind == 1:
            x = rng.lognormal(0, (0.5 + i / 40) * (1.3 if current and i == 1 else 1.0), rows)
        elif kind == 2:
            x = rng.exponential(1 + i / 5, rows)
        else:
            x = rng.poisson(3 + i, rows).astype(np.float64)
        if current and i == 5:
            x[rng.uniform(size=rows) < 0.05] = np.nan
        cols[name] = x
    for name, k in CATEGORICAL.items():
        weights = np.arange(1, k + 1, dtype=float)
        if current and name == "c1":
            weights = weights[::-1] ** 0.5
        values = np.array([f"{name}_{j}" for j in range(k)], dtype=object)
        picked = values[rng.choice(k, size=rows, p=weights / weights.sum())]
        if current and name == "c3":
            picked[rng.uniform(size=rows) < 0.05] = f"{name}_new"
        cols[name] = picked
    z = 0.6 * (cols["n00"] - 0) - 0.4 * np.log(cols["n01"]) + 0.02 * cols["n03"] + rng.normal(0, 1, rows)
    cols["score"] = 1 / (1 + np.exp(-(z - 1)))
    cols["dt"] = np.array([DAY - timedelta(days=int(d)) for d in cols["id"] % 7]) if not current else \
        np.full(rows, DAY)
    return pa.table(cols)


def write_side(folder: Path, rows: int, current: bool) -> list[str]:
    folder.mkdir(parents=True)
    files = []
    for n, start in enumerate(range(0, rows, CHUNK)):
        path = folder / f"part-{n:04d}.parquet"
        pq.write_table(chunk(min(CHUNK, rows - start), 1000 * current + n, current, start), path)
        files.append(str(path))
    return files


def ours_statistics(result: dict) -> dict[str, dict[str, float]]:
    out = {f["feature"]: {m["method"]: m["statistic"] for m in f["methods"]} for f in result["features"]}
    out["score"] = {m["method"]: m["statistic"] for m in result["prediction"]["methods"]}
    return out


def exact_statistics(ref: pd.DataFrame, cur: pd.DataFrame, profile: dict) -> dict[str, dict[str, float]]:
    out = {}
    for c in [*NUMERIC, "score"]:
        p = profile["score"] if c == "score" else profile["numeric"][c]
        coarse_edges = np.asarray(p["edges"], float)[np.asarray(p["coarse"], int)]
        out[c] = exact_drift.numeric(ref[c].dropna().to_numpy(), cur[c].dropna().to_numpy(), coarse_edges)
    for c in CATEGORICAL:
        out[c] = exact_drift.categorical(ref[c].astype(object), cur[c].astype(object))
    return out


def deviations(ours: dict, exact: dict) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The largest deviation of each statistic over all columns (relative for Wasserstein, else absolute),
    and every column's deviations."""
    worst: dict[str, float] = {}
    per_column: dict[str, dict[str, float]] = {}
    for col, stats in exact.items():
        for method, truth in stats.items():
            mine = ours[col][method]
            if np.isinf(truth) and np.isinf(mine):
                dev = 0.0
            elif method == "wasserstein":
                dev = abs(mine - truth) / max(abs(truth), 1e-12)
            else:
                dev = abs(mine - truth)
            per_column.setdefault(col, {})[method] = float(dev)
            worst[method] = max(worst.get(method, 0.0), float(dev))
            if method == "wasserstein":  # tiny distances (no drift) make relative errors large: the absolute too
                worst["wasserstein_absolute"] = max(worst.get("wasserstein_absolute", 0.0), abs(mine - truth))
    return worst, per_column


def verdicts_agree(result: dict, exact: dict) -> list[str]:
    """Columns whose decisive verdict would differ if computed from the exact statistic."""
    differ = []
    for f in result["features"]:
        m = next(x for x in f["methods"] if x["decisive"])
        if m["method"] in drift_stats.P_VALUE_METHODS:
            continue
        if drift_stats.drifted(m["method"], exact[f["feature"]][m["method"]], None, m["threshold"]) != m["drifted"]:
            differ.append(f["feature"])
    return differ


def jvm_binning(features, profile: dict) -> int:
    """The JVM alternative to the Python fold, reduced to its core (a lower bound on its work):
    every numeric feature binned among the same edges by Spark ML's Bucketizer (a binary search
    in the JVM, on -x among the negated edges: its buckets are left-closed, ours right-closed),
    unpivoted with `stack` and counted per (column, bin) with value sums in one hash aggregation.
    No categorical counts, no sample, no statistics. Returns the number of (column, bin) cells."""
    from pyspark.ml.feature import Bucketizer
    from pyspark.sql import functions as F

    cols = {f"b{i}": c for i, c in enumerate(NUMERIC)}
    edges = {b: np.asarray(profile["numeric"][c]["edges"], float) for b, c in cols.items()}
    x = {c: F.when(F.isnan(F.col(c)), None).otherwise(F.col(c)) for c in NUMERIC}
    df = features.select(*[x[c].alias(c) for c in NUMERIC], *[(-(x[c] + F.lit(0.0))).alias(f"{b}_neg")
                                                              for b, c in cols.items()])
    df = Bucketizer(splitsArray=[[-np.inf, *(-(e[::-1])).tolist(), np.inf] for e in edges.values()],
                    inputCols=[f"{b}_neg" for b in cols], outputCols=[f"{b}_bucket" for b in cols],
                    handleInvalid="keep").transform(df)
    entries = []
    for i, (b, c) in enumerate(cols.items()):
        entries += [F.lit(i).cast("long") * F.lit(1 << 32) + (F.lit(edges[b].size) - F.col(f"{b}_bucket")).cast("long"),
                    F.col(c)]
    cells = df.select(F.stack(F.lit(len(cols)), *entries).alias("cell", "v")).where(F.col("v").isNotNull()) \
        .groupBy("cell").agg(F.count(F.lit(1)).alias("n"), F.sum("v").alias("s"))
    return cells.toArrow().num_rows


def evidently_report(ref: pd.DataFrame, cur: pd.DataFrame):
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=[*NUMERIC, "score"], categorical_columns=list(CATEGORICAL))
    snapshot = Report([DataDriftPreset()]).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition))
    return snapshot.dict()["metrics"][0]["value"]


def main() -> None:
    ref_rows = int(os.environ.get("BENCH_REFERENCE_ROWS", "1000000"))
    cur_rows = int(os.environ.get("BENCH_CURRENT_ROWS", "5000000"))
    cores = os.cpu_count() or 1
    spec = load_params().model("churn")
    spec = spec.model_copy(update={"key": "id", "features": spec.features.model_copy(update={
        "numeric": tuple(NUMERIC), "categorical": tuple(CATEGORICAL)})})
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="batchloop-bench-") as tmp:
        t0 = time.perf_counter()
        ref_files = write_side(Path(tmp) / "reference", ref_rows, False)
        cur_files = write_side(Path(tmp) / "current", cur_rows, True)
        print(f"wrote {ref_rows:,} reference and {cur_rows:,} current rows x {len(NUMERIC)} numeric + "
              f"{len(CATEGORICAL)} categorical + score in {time.perf_counter() - t0:.0f} s")
        env = Env(_env_file=None, state_dir=Path(tmp), lake_format="parquet", lake_root=f"{tmp}/lake",
                  spark_driver_memory="4g")
        spark = build_session(env, "bench-drift")
        spark.conf.set("spark.sql.files.maxPartitionBytes", str(32 << 20))
        reference = spark.read.parquet(*ref_files)
        current = spark.read.parquet(*cur_files)
        importance = {c: 1.0 for c in [*NUMERIC, *CATEGORICAL]}

        def profile_once() -> dict:
            frame = pq.ParquetDataset(ref_files).read(columns=[*NUMERIC, "score"]).to_pandas()
            built = build_profile(reference, frame, spec, spec.drift, frame["score"].to_numpy(), importance)
            return json.loads(json.dumps(built, default=drift._json_default))  # as the job loads it

        with PeakMemory() as peak:
            profile_s, _ = timed(profile_once, repeats=1)
            profile = profile_once()
        figures["reference_profile"] = {"seconds": round(profile_s, 2), "peak_rss_gib": peak.gib}

        features, scores = current.drop("score"), current.select("id", "score")
        files = tuple(cur_files)

        def job() -> dict:
            """What the drift step does with a day's partitions (`drift.collect_day`): the workers fold the
            files, Spark counts the rows of both sides to reconcile, then every statistic."""
            day = drift.collect_partitions(features, scores, files, files, profile, spec, None, FileOpener(None),
                                           "bench")
            return drift.compare(profile, day, spec)

        def through_spark() -> dict:
            """The same with every row handed from Spark to the Python workers (`drift.collect`)."""
            return drift.compare(profile, drift.collect(features, scores, profile, spec), spec)

        with PeakMemory() as peak:
            job_s, job_runs = timed(job)
        result = job()
        with PeakMemory() as spark_peak:
            spark_s, spark_runs = timed(through_spark)
        handed = through_spark()
        with PeakMemory() as jvm_peak:
            jvm_s, jvm_runs = timed(lambda: jvm_binning(features, profile), repeats=1)
        figures["rows_through_spark"] = {"median_s": round(spark_s, 2), "runs_s": [round(x, 2) for x in spark_runs],
                                         "current_rows_per_s": round(cur_rows / spark_s), "peak_rss_gib": spark_peak.gib,
                                         "drifted": sorted(handed["dataset"]["drifted_features"]),
                                         "what": "every row handed from Spark to the Python workers (drift.collect)"}
        figures["jvm_binning_core"] = {"seconds": round(jvm_s, 2), "current_rows_per_s": round(cur_rows / jvm_s),
                                       "peak_rss_gib": jvm_peak.gib,
                                       "what": "Bucketizer + stack + one hash aggregation, numeric counts and sums only"}
        figures["batchloop"] = {"median_s": round(job_s, 2), "runs_s": [round(x, 2) for x in job_runs],
                                "current_rows_per_s": round(cur_rows / job_s), "peak_rss_gib": peak.gib,
                                "share_drifted": result["dataset"]["share_drifted"],
                                "drifted": sorted(result["dataset"]["drifted_features"])}
        spark.stop()

        t0 = time.perf_counter()
        ref_pd, cur_pd = pd.read_parquet(ref_files), pd.read_parquet(cur_files)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        exact = exact_statistics(ref_pd, cur_pd, profile)
        exact_s = time.perf_counter() - t0
        worst, per_column = deviations(ours_statistics(result), exact)
        differ = verdicts_agree(result, exact)
        figures["exact_scipy"] = {"seconds": round(exact_s, 2), "largest_deviation": worst,
                                  "verdicts_that_differ": differ, "exact": exact, "deviation": per_column}
        try:
            with PeakMemory() as peak:
                t0 = time.perf_counter()
                ev = evidently_report(ref_pd, cur_pd)
                ev_s = time.perf_counter() - t0
            figures["evidently"] = {"seconds": round(ev_s, 2), "pandas_load_s": round(load_s, 2),
                                    "peak_rss_gib": peak.gib, "drifted_columns": ev.get("count"),
                                    "share_drifted": ev.get("share")}
        except ImportError:
            print("Evidently is not installed: `make bench` installs requirements-bench.lock")
            figures["evidently"] = None

    total_s = figures["batchloop"]["median_s"] + figures["reference_profile"]["seconds"]
    ev = figures["evidently"]
    result_json = {
        "reference_rows": ref_rows, "current_rows": cur_rows, "numeric": len(NUMERIC),
        "categorical": len(CATEGORICAL), "spark": f"local[{cores}]", **figures,
        "speedup_vs_evidently": round(ev["seconds"] / figures["batchloop"]["median_s"], 1) if ev else None,
        "speedup_vs_evidently_incl_profile": round(ev["seconds"] / total_s, 1) if ev else None,
        "goal_speedup_at_least": 10, "goal_rows_per_s_at_least": 1_500_000,
        "accuracy_goals": {"psi": 1e-9, "jensenshannon": 1e-9, "chisquare": 1e-9, "ks": 0.002, "wasserstein": 0.01},
    }
    path = write("drift", result_json)
    b = figures["batchloop"]
    print(f"\ndrift benchmark: reference {ref_rows:,} rows, current {cur_rows:,} rows, "
          f"{len(NUMERIC)} numeric + {len(CATEGORICAL)} categorical columns + score")
    print(f"  {'':52} {'seconds':>8} {'rows/s':>12} {'peak RSS':>9}")
    print(f"  {'batchloop drift job (workers read the files + statistics)':52} {b['median_s']:8.2f} "
          f"{b['current_rows_per_s']:12,} {b['peak_rss_gib']:7.2f} GiB")
    r = figures["rows_through_spark"]
    print(f"  {'the same, every row handed over by Spark (drift.collect)':52} {r['median_s']:8.2f} "
          f"{r['current_rows_per_s']:12,} {r['peak_rss_gib']:7.2f} GiB")
    j = figures["jvm_binning_core"]
    print(f"  {'JVM binning, its core only (Bucketizer + stack + agg)':52} {j['seconds']:8.2f} "
          f"{j['current_rows_per_s']:12,} {j['peak_rss_gib']:7.2f} GiB")
    print(f"  {'batchloop reference profile (at training time)':52} {figures['reference_profile']['seconds']:8.2f}"
          f" {'':12} {figures['reference_profile']['peak_rss_gib']:7.2f} GiB")
    if ev:
        print(f"  {'Evidently DataDriftPreset on pandas (baseline)':52} {ev['seconds']:8.2f} "
              f"{round(cur_rows / ev['seconds']):12,} {ev['peak_rss_gib']:7.2f} GiB   (+{load_s:.1f} s to load)")
        print(f"  speed-up vs Evidently: {result_json['speedup_vs_evidently']}x (goal >= 10x); "
              f"{result_json['speedup_vs_evidently_incl_profile']}x counting the reference profile")
    print(f"  {'exact scipy/numpy on the raw values':52} {exact_s:8.2f}")
    print("  largest deviation from exact: " + ", ".join(
        f"{m} {v:.2g}{' (relative)' if m == 'wasserstein' else ''}" for m, v in sorted(worst.items())))
    print(f"  verdicts that differ from exact: {differ or 'none'}; drifted here: {', '.join(b['drifted'])}"
          + (f"; Evidently: {ev['drifted_columns']} columns" if ev else ""))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
