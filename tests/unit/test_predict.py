import numpy as np
import pyarrow as pa

from jobs.models.predict import matrix, top_contributions


def test_a_list_column_becomes_a_matrix_without_copying():
    values = pa.array(np.arange(12, dtype=float))
    column = pa.ListArray.from_arrays(pa.array([0, 3, 6, 9, 12], pa.int32()), values)
    m = matrix(column, 3)
    assert m.shape == (4, 3) and m[2].tolist() == [6.0, 7.0, 8.0] and m.flags["C_CONTIGUOUS"]
    assert np.shares_memory(m, values.to_numpy(zero_copy_only=True))


def test_top_contributions_pick_the_largest_absolute_values():
    contrib = np.array([[0.1, -0.5, 0.2, 9.0], [0.3, 0.0, -0.4, 9.0]])  # last column: the bias
    out = top_contributions(contrib, ["a", "b", "c"], 2).to_pylist()
    assert [[d["feature"] for d in row] for row in out] == [["b", "c"], ["c", "a"]]
    assert out[0][0]["contribution"] == -0.5
