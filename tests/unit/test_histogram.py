import numpy as np
import pyarrow as pa
import pytest

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


def test_packed_numeric_columns_fold_exactly_as_separate_columns():
    # given two numeric columns with nulls, NaN, infinities, -0.0 and values on the edges, as Spark hands them over
    # both ways: separate columns, and one array<double> column per row (a sliced batch: offsets not starting at 0)
    rng = np.random.default_rng(5)
    edges = np.array([-1.0, 0.0, 1.0])
    a, b = rng.normal(size=3000), rng.integers(-2, 3, 3000).astype(float)
    a[10:18] = [np.nan, np.inf, -np.inf, -0.0, 0.0, -1.0, 1.0, np.nextafter(0.0, 1.0)]
    special = (np.arange(3000) >= 10) & (np.arange(3000) < 18)
    nulls = (np.arange(3000) % 37 == 0) & ~special
    cols = {"a": pa.array(a, mask=nulls), "b": pa.array(b, mask=np.arange(3000) % 53 == 0)}
    rows = [[None if cols[c][i].as_py() is None else cols[c][i].as_py() for c in ("a", "b")] for i in range(3000)]
    extra = {"c": pa.array([f"k{i % 4}" for i in range(3000)]), "p": pa.array(np.arange(3000, dtype=np.int64))}
    packed = pa.table({histogram.PACKED: pa.array(rows, pa.list_(pa.float64())), **extra}).slice(5)
    # when both are folded
    want = histogram.fold(iter(pa.table({**cols, **extra}).slice(5).to_batches(max_chunksize=700)),
                          {"a": edges, "b": edges}, ("c",), None, 50, "p")[histogram.ALL]
    got = histogram.fold(iter(packed.to_batches(max_chunksize=700)), {"a": edges, "b": edges}, ("c",), None, 50,
                         "p")[histogram.ALL]
    # then every count, sum, missing value, extreme and sampled row is the same
    for c in ("a", "b"):
        w, g = want.numeric[c], got.numeric[c]
        assert g.counts.tolist() == w.counts.tolist() and np.array_equal(g.sums, w.sums), c
        assert (g.missing, g.n, g.min, g.max, g.total, g.total_sq) == (w.missing, w.n, w.min, w.max, w.total,
                                                                       w.total_sq), c
    assert got.numeric["a"].missing == int(nulls[5:].sum()) + 3  # nulls, NaN and the two infinities
    assert np.array_equal(got.sample.rows, want.sample.rows, equal_nan=True)
    assert got.rows == want.rows == 2995


def test_a_packed_row_of_the_wrong_length_is_refused():
    batch = pa.RecordBatch.from_pydict({histogram.PACKED: pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float64()))})
    with pytest.raises(ValueError, match="exactly 2 values"):
        histogram.fold(iter([batch]), {"a": np.array([0.0]), "b": np.array([0.0])}, (), None, 0, None)


def test_a_file_source_folds_row_groups_exactly_as_the_same_rows_in_batches(tmp_path):
    # given two Parquet files of several row groups: numeric columns with nulls, NaN and -0.0, a category, a key, and
    # every arm's scores in a map column
    import pandas as pd
    import pyarrow.parquet as pq

    rng = np.random.default_rng(6)
    n = 4000
    x = rng.normal(size=n)
    x[::97], x[1::89] = np.nan, -0.0
    y = rng.integers(-2, 3, n).astype(float)
    arms = pa.array([[("1", float(v)), ("2", float(-v))] for v in x], pa.map_(pa.string(), pa.float64()))
    table = pa.table({"key": np.arange(n, dtype=np.int64), "x": pa.array(x, mask=np.arange(n) % 31 == 0), "y": y,
                      "c": pa.array([None if i % 41 == 0 else f"k{i % 3}" for i in range(n)]), "arm_scores": arms})
    files = []
    for i, part in enumerate((table.slice(0, 2500), table.slice(2500))):
        files.append(str(tmp_path / f"part-{i}.parquet"))
        pq.write_table(part, files[-1], row_group_size=700)
    edges = {"x": np.array([-1.0, 0.0, 1.0]), "y": np.array([-1.0, 0.0, 1.0])}
    source = histogram.FileSource(tuple(files), edges, ("c",), sample_rows=50, sample_key="key")
    def binary(path):
        return open(path, "rb")

    units = histogram.row_groups(source.files, binary)
    # when the row groups are folded (in two shares, merged) and the same rows are folded as batches
    got = histogram.fold_files(units[:3], source, binary)
    got.merge(histogram.fold_files(units[3:], source, binary))
    rows = table.append_column("p", pa.array(pd.util.hash_array(np.arange(n, dtype=np.int64)).view(np.int64)))
    want = histogram.fold(iter(rows.to_batches(max_chunksize=500)), edges, ("c",), None, 50, "p")[histogram.ALL]
    # then every count, sum, missing value, category and sampled row is the same
    assert len(units) == 7 and got.rows == want.rows == n
    for c in edges:
        g, w = got.numeric[c], want.numeric[c]
        assert g.counts.tolist() == w.counts.tolist() and np.allclose(g.sums, w.sums, rtol=1e-13, atol=0), c
        assert (g.missing, g.n, g.min, g.max) == (w.missing, w.n, w.min, w.max), c
    assert got.categorical["c"].counts == want.categorical["c"].counts and got.categorical["c"].missing == 98
    assert np.array_equal(got.sample.priority, want.sample.priority)
    assert np.array_equal(got.sample.rows, want.sample.rows, equal_nan=True)
    # and an arm's scores are read from the map column
    arm = histogram.FileSource(tuple(files), {"score": np.array([0.0])}, columns={"score": ("arm_scores", "2")})
    folded = histogram.fold_files(units, arm, binary).numeric["score"]
    finite = -x[np.isfinite(x)]
    assert folded.n == finite.size and folded.counts.tolist() == np.bincount(
        np.searchsorted([0.0], finite, side="left"), minlength=2).tolist()
