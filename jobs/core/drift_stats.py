"""Drift statistics from histograms: pure numpy/scipy, no Spark.

How close each one is to the same statistic computed on the raw values:
- PSI, Jensen-Shannon, Kullback-Leibler and chi-square use bin counts: identical to a
  numpy computation on the same bins (up to float rounding).
- Kolmogorov-Smirnov is the largest CDF difference at the fine reference edges. Inside a
  bin the reference CDF rises by at most the reference mass strictly inside it, so the
  result is within that mass (1/fine_bins for continuous data) of the exact statistic.
  Where the reference has values equal to an edge, the edges (jobs.core.reference.fine_edges)
  include the double just below it, so both CDFs are known on either side of the point:
  a point mass the current lies beside is measured exactly.
- Wasserstein-1 integrates |F_ref - F_cur| bin by bin from counts and value sums per bin,
  which is exact in every bin where the two CDFs do not cross. The fine edges add a grid
  that keeps bins narrow where quantile bins are wide (heavy tails, and beyond the last
  quantile out to the reference's extremes, which are edges too); beyond those the
  reference CDF is flat at 0 or 1 and nothing crosses.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

EPS = 1e-4  # floor on bin proportions for PSI and KL (an empty bin would be infinite)


def proportions(counts: np.ndarray, eps: float = 0.0) -> np.ndarray:
    c = np.asarray(counts, dtype=float)
    total = c.sum()
    if total == 0:
        return np.full(c.size, np.nan)
    p = c / total
    return np.clip(p, eps, None) if eps else p


def psi(reference: np.ndarray, current: np.ndarray, eps: float = EPS) -> float:
    """Population stability index over the same bins."""
    r, c = proportions(reference, eps), proportions(current, eps)
    return float(np.sum((c - r) * np.log(c / r)))


def kl_divergence(reference: np.ndarray, current: np.ndarray, eps: float = EPS) -> float:
    """KL(reference || current) in nats over the same bins, as Evidently and scipy.stats.entropy compute it."""
    r, c = proportions(reference, eps), proportions(current, eps)
    r, c = r / r.sum(), c / c.sum()
    return float(np.sum(r * np.log(r / c)))


def jensen_shannon(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance (the square root of the divergence, natural log), as scipy defines it."""
    r, c = proportions(reference), proportions(current)
    m = 0.5 * (r + c)
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(r > 0, r * np.log(r / m), 0.0).sum()
        right = np.where(c > 0, c * np.log(c / m), 0.0).sum()
    return float(math.sqrt(max(0.5 * (left + right), 0.0)))


