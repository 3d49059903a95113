import numpy as np
import pyarrow as pa

from jobs.core import histogram


def batches(values, cats, days, size=700):
    table = pa.table({"x": values, "c": cats, "dt": days, "p": np.arange(len(values), dtype=np.int64)[::-1]})
    return table.to_batches(max_chunksize=size)


def test_folding_batches_equals_numpy_on_the_whole_column():
    # given values with missing and infinite entries, over two days
    rng = np.random.default_rng(0)
    x = rng.normal(size=5000)
    x[::50] = np.nan
    x[::97] = np.inf
    cats = pa.array([None if i % 41 == 0 else f"k{i % 3}" for i in range(5000)])
    days = pa.array(["d1"] * 2500 + ["d2"] * 2500)
    edges = np.array([-1.0, 0.0, 1.0])
    # when they are folded batch by batch, per day
    out = histogram.fold(iter(batches(pa.array(x), cats, days)), {"x": edges}, ("c",), "dt", 100, "p")
    total = histogram.overall(out)
    # then counts, sums and missing values are exact
    finite = x[np.isfinite(x)]
    idx = np.searchsorted(edges, finite, side="left")
    h = total.numeric["x"]
    assert h.counts.tolist() == np.bincount(idx, minlength=4).tolist()
    assert np.allclose(h.sums, np.bincount(idx, weights=finite, minlength=4))
    assert h.missing == int((~np.isfinite(x)).sum()) and h.n == finite.size
    assert h.min == finite.min() and h.max == finite.max()
    assert np.isclose(h.std, finite.std())
    assert total.categorical["c"].missing == cats.null_count
    assert sum(total.categorical["c"].counts.values()) == 5000 - cats.null_count
    assert set(out) == {"d1", "d2"} and out["d1"].rows == out["d2"].rows == 2500


def test_the_sample_is_the_rows_with_the_smallest_priorities():
    x = np.arange(1000, dtype=float)
    out = histogram.fold(iter(batches(pa.array(x), pa.array(["a"] * 1000), pa.array(["d"] * 1000), 64)),
                         {"x": np.array([500.0])}, ("c",), None, 10, "p")
    sample = out[histogram.ALL].sample
    # priorities run from 999 down to 0, so the ten smallest belong to the last ten rows
    assert sorted(sample.rows[:, 0].tolist()) == list(range(990, 1000))


def test_coarse_bins_merge_fine_bins_exactly():
    h = histogram.NumericHistogram.empty(np.array([1.0, 2.0, 3.0, 4.0]))
    h.add(np.array([0.5, 1.5, 2.5, 3.5, 4.5, 2.0]))
    # keep edges 2.0 and 4.0: bins (-inf,2], (2,4], (4,inf)
    assert h.coarse(np.array([1, 3])).tolist() == [3, 2, 1]


def test_the_bin_index_numbers_values_exactly_as_searchsorted():
    rng = np.random.default_rng(3)
    samples = {"normal": rng.normal(5, 2, 200_000), "lognormal": rng.lognormal(0, 1.5, 200_000),
               "poisson": rng.poisson(4, 200_000).astype(float), "two values": rng.integers(0, 2, 1000) * 1.0}
    for name, ref in samples.items():
        for edges in (np.unique(np.quantile(ref, np.linspace(0, 1, 4001)[1:-1])),
                      np.quantile(ref, np.linspace(0, 1, 51)[1:-1]), np.array([ref.mean()])):
            # values drawn like the reference, plus every edge, its neighbours and far outliers
            x = np.concatenate([rng.permutation(ref)[:50_000], edges, np.nextafter(edges, -np.inf),
                                np.nextafter(edges, np.inf), [-1e300, 1e300, 0.0, -0.0]])
            got = histogram.BinIndex(edges)(x)
            assert np.array_equal(got, np.searchsorted(edges, x, side="left")), (name, edges.size)


def test_histograms_with_and_without_the_bin_index_agree():
    rng = np.random.default_rng(4)
    x = rng.exponential(2, 100_000)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, 1001)[1:-1]))
    fast, plain = histogram.NumericHistogram.empty(edges), histogram.NumericHistogram.empty(edges)
    fast.add(x, histogram.BinIndex(edges))
    plain.add(x)
    assert fast.counts.tolist() == plain.counts.tolist() and np.array_equal(fast.sums, plain.sums)


def test_a_sample_keeps_the_smallest_priorities_in_priority_order_whatever_the_merge_order():
    rng = np.random.default_rng(0)
    prio = rng.permutation(1000).astype(np.int64)
    rows = prio[:, None].astype(float) * np.array([[1.0, -1.0]])
    one, two = histogram.Sample(10, ("a", "b")), histogram.Sample(10, ("a", "b"))
    for part in np.array_split(np.arange(1000), 7):
        one.add(prio[part], rows[part])
    for part in np.array_split(np.arange(1000)[::-1], 3):
        two.add(prio[part], rows[part])
    assert one.priority.tolist() == two.priority.tolist() == list(range(10))
    assert one.rows[:, 0].tolist() == list(range(10)) and np.array_equal(one.rows, two.rows)
