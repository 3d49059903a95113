"""Reference profiles: the distributions a model was trained on, stored with its version for drift.

The fine bin edges of every numeric feature start from exact quantiles of the training rows
(which training holds in memory anyway), refined where bins alone would hide a difference
(`fine_edges`); then one Spark histogram pass (jobs.core.histogram,
the same code that counts a scoring day for drift) counts every feature exactly against
them, per day, with a bounded row sample for the multivariate test. The holdout scores give
the reference score distribution. Coarse bins (PSI, Jensen-Shannon, KL, chi-square) are
a subset of the fine edges (KS, Wasserstein), so both are exact counts.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pyspark.sql import DataFrame

from jobs.config import DriftParams, ModelSpec
from jobs.core import drift_stats, histogram
from jobs.core.histogram import CategoryCounts, NumericHistogram

log = logging.getLogger(__name__)

PROFILE_VERSION = 3  # 3: fine edges refined at the reference's atoms and by a grid (fine_edges)


def quantile_levels(fine_bins: int) -> np.ndarray:
    return np.arange(1, fine_bins) / fine_bins


def coarse_indices(fine_edges: np.ndarray, fine_levels: np.ndarray, values_at_levels: np.ndarray,
                   bins: int) -> np.ndarray:
    """Positions in the (deduplicated) fine edges of the coarse quantile edges."""
    wanted = np.arange(1, bins) / bins
    at = np.searchsorted(fine_levels, wanted - 1e-12)
    coarse_values = np.unique(values_at_levels[np.minimum(at, len(values_at_levels) - 1)])
    return np.searchsorted(fine_edges, coarse_values)


GRID_GROWTH = 1.02   # each grid bin is 2% wider than the one nearer the median
GRID_MAX_EDGES = 1000  # per side: past that the grid grows faster


def fine_edges(values_at_levels: np.ndarray, values: np.ndarray, fine_bins: int) -> np.ndarray:
    """The fine bin edges of one numeric column of the reference (its finite values).

    Three kinds of edge, merged and sorted:
    - the quantiles at the levels i/fine_bins (`values_at_levels`): each bin holds at most
      1/fine_bins of the reference, which bounds the Kolmogorov-Smirnov error by that mass;
    - for every edge the reference has values equal to, the largest double below it, so
      the bin just below the edge holds exactly those values: both sides' CDFs are then
      known just left of the point as well as at it, and KS is exact where the reference
      sits on a few values (a point mass the current lies beside);
    - a grid around the median, spaced (q_hi - q_lo)/fine_bins there and 2% wider at each
      step outward, out to the reference's minimum and maximum (edges too). Wasserstein
      integrates |F_ref - F_cur| per bin from counts and sums, exact unless the two CDFs
      cross inside a bin; where a heavy tail leaves quantile bins (and the bins beyond the
      last quantile) wide, the grid keeps every bin narrow. Past the reference's extremes
      its CDF is 0 or 1 and the CDFs cannot cross.
    """
    q = np.unique(np.asarray(values_at_levels, float))
    x = np.sort(np.asarray(values, float))
    x = x[np.isfinite(x)]
    if q.size == 0 or x.size == 0:
        return q
    low, high = x[0], x[-1]
    parts = [q, [low, high]]
    center, step = float(np.median(x)), float((q[-1] - q[0]) / fine_bins)
    reach = max(high - center, center - low)
    if step > 0 and np.isfinite(step) and reach > 0:
        steps = int(np.ceil(np.log1p(reach * (GRID_GROWTH - 1) / step) / np.log(GRID_GROWTH)))
        if steps <= GRID_MAX_EDGES:
            d = step * (GRID_GROWTH ** np.arange(0, steps + 1) - 1) / (GRID_GROWTH - 1)
        else:
            d = np.concatenate([[0.0], np.geomspace(step, reach, GRID_MAX_EDGES)])
        grid = np.concatenate([center - d[::-1], center + d[1:]])
        parts.append(grid[(grid > low) & (grid < high)])
    edges = np.unique(np.concatenate(parts))
    atoms = edges[np.searchsorted(x, edges, side="right") > np.searchsorted(x, edges, side="left")]
    return np.unique(np.concatenate([edges, np.nextafter(atoms, -np.inf)]))


def quantile_edges(frame, columns: tuple[str, ...], fine_bins: int) -> dict[str, np.ndarray]:
    """Exact quantiles of every numeric column (non-finite values ignored), from the rows training loaded."""
    levels = quantile_levels(fine_bins)
    out = {}
    for c in columns:
        values = frame[c].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        out[c] = np.quantile(values, levels) if values.size else np.array([], float)
    return out


def numeric_entry(h: NumericHistogram, coarse: np.ndarray) -> dict[str, Any]:
    return {"edges": h.edges.tolist(), "coarse": coarse.tolist(), "counts": h.counts.tolist(),
            "sums": h.sums.tolist(), "missing": h.missing, "n": h.n, "min": h.min, "max": h.max,
            "total": h.total, "total_sq": h.total_sq, "mean": h.mean, "std": h.std}


def categorical_entry(c: CategoryCounts) -> dict[str, Any]:
    return {"counts": dict(sorted(c.counts.items())), "missing": c.missing, "n": c.n}


def numeric_from(entry: dict[str, Any]) -> NumericHistogram:
    """A stored numeric entry back as a histogram."""
    return NumericHistogram(np.asarray(entry["edges"], float), np.asarray(entry["counts"], np.int64),
                            np.asarray(entry["sums"], float), int(entry["missing"]), int(entry["n"]),
                            float(entry["total"]), float(entry["total_sq"]), float(entry["min"]), float(entry["max"]))


def categorical_from(entry: dict[str, Any]) -> CategoryCounts:
    return CategoryCounts(dict(entry["counts"]), int(entry["missing"]))


def score_histogram(scores: np.ndarray, fine_bins: int, bins: int) -> dict[str, Any]:
    """The reference score distribution, exactly (the holdout fits in memory)."""
    levels = quantile_levels(fine_bins)
    values = np.quantile(scores, levels)
    edges = fine_edges(values, scores, fine_bins)
    h = NumericHistogram.empty(edges)
    h.add(np.asarray(scores, float))
    return numeric_entry(h, coarse_indices(edges, levels, values, bins))


def learned_statistics(per_day: dict[str, histogram.Profile], total: histogram.Profile, spec: ModelSpec,
                       drift: DriftParams, coarse: dict[str, np.ndarray]) -> dict[str, dict[str, dict[str, float]]]:
    """Each day of the reference against the other days, per feature and method: mean and deviation.

    Drift can then be judged against how much the reference varies from day to day
    (threshold = mean + k deviations) instead of a fixed number.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    if len(per_day) < 3:
        return out
    for col in spec.features.numeric:
        values: dict[str, list[float]] = {}
        for prof in per_day.values():
            day, rest = prof.numeric[col], _minus(total.numeric[col], prof.numeric[col])
            for method in ("psi", "ks", "wasserstein", "jensenshannon", "kl"):
                values.setdefault(method, []).append(drift_stats.numeric_statistic(method, rest, day, coarse[col])[0])
        out[col] = _summarise(values)
    for col in spec.features.categorical:
        values = {}
        for prof in per_day.values():
            day = prof.categorical[col]
            rest = CategoryCounts({k: v - day.counts.get(k, 0) for k, v in total.categorical[col].counts.items()})
            for method in ("psi", "jensenshannon", "chisquare"):
                values.setdefault(method, []).append(drift_stats.categorical_statistic(method, rest, day)[0])
        out[col] = _summarise(values)
    return out


