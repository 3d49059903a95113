import math

import numpy as np
import pandas as pd

from jobs.reference import bin_counts, build_profile, numeric_edges, psi


def test_bin_counts_match_numpy_on_right_closed_bins():
    rng = np.random.default_rng(0)
    values = rng.normal(size=10_000)
    edges = numeric_edges(values, 10)
    counts = bin_counts(values, edges)
    expected = [int(((values > lo) & (values <= hi)).sum())
                for lo, hi in zip([-np.inf, *edges], [*edges, np.inf], strict=True)]
    assert counts == expected and sum(counts) == values.size


def test_nulls_are_not_counted_in_bins():
    assert sum(bin_counts(np.array([1.0, np.nan, 3.0]), [2.0])) == 2


def test_psi_is_zero_for_identical_and_grows_with_shift():
    assert psi([10, 20, 30], [10, 20, 30]) == 0.0
    assert psi([10, 20, 30], [30, 20, 10]) > 0.2
    assert math.isnan(psi([0, 0], [1, 2]))


def test_profile_holds_edges_counts_ranges_and_frequencies():
    frame = pd.DataFrame({"x": [1.0, 2.0, np.nan, 4.0], "c": ["a", "b", "a", None]})
    profile = build_profile(frame, ("x",), ("c",), bins=2, scores=np.array([0.1, 0.9]))
    assert profile["rows"] == 4
    assert profile["numeric"]["x"]["min"] == 1.0 and profile["numeric"]["x"]["null_share"] == 0.25
    assert profile["categorical"]["c"]["counts"] == {"a": 2, "b": 1}
    assert sum(profile["score"]["counts"]) == 2
