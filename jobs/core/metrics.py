"""Model quality from labels and scores: pure numpy, on every row given (no sampling cap).

Binary models (a probability per row): AUC, log loss, Brier score and the expected
calibration error over equal-width score bins. Regression models (a value per row): RMSE,
MAE, R-squared and a calibration error of the same idea: the row-weighted gap between
mean prediction and mean outcome over equal-count prediction bins, in standard deviations
of the outcome (0 when, within every bin of similar predictions, the outcomes average to
the prediction).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from jobs.config import TASK_METRICS

HIGHER_IS_BETTER = {"auc": True, "r2": True, "log_loss": False, "brier": False, "rmse": False, "mae": False,
                    "calibration_error": False}
COUNTS = {"binary": "positives", "regression": "label_mean"}  # what is recorded beside `rows`


@dataclass(frozen=True)
class Quality:
    """A model's quality on one set of labelled rows: the task's metrics by name."""

    task: str
    rows: int
    values: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, metric: str) -> float:
        return self.values[metric]

    @property
    def auc(self) -> float:
        return self.values["auc"]

    @property
    def calibration_error(self) -> float:
        return self.values["calibration_error"]

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}rows": float(self.rows), **{f"{prefix}{k}": float(v) for k, v in self.values.items()}}

    @classmethod
    def from_dict(cls, task: str, metrics: dict[str, float], prefix: str = "") -> Quality | None:
        """What as_dict wrote (under a prefix), or None when it holds no such quality."""
        names = (COUNTS[task], *TASK_METRICS[task])
        if f"{prefix}rows" not in metrics or any(f"{prefix}{n}" not in metrics for n in names):
            return None
        return cls(task, int(metrics[f"{prefix}rows"]), {n: float(metrics[f"{prefix}{n}"]) for n in names})


def oriented(metric: str, difference: float) -> float:
    """A difference of a metric (challenger minus champion) as an improvement: positive is better."""
    return difference if HIGHER_IS_BETTER[metric] else -difference


def midranks(scores: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing their mean rank."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney), ties counted as one half."""
    y = np.asarray(y, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = midranks(np.asarray(p, dtype=float))
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean negative log-likelihood; scores clipped to [eps, 1 - eps] as scikit-learn does."""
    eps = np.finfo(float).eps
    p = np.clip(np.asarray(p, dtype=float), eps, 1 - eps)
    y = np.asarray(y, dtype=float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, dtype=float) - np.asarray(y, dtype=float)) ** 2))


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width score bins, weighted by rows per bin."""
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, weights=p, minlength=bins) - np.bincount(idx, weights=y, minlength=bins))
    return float(gap.sum() / max(count.sum(), 1))


def rmse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(p, float) - np.asarray(y, float)) ** 2)))


def mae(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(p, float) - np.asarray(y, float))))


def r2(y: np.ndarray, p: np.ndarray) -> float:
    """1 - residual sum of squares / total sum of squares (NaN for a constant outcome)."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    total = float(((y - y.mean()) ** 2).sum())
    return float(1.0 - ((y - p) ** 2).sum() / total) if total > 0 else float("nan")


def prediction_bins(p: np.ndarray, bins: int) -> np.ndarray:
    """Equal-count bins of the predictions (ties kept in one bin): the bin index of each row."""
    edges = np.unique(np.quantile(np.asarray(p, float), np.linspace(0, 1, bins + 1)[1:-1]))
    return np.searchsorted(edges, p, side="right")


def regression_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |mean prediction - mean outcome| over equal-count prediction bins, weighted by rows,
    in standard deviations of the outcome."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    sd = float(y.std())
    if len(y) == 0 or sd == 0:
        return float("nan")
    idx = prediction_bins(p, bins)
    gap = np.abs(np.bincount(idx, weights=p - y))
    return float(gap.sum() / len(y) / sd)


def quality(y: np.ndarray, p: np.ndarray, bins: int = 10, task: str = "binary") -> Quality:
    """All quality measures of the task for one model on one set of labelled rows."""
    y = np.asarray(y)
    if task == "binary":
        return Quality(task, int(len(y)), {"positives": float(np.sum(y)), "auc": auc(y, p), "log_loss": log_loss(y, p),
                                           "brier": brier(y, p), "calibration_error": calibration_error(y, p, bins)})
    if task == "regression":
        return Quality(task, int(len(y)), {"label_mean": float(np.mean(y)) if len(y) else float("nan"),
                                           "rmse": rmse(y, p), "mae": mae(y, p), "r2": r2(y, p),
                                           "calibration_error": regression_calibration_error(y, p, bins)})
    raise ValueError(f"unknown task {task!r}: binary or regression")


def _weighted_auc(y: np.ndarray, ties: tuple[np.ndarray, np.ndarray], w: np.ndarray) -> np.ndarray:
    """AUC of many bootstrap replicates at once: w is (replicates, rows) of row weights."""
    order, starts = ties
    ys = y[order]
    ws = w[:, order]
    pos = np.add.reduceat(ws * ys, starts, axis=1)  # positives' weight per group of tied scores
    neg = np.add.reduceat(ws * (1 - ys), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negatives' weight strictly below each group
    wins = (pos * (below + 0.5 * neg)).sum(axis=1)
    return wins / (pos.sum(axis=1) * neg.sum(axis=1))


def _tie_groups(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The order that sorts p, and where each group of equal scores starts in it."""
    order = np.argsort(p, kind="mergesort")
    starts = np.concatenate([[0], np.flatnonzero(np.diff(p[order])) + 1])
    return order, starts


