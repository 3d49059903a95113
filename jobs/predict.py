"""What runs inside Spark's Python workers when scoring: Arrow batches in, scores out.

The model strings travel with the scoring function; a worker builds its boosters on first use and
keeps them for every later batch and task (Python workers are reused), each predicting
with one thread while Spark runs as many workers as cores. The feature matrix arrives
as one Arrow list column of doubles (missing values already NaN), so the worker reads
it as a (rows x features) numpy view without copying column by column.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

# per Python worker process: model key -> booster, the most recently used last. A warm server's
# workers live across many steps; only the last few versions are kept.
_BOOSTERS: OrderedDict[str, object] = OrderedDict()
KEEP_BOOSTERS = 6


def booster(key: str, model_strings) -> object:
    """The booster for `key` (model name/version), built once per worker process from its model string."""
    if key not in _BOOSTERS:
        import lightgbm as lgb

        _BOOSTERS[key] = lgb.Booster(model_str=model_strings[key])
        while len(_BOOSTERS) > KEEP_BOOSTERS:
            _BOOSTERS.popitem(last=False)
    _BOOSTERS.move_to_end(key)
    return _BOOSTERS[key]


def matrix(column: pa.Array, width: int) -> np.ndarray:
    """A list<double> column of equal-length lists as a C-contiguous (rows, width) array, zero-copy when possible."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten()  # a view of the child values (no copy) for Spark's Arrow lists
    flat = values.to_numpy(zero_copy_only=values.null_count == 0)
    return flat.reshape(-1, width)


def top_contributions(contrib: np.ndarray, names: list[str], k: int) -> pa.Array:
    """Per row, the k features with the largest absolute contribution (the bias column excluded)."""
    per_feature = contrib[:, :-1]
    idx = np.argsort(-np.abs(per_feature), axis=1)[:, :k]
    picked = np.take_along_axis(per_feature, idx, axis=1)
    name_arr = np.asarray(names, dtype=object)[idx]
    structs = pa.StructArray.from_arrays([pa.array(name_arr.ravel(), pa.string()), pa.array(picked.ravel())],
                                         names=["feature", "contribution"])
    offsets = pa.array(np.arange(0, len(per_feature) * k + 1, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, structs)


def score_batches(batches: Iterator[pa.RecordBatch], keys: list[str], model_strings, width: int,
                  names: list[str], top_k: int) -> Iterator[pa.RecordBatch]:
    """(key, x, ood) batches -> (key, ood, score per model [, top features of the first model])."""
    models = [booster(k, model_strings) for k in keys]
    for batch in batches:
        X = matrix(batch.column(1), width)
        arrays = [batch.column(0), batch.column(2)]
        out_names = ["key", "ood_features"]
        for i, model in enumerate(models):
            arrays.append(pa.array(model.predict(X, num_threads=1), pa.float64()))
            out_names.append(f"score_{i}")
        if top_k:
            contrib = models[0].predict(X, num_threads=1, pred_contrib=True)
            arrays.append(top_contributions(contrib, names, top_k))
            out_names.append("top_features")
        yield pa.RecordBatch.from_arrays(arrays, names=out_names)
