"""Monitoring on matured labels computes the task's metrics in Spark as numpy computes them on the rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.core import metrics
from jobs.steps import monitor

pytestmark = pytest.mark.integration


def served(spark, y, p, version="1"):
    frame = pd.DataFrame({"source": "scores", "model_name": "m", "model_version": version, "score": p, "label": y})
    return spark.createDataFrame(frame)


def test_binary_metrics_in_spark_match_the_rows(spark):
    rng = np.random.default_rng(1)
    y = (rng.uniform(size=6000) < 0.3).astype(int)
    p = np.clip(rng.normal(0.3 + 0.25 * y, 0.15), 0.001, 0.999)
    [got] = monitor.measure(served(spark, y, p), "label", "binary")
    want = metrics.quality(y, p, 10, "binary")
    assert got["task"] == "binary" and (got["rows"], got["positives"]) == (6000, int(y.sum()))
    assert got["auc"] == pytest.approx(want["auc"], abs=1e-4)  # scores within one of 10,000 bins are ties
    for name in ("log_loss", "brier", "calibration_error"):
        assert got[name] == pytest.approx(want[name], abs=1e-9)


def test_regression_metrics_in_spark_match_the_rows_per_version(spark):
    rng = np.random.default_rng(2)
    y = rng.gamma(2.0, 30.0, 8000)
    good, biased = y + rng.normal(0, 10, len(y)), np.where(y > 60, y * 1.2, y) + rng.normal(0, 10, len(y))
    both = served(spark, y, good, "1").unionByName(served(spark, y, biased, "2"))
    results = {r["model_version"]: r for r in monitor.measure(both, "label", "regression", 10)}
    for version, p in (("1", good), ("2", biased)):
        want = metrics.quality(y, p, 10, "regression")
        got = results[version]
        assert got["task"] == "regression" and got["rows"] == 8000
        for name in ("label_mean", "rmse", "mae", "r2"):
            assert got[name] == pytest.approx(want[name], rel=1e-9)
        # the deciles come from Spark's approximate percentiles: close to numpy's exact ones
        assert got["calibration_error"] == pytest.approx(want["calibration_error"], abs=0.01)
    assert results["2"]["calibration_error"] > 3 * results["1"]["calibration_error"]