def _minus(total: NumericHistogram, part: NumericHistogram) -> NumericHistogram:
    rest = NumericHistogram(total.edges, total.counts - part.counts, total.sums - part.sums,
                            total.missing - part.missing, total.n - part.n, total.total - part.total,
                            total.total_sq - part.total_sq, total.min, total.max)
    return rest


def _summarise(values: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    out = {}
    for method, v in values.items():
        arr = np.asarray([x for x in v if np.isfinite(x)], float)
        if arr.size >= 2:
            out[method] = {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)), "chunks": int(arr.size)}
    return out


def build_profile(rows: DataFrame, frame, spec: ModelSpec, drift: DriftParams, holdout_scores: np.ndarray,
                  importance: dict[str, float], day_column: str = "dt") -> dict[str, Any]:
    """The reference profile of the training rows (Spark, and the same rows in pandas), JSON-ready."""
    levels = quantile_levels(drift.fine_bins)
    at_levels = quantile_edges(frame, spec.features.numeric, drift.fine_bins)
    edges = {c: fine_edges(v, frame[c].to_numpy(dtype=float), drift.fine_bins) for c, v in at_levels.items()}
    coarse = {c: coarse_indices(edges[c], levels, at_levels[c], drift.bins) if at_levels[c].size else np.array([], int)
              for c in edges}
    log.info("reference bin edges computed")
    per_day = histogram.collect(rows, edges, spec.features.categorical, group=day_column,
                                sample_rows=drift.multivariate.sample_rows, sample_key=spec.key)
    total = histogram.overall(per_day)
    log.info("reference histograms: %d rows over %d days", total.rows, len(per_day))
    return {
        "version": PROFILE_VERSION,
        "rows": total.rows,
        "days": sorted(per_day),
        "bins": drift.bins,
        "fine_bins": drift.fine_bins,
        "numeric": {c: numeric_entry(total.numeric[c], coarse[c]) for c in spec.features.numeric},
        "categorical": {c: categorical_entry(total.categorical[c]) for c in spec.features.categorical},
        "score": score_histogram(holdout_scores, drift.fine_bins, drift.bins),
        "sample": {"columns": list(spec.features.numeric), "rows": total.sample.rows.tolist()},
        "importance": importance,
        "learned": learned_statistics(per_day, total, spec, drift, coarse),
    }
