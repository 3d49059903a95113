import numpy as np
import pandas as pd

from jobs.core.histogram import NumericHistogram
from jobs.core.reference import coarse_indices, numeric_entry, numeric_from, quantile_edges, quantile_levels


def test_fine_edges_are_exact_quantiles_and_coarse_edges_a_subset():
    frame = pd.DataFrame({"x": np.arange(10_000, dtype=float), "y": [np.inf, np.nan] + [1.0] * 9998})
    levels = quantile_levels(100)
    at = quantile_edges(frame, ("x", "y"), 100)
    assert np.allclose(at["x"], np.quantile(frame["x"], levels))
    assert np.unique(at["y"]).tolist() == [1.0]  # non-finite values ignored, repeated edges collapse
    edges = np.unique(at["x"])
    coarse = coarse_indices(edges, levels, at["x"], 10)
    assert np.allclose(edges[coarse], np.quantile(frame["x"], np.arange(1, 10) / 10))


def test_a_stored_numeric_entry_comes_back_as_the_same_histogram():
    h = NumericHistogram.empty(np.array([0.0, 1.0]))
    h.add(np.array([-1.0, 0.5, 0.7, 2.0, np.nan]))
    back = numeric_from(numeric_entry(h, np.array([0])))
    assert back.counts.tolist() == h.counts.tolist() and back.missing == 1
    assert back.std == h.std and back.mean == h.mean and (back.min, back.max) == (-1.0, 2.0)
