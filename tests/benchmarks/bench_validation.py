"""Benchmark: validating the feature contract against one plain Spark aggregation pass.

    make bench            (BENCH_ROWS=5000000 by default)

Both read the same Parquet partition in one run. The plain pass computes the same
quantities (row count, each rule's failing rows, null counts, duplicate keys) with no
annotation, quarantine or report; the contract run is `validate_frame` as training and
scoring call it. Medians of 3 after a warm-up; written to results/validation.json.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from measure import PeakMemory, timed, write  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from jobs.config import Env, load_params  # noqa: E402
from jobs.contracts.contract import failing, load_contract  # noqa: E402
from jobs.contracts.validate import validate_frame  # noqa: E402
from jobs.demo import generate  # noqa: E402
from jobs.io.lake import Lake  # noqa: E402
from jobs.io.spark import build_session  # noqa: E402

DAY = date(2026, 1, 20)


def plain_pass(df, contract) -> dict:
    """The same counts as one aggregation: what any hand-written check would have to compute."""
    aggs = [F.count(F.lit(1)).alias("rows")]
    for i, e in enumerate(contract.expectations):
        if e.type == "expect_column_values_to_be_unique":
            aggs.append((F.count(e.kwargs["column"]) - F.countDistinct(e.kwargs["column"])).alias(f"e{i}"))
        elif e.type.startswith("expect_column_values_to_") and e.type != "expect_column_values_to_be_of_type":
            aggs.append(F.sum(failing(e, df).cast("long")).alias(f"e{i}"))
    return df.agg(*aggs).first().asDict()


def main() -> None:
    rows = int(os.environ.get("BENCH_ROWS", "5000000"))
    params = load_params()
    spec, generator = params.model("churn"), params.generator
    with tempfile.TemporaryDirectory(prefix="batchloop-bench-") as tmp:
        env = Env(_env_file=None, state_dir=Path(tmp), lake_format="parquet", lake_root=f"{tmp}/lake",
                  spark_driver_memory="6g")
        spark = build_session(env, "bench-validation")
        lake = Lake(spark, env)
        t0 = time.perf_counter()
        generate.run(generator, spec, lake, DAY, 1, rows, generator.seed)
        print(f"generated {rows:,} rows in {time.perf_counter() - t0:.1f} s")
        df = lake.read_partition("features", DAY)
        contract = load_contract("features")
        plain_s, plain_runs = timed(lambda: plain_pass(df, contract))
        with PeakMemory() as peak:
            ours_s, ours_runs = timed(lambda: validate_frame(df, contract, spec.validation, "bench", None))
        report = validate_frame(df, contract, spec.validation, "bench", None).report
        spark.stop()
    result = {
        "rows": rows, "expectations": len(contract.expectations), "row_rules": len(contract.row_rules),
        "plain_aggregation_s": round(plain_s, 3), "contract_validation_s": round(ours_s, 3),
        "ratio": round(ours_s / plain_s, 3), "goal_ratio_at_most": 2.0,
        "plain_runs_s": [round(x, 3) for x in plain_runs], "contract_runs_s": [round(x, 3) for x in ours_runs],
        "rows_per_s": round(rows / ours_s), "verdict": report.verdict, "quarantined": report.quarantined,
        "peak_rss_gib": peak.gib, "spark": f"local[{os.cpu_count()}]",
    }
    path = write("validation", result)
    print(f"\nvalidation benchmark: {rows:,} rows, {result['expectations']} expectations "
          f"({result['row_rules']} row rules)")
    print(f"  {'plain Spark aggregation (baseline)':40} {plain_s:8.2f} s")
    print(f"  {'feature contract (validate_frame)':40} {ours_s:8.2f} s   {rows / ours_s:,.0f} rows/s")
    print(f"  {'ratio (goal <= 2.0)':40} {ours_s / plain_s:8.2f} x")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