def _weighted(metric: str, task: str, y: np.ndarray, p: np.ndarray, w: np.ndarray, bins: int) -> np.ndarray:
    """A metric under many row weightings at once: w is (replicates, rows); one value per replicate."""
    ws = w.sum(axis=1)
    e = p - y
    if metric == "auc":
        return _weighted_auc(y, _tie_groups(p), w)
    if metric == "log_loss":
        eps = np.finfo(float).eps
        q = np.clip(p, eps, 1 - eps)
        return (w @ -(y * np.log(q) + (1 - y) * np.log(1 - q))) / ws
    if metric == "brier":
        return (w @ e ** 2) / ws
    if metric == "rmse":
        return np.sqrt((w @ e ** 2) / ws)
    if metric == "mae":
        return (w @ np.abs(e)) / ws
    if metric == "r2":
        total = w @ y ** 2 - (w @ y) ** 2 / ws
        return 1.0 - (w @ e ** 2) / total
    if metric == "calibration_error":  # the bins of the full sample, fixed across replicates
        idx = np.minimum((p * bins).astype(int), bins - 1) if task == "binary" else prediction_bins(p, bins)
        per_bin = np.zeros((len(p), int(idx.max()) + 1))
        per_bin[np.arange(len(p)), idx] = e
        gap = np.abs(w @ per_bin).sum(axis=1) / ws
        if task == "binary":
            return gap
        return gap / np.sqrt(np.maximum(w @ y ** 2 / ws - (w @ y / ws) ** 2, 1e-300))
    raise ValueError(f"unknown metric {metric!r}")


def bootstrap_difference(task: str, metric: str, y: np.ndarray, challenger: np.ndarray, champion: np.ndarray,
                         samples: int, confidence: float, bins: int = 10, seed: int = 0,
                         chunk: int = 25) -> dict[str, float]:
    """Paired bootstrap of metric(challenger) - metric(champion) on the same rows: point estimate and interval.

    Each replicate weighs every row by a Poisson(1) count (the same weights for both models), so
    no row is copied; the interval is the replicates' central `confidence` quantile range."""
    y = np.asarray(y, dtype=float)
    a, b = np.asarray(challenger, float), np.asarray(champion, float)
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, samples, chunk):
        k = min(chunk, samples - start)
        w = rng.poisson(1.0, size=(k, len(y))).astype(float)
        diffs.append(_weighted(metric, task, y, a, w, bins) - _weighted(metric, task, y, b, w, bins))
    d = np.concatenate(diffs)
    alpha = 1.0 - confidence
    point = quality(y, a, bins, task)[metric] - quality(y, b, bins, task)[metric]
    return {f"{metric}_difference": float(point),
            f"{metric}_difference_low": float(np.quantile(d, alpha / 2)),
            f"{metric}_difference_high": float(np.quantile(d, 1 - alpha / 2)),
            "bootstrap_samples": float(samples)}
