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