def chi_square(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Pearson's chi-square of current counts against reference proportions: (statistic, p-value).

    A bin the reference never saw but the current has makes the statistic infinite
    (p-value 0): a category that did not exist cannot be explained by the reference.
    """
    r, c = np.asarray(reference, float), np.asarray(current, float)
    expected = r / r.sum() * c.sum()
    seen = expected > 0
    if np.any(c[~seen] > 0):
        return float("inf"), 0.0
    stat = float(np.sum((c[seen] - expected[seen]) ** 2 / expected[seen]))
    dof = int(seen.sum()) - 1
    return stat, float(stats.chi2.sf(stat, dof)) if dof > 0 else 1.0


def cdf_at_edges(counts: np.ndarray) -> np.ndarray:
    """F(e_i) for every edge: the share of values <= e_i (bins are right-closed)."""
    c = np.asarray(counts, dtype=float)
    return np.cumsum(c)[:-1] / c.sum()


def ks(reference_counts: np.ndarray, current_counts: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov on fine bins: (statistic, asymptotic p-value as scipy computes it)."""
    n, m = float(np.sum(reference_counts)), float(np.sum(current_counts))
    if n == 0 or m == 0:
        return float("nan"), float("nan")
    d = float(np.max(np.abs(cdf_at_edges(reference_counts) - cdf_at_edges(current_counts)), initial=0.0))
    en = n * m / (n + m)
    return d, float(stats.kstwo.sf(d, np.round(en)))


def _bin_integrals(edges: np.ndarray, counts: np.ndarray, sums: np.ndarray, low: float,
                   high: float) -> np.ndarray:
    """Integral of the empirical CDF over each bin, from low to high (exact from counts and sums)."""
    n = counts.sum()
    lefts = np.concatenate([[low], edges])
    rights = np.concatenate([edges, [high]])
    cdf_left = np.concatenate([[0.0], np.cumsum(counts)[:-1] / n])
    # in (a, b]: F(x) = F(a) + #{a < v <= x} / n, so its integral is (b - a) F(a) + (count * b - sum) / n
    return (rights - lefts) * cdf_left + (counts * rights - sums) / n


def wasserstein(edges: np.ndarray, reference: tuple[np.ndarray, np.ndarray, float, float],
                current: tuple[np.ndarray, np.ndarray, float, float]) -> float:
    """Wasserstein-1 distance from per-bin (counts, sums, min, max) of both sides on the same edges."""
    (rc, rs, rmin, rmax), (cc, cs, cmin, cmax) = reference, current
    if rc.sum() == 0 or cc.sum() == 0:
        return float("nan")
    low, high = min(rmin, cmin), max(rmax, cmax)
    e = np.asarray(edges, dtype=float)
    r = _bin_integrals(e, rc.astype(float), rs, low, high)
    c = _bin_integrals(e, cc.astype(float), cs, low, high)
    return float(np.abs(r - c).sum())


def mmd_permutation_test(reference: np.ndarray, current: np.ndarray, permutations: int,
                         seed: int = 0) -> tuple[float, float]:
    """Maximum mean discrepancy (RBF kernel, median-distance bandwidth) and its permutation p-value.

    Rows are standardised by the reference's mean and deviation first; columns with a
    missing value in a row are imputed with the reference mean.
    """
    ref = np.asarray(reference, float)
    cur = np.asarray(current, float)
    mu = np.nanmean(ref, axis=0)
    sd = np.nanstd(ref, axis=0)
    sd[~np.isfinite(sd) | (sd == 0)] = 1.0
    mu[~np.isfinite(mu)] = 0.0
    z = np.vstack([ref, cur])
    z = np.where(np.isfinite(z), z, mu)
    z = (z - mu) / sd
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    nonzero = d2[np.triu_indices_from(d2, k=1)]
    bandwidth = np.median(nonzero[nonzero > 0]) if np.any(nonzero > 0) else 1.0
    k = np.exp(-d2 / bandwidth)
    np.fill_diagonal(k, 0.0)  # the unbiased estimate leaves out each point's kernel with itself
    n, total = len(ref), len(z)
    rng = np.random.default_rng(seed)
    labels = np.zeros((total, permutations + 1))
    labels[:n, 0] = 1.0  # column 0: the observed split; the others: random splits of the same sizes
    for j in range(1, permutations + 1):
        labels[rng.permutation(total)[:n], j] = 1.0
    row_sums = k.sum(axis=1)
    within_a = np.einsum("ij,ij->j", labels, k @ labels)   # a' K a for every split at once
    a_rest = labels.T @ row_sums                            # a' K 1
    within_b = row_sums.sum() - 2 * a_rest + within_a       # b' K b with b = 1 - a
    between = a_rest - within_a                             # a' K b
    m = total - n
    stats_ = within_a / (n * (n - 1)) + within_b / (m * (m - 1)) - 2 * between / (n * m)
    observed = float(stats_[0])
    return observed, float((np.sum(stats_[1:] >= observed) + 1) / (permutations + 1))


# -- one statistic of one column ------------------------------------------------------------------
def coarse_counts(hist, coarse: np.ndarray) -> np.ndarray:
    """A numeric histogram's counts on the coarse bins (merged fine bins: exact)."""
    return hist.coarse(np.asarray(coarse, dtype=int))


def numeric_statistic(method: str, reference, current, coarse: np.ndarray) -> tuple[float, float | None]:
    """The named statistic of a numeric column and, for KS, its p-value."""
    if reference.n == 0 or current.n == 0:
        return float("nan"), None
    if method == "ks":
        return ks(reference.counts, current.counts)
    if method == "wasserstein":
        w = wasserstein(reference.edges, (reference.counts, reference.sums, reference.min, reference.max),
                        (current.counts, current.sums, current.min, current.max))
        return w / max(reference.std, 0.001), None  # normalised as Evidently does (population sd, floor 0.001)
    r, c = coarse_counts(reference, coarse), coarse_counts(current, coarse)
    if method == "psi":
        return psi(r, c), None
    if method == "jensenshannon":
        return jensen_shannon(r, c), None
    if method == "kl":
        return kl_divergence(r, c), None
    raise ValueError(f"unknown numeric drift method {method!r}")


def aligned(reference, current) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Category counts of both sides over the union of their categories."""
    cats = sorted(set(reference.counts) | set(current.counts))
    return (np.array([reference.counts.get(k, 0) for k in cats], float),
            np.array([current.counts.get(k, 0) for k in cats], float), cats)


def categorical_statistic(method: str, reference, current) -> tuple[float, float | None]:
    """The named statistic of a categorical column and, for chi-square, its p-value."""
    r, c, _ = aligned(reference, current)
    if r.sum() == 0 or c.sum() == 0:
        return float("nan"), None
    if method == "chisquare":
        return chi_square(r, c)
    if method == "psi":
        return psi(r, c), None
    if method == "jensenshannon":
        return jensen_shannon(r, c), None
    raise ValueError(f"unknown categorical drift method {method!r}")


P_VALUE_METHODS = frozenset({"ks", "chisquare"})


def drifted(method: str, statistic: float, p_value: float | None, threshold: float) -> bool:
    """Tests with a p-value drift when it is below the threshold; distances when above it."""
    if method in P_VALUE_METHODS:
        return p_value is not None and np.isfinite(p_value) and p_value < threshold
    return bool(np.isfinite(statistic) and statistic > threshold) or statistic == float("inf")
