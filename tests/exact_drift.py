"""Drift statistics computed exactly from raw values with scipy and numpy: the baseline the one-pass job is held to."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

FLOOR = 1e-4  # the floor on bin proportions for PSI and KL, as the job applies it


def numeric(r: np.ndarray, c: np.ndarray, coarse_edges: np.ndarray) -> dict[str, float]:
    """KS, normalised Wasserstein, and PSI / Jensen-Shannon / KL on the given bins, of two arrays without NaN."""
    rb = np.bincount(np.searchsorted(coarse_edges, r, side="left"), minlength=len(coarse_edges) + 1)
    cb = np.bincount(np.searchsorted(coarse_edges, c, side="left"), minlength=len(coarse_edges) + 1)
    rp, cp = rb / rb.sum(), cb / cb.sum()
    rpc, cpc = np.clip(rp, FLOOR, None), np.clip(cp, FLOOR, None)
    return {
        "ks": float(stats.ks_2samp(r, c).statistic),
        "wasserstein": float(stats.wasserstein_distance(r, c) / max(np.std(r), 0.001)),
        "psi": float(np.sum((cpc - rpc) * np.log(cpc / rpc))),
        "jensenshannon": float(jensenshannon(rp, cp)),
        "kl": float(stats.entropy(rpc, cpc)),
    }


def categorical(r: pd.Series, c: pd.Series) -> dict[str, float]:
    """PSI, Jensen-Shannon and chi-square of two categorical columns over the union of their categories."""
    cats = sorted(set(r.dropna()) | set(c.dropna()))
    rc = r.value_counts().reindex(cats, fill_value=0).to_numpy(float)
    cc = c.value_counts().reindex(cats, fill_value=0).to_numpy(float)
    rcp, ccp = np.clip(rc / rc.sum(), FLOOR, None), np.clip(cc / cc.sum(), FLOOR, None)
    seen = rc > 0
    chi = np.inf if np.any(cc[~seen] > 0) else stats.chisquare(cc[seen], rc[seen] / rc.sum() * cc.sum()).statistic
    return {
        "psi": float(np.sum((ccp - rcp) * np.log(ccp / rcp))),
        "jensenshannon": float(jensenshannon(rc / rc.sum(), cc / cc.sum())),
        "chisquare": float(chi),
    }
