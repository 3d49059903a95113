"""Reference profiles: per-feature distributions a model was trained on, for drift checks."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd


def numeric_edges(values: np.ndarray, bins: int) -> list[float]:
    """Inner quantile edges (unique, finite); the outer bins are open to +-infinity."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return []
    qs = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
    return sorted(set(float(q) for q in qs))


def bin_counts(values: np.ndarray, edges: list[float]) -> list[int]:
    """Counts per bin (-inf, e1], (e1, e2], ..., (ek, inf); nulls are not counted."""
    finite = values[~np.isnan(values)]
    idx = np.searchsorted(np.asarray(edges), finite, side="left")
    return np.bincount(idx, minlength=len(edges) + 1).astype(int).tolist()


def build_profile(frame: pd.DataFrame, numeric: tuple[str, ...], categorical: tuple[str, ...],
                  bins: int, scores: np.ndarray | None = None) -> dict[str, Any]:
    """Per-feature bin edges and counts, category frequencies, ranges and null shares."""
    profile: dict[str, Any] = {"rows": int(len(frame)), "numeric": {}, "categorical": {}}
    for col in numeric:
        values = frame[col].to_numpy(dtype=float)
        edges = numeric_edges(values, bins)
        finite = values[np.isfinite(values)]
        profile["numeric"][col] = {
            "edges": edges,
            "counts": bin_counts(values, edges),
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
            "null_share": float(np.isnan(values).mean()),
        }
    for col in categorical:
        counts = frame[col].astype("object").value_counts(dropna=True)
        profile["categorical"][col] = {
            "counts": {str(k): int(v) for k, v in counts.items()},
            "null_share": float(frame[col].isna().mean()),
        }
    if scores is not None:
        edges = numeric_edges(scores, bins)
        profile["score"] = {"edges": edges, "counts": bin_counts(scores, edges)}
    return profile


def psi(expected: list[int] | np.ndarray, actual: list[int] | np.ndarray, eps: float = 1e-4) -> float:
    """Population stability index between two count vectors over the same bins."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.sum() == 0 or a.sum() == 0:
        return math.nan
    e = np.clip(e / e.sum(), eps, None)
    a = np.clip(a / a.sum(), eps, None)
    return float(np.sum((a - e) * np.log(a / e)))
