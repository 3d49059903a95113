import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from jobs import metrics


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    y = (rng.uniform(size=5000) < 0.2).astype(int)
    return y, np.round(np.clip(rng.normal(0.2 + 0.2 * y, 0.15), 0.001, 0.999), 2)  # rounded: many ties


def test_auc_log_loss_and_brier_match_scikit_learn(data):
    y, p = data
    q = metrics.quality(y, p)
    assert q.auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert q.log_loss == pytest.approx(log_loss(y, p), abs=1e-12)
    assert q.brier == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert (q.rows, q.positives) == (5000, int(y.sum()))


def test_calibration_error_is_zero_for_calibrated_bins_and_grows_when_off():
    y = np.array([0, 0, 0, 1] * 25)
    assert metrics.calibration_error(y, np.full(100, 0.25)) == pytest.approx(0.0)
    assert metrics.calibration_error(y, np.full(100, 0.75)) == pytest.approx(0.5)


def test_paired_bootstrap_interval_matches_a_naive_bootstrap(data):
    # given two models on the same rows, the second noisier
    y, p = data
    rng = np.random.default_rng(9)
    q = np.clip(p + rng.normal(0, 0.1, len(p)), 0, 1)
    # when the difference is bootstrapped
    out = metrics.bootstrap_auc_difference(y, p, q, samples=400, confidence=0.9, seed=1)
    # then the interval holds the point estimate and agrees with resampling rows by hand
    naive = []
    for _ in range(400):
        i = rng.integers(0, len(y), len(y))
        naive.append(roc_auc_score(y[i], p[i]) - roc_auc_score(y[i], q[i]))
    low, high = np.quantile(naive, [0.05, 0.95])
    assert out["auc_difference_low"] < out["auc_difference"] < out["auc_difference_high"]
    assert out["auc_difference_low"] == pytest.approx(low, abs=0.01)
    assert out["auc_difference_high"] == pytest.approx(high, abs=0.01)


def test_identical_models_have_a_zero_difference():
    y = np.array([0, 1] * 100)
    p = np.linspace(0, 1, 200)
    out = metrics.bootstrap_auc_difference(y, p, p, samples=50, confidence=0.95)
    assert out["auc_difference"] == out["auc_difference_low"] == out["auc_difference_high"] == 0.0
