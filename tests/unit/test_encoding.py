import numpy as np
import pandas as pd

from jobs.models.encoding import encode_pandas, learn_vocabulary


def test_vocabulary_is_sorted_and_ignores_missing():
    frame = pd.DataFrame({"plan": ["b", "a", None, "b"]})
    assert learn_vocabulary(frame, ("plan",)) == {"plan": ["a", "b"]}


def test_unseen_and_missing_categories_become_nan():
    frame = pd.DataFrame({"x": [1, 2, 3, 4], "plan": ["a", "b", "zzz", None]})
    out = encode_pandas(frame, ("x",), {"plan": ["a", "b"]})
    assert list(out.columns) == ["x", "plan"]
    assert out["plan"].tolist()[:2] == [0.0, 1.0]
    assert np.isnan(out["plan"].iloc[2]) and np.isnan(out["plan"].iloc[3])
    assert out.dtypes.eq("float64").all()


def test_out_of_range_counts_values_outside_the_training_range_and_never_a_missing_one():
    import pyarrow as pa

    from jobs.models.predict import out_of_range

    # given a batch with the booster's matrix (a, b) and a raw column c, each bounded to [0, 10]
    X = np.array([[5.0, 5.0], [-1.0, 11.0], [np.nan, 10.0], [np.inf, -np.inf], [0.0, -0.0]])
    batch = pa.record_batch({"key": pa.array(range(5)), "c": pa.array([5.0, 12.0, None, float("nan"), 10.0])})
    bounds = [("a", 0.0, 10.0), ("b", 0.0, 10.0), ("c", 0.0, 10.0)]
    # when the rows' out-of-range values are counted
    got = out_of_range(batch, X, ["a", "b"], bounds)
    # then values beyond either bound (infinities too) count, the bounds themselves and missing values do not
    assert got.type == pa.int32() and got.to_pylist() == [0, 3, 0, 2, 0]
    # and without a matrix every bounded column is read from the batch
    raw = pa.record_batch({"a": pa.array([20.0, None]), "c": pa.array([1.0, -5.0])})
    assert out_of_range(raw, None, [], [("a", 0.0, 10.0), ("c", 0.0, 10.0)]).to_pylist() == [1, 1]
