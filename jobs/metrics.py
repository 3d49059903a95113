"""Model quality from labels and scores: pure numpy, on every row given (no sampling cap)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Quality:
    """How well scores rank and how well they are calibrated, on one set of rows."""

    rows: int
    positives: int
    auc: float
    log_loss: float
    brier: float
    calibration_error: float

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items()}


def _ranks(scores: np.ndarray) -> np.ndarray:
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
    r = _ranks(np.asarray(p, dtype=float))
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


def quality(y: np.ndarray, p: np.ndarray, bins: int = 10) -> Quality:
    """All quality measures of one model on one set of labelled rows."""
    y = np.asarray(y)
    return Quality(rows=int(len(y)), positives=int(np.sum(y)), auc=auc(y, p), log_loss=log_loss(y, p),
                   brier=brier(y, p), calibration_error=calibration_error(y, p, bins))


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


def bootstrap_auc_difference(y: np.ndarray, challenger: np.ndarray, champion: np.ndarray, samples: int,
                             confidence: float, seed: int = 0, chunk: int = 25) -> dict[str, float]:
    """Paired bootstrap of AUC(challenger) - AUC(champion) on the same rows: point estimate and interval."""
    y = np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    groups_a, groups_b = _tie_groups(np.asarray(challenger, float)), _tie_groups(np.asarray(champion, float))
    diffs = []
    for start in range(0, samples, chunk):
        k = min(chunk, samples - start)
        w = rng.poisson(1.0, size=(k, len(y))).astype(float)  # Poisson bootstrap: the same resample for both
        diffs.append(_weighted_auc(y, groups_a, w) - _weighted_auc(y, groups_b, w))
    d = np.concatenate(diffs)
    alpha = 1.0 - confidence
    return {"auc_difference": auc(y, challenger) - auc(y, champion),
            "auc_difference_low": float(np.quantile(d, alpha / 2)),
            "auc_difference_high": float(np.quantile(d, 1 - alpha / 2)),
            "bootstrap_samples": float(samples)}
