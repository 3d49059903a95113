import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, mean_absolute_error, r2_score, roc_auc_score

from jobs.core import metrics


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    y = (rng.uniform(size=5000) < 0.2).astype(int)
    return y, np.round(np.clip(rng.normal(0.2 + 0.2 * y, 0.15), 0.001, 0.999), 2)  # rounded: many ties


def test_auc_log_loss_and_brier_match_scikit_learn(data):
    y, p = data
    q = metrics.quality(y, p)
    assert q.auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert q["log_loss"] == pytest.approx(log_loss(y, p), abs=1e-12)
    assert q["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert (q.rows, q["positives"]) == (5000, int(y.sum()))


def test_calibration_error_is_zero_for_calibrated_bins_and_grows_when_off():
    y = np.array([0, 0, 0, 1] * 25)
    assert metrics.calibration_error(y, np.full(100, 0.25)) == pytest.approx(0.0)
    assert metrics.calibration_error(y, np.full(100, 0.75)) == pytest.approx(0.5)


@pytest.fixture
def regression():
    rng = np.random.default_rng(4)
    y = rng.gamma(2.0, 20.0, 4000)
    return y, np.round(y + rng.normal(0, 8, len(y)), 1)


def test_rmse_mae_and_r2_match_scikit_learn(regression):
    y, p = regression
    q = metrics.quality(y, p, task="regression")
    assert q["rmse"] == pytest.approx(np.sqrt(np.mean((y - p) ** 2)), abs=1e-12)
    assert q["mae"] == pytest.approx(mean_absolute_error(y, p), abs=1e-12)
    assert q["r2"] == pytest.approx(r2_score(y, p), abs=1e-12)
    assert (q.rows, q["label_mean"]) == (4000, pytest.approx(y.mean()))


def test_regression_calibration_is_near_zero_for_an_unbiased_model_and_sees_a_bias():
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 100, 20000)
    y = x + rng.normal(0, 5, len(x))
    assert metrics.quality(y, x, task="regression").calibration_error < 0.02
    # predictions 10% too high at the top: the bins of high predictions show it, in outcome deviations
    biased = np.where(x > 50, x * 1.1, x)
    error = metrics.quality(y, biased, task="regression").calibration_error
    assert error == pytest.approx(np.mean(np.where(x > 50, 0.1 * x, 0)) / y.std(), rel=0.1)


def naive_interval(metric, y, a, b, confidence, seed=9, samples=400):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(samples):
        i = rng.integers(0, len(y), len(y))
        out.append(metric(y[i], a[i]) - metric(y[i], b[i]))
    return np.quantile(out, [(1 - confidence) / 2, (1 + confidence) / 2])


def test_paired_bootstrap_interval_matches_a_naive_bootstrap(data):
    # given two models on the same rows, the second noisier
    y, p = data
    rng = np.random.default_rng(9)
    q = np.clip(p + rng.normal(0, 0.1, len(p)), 0, 1)
    # when the difference is bootstrapped
    out = metrics.bootstrap_difference("binary", "auc", y, p, q, samples=400, confidence=0.9, seed=1)
    # then the interval holds the point estimate and agrees with resampling rows by hand
    low, high = naive_interval(roc_auc_score, y, p, q, 0.9)
    assert out["auc_difference_low"] < out["auc_difference"] < out["auc_difference_high"]
    assert out["auc_difference_low"] == pytest.approx(low, abs=0.01)
    assert out["auc_difference_high"] == pytest.approx(high, abs=0.01)


@pytest.mark.parametrize("metric,reference", [
    ("rmse", lambda y, p: np.sqrt(np.mean((y - p) ** 2))),
    ("mae", mean_absolute_error),
    ("r2", r2_score),
])
def test_the_bootstrap_of_a_regression_metric_matches_a_naive_bootstrap(regression, metric, reference):
    y, p = regression
    worse = p + np.random.default_rng(2).normal(0, 4, len(p))
    out = metrics.bootstrap_difference("regression", metric, y, p, worse, samples=400, confidence=0.9, seed=1)
    low, high = naive_interval(reference, y, p, worse, 0.9)
    spread = high - low
    assert out[f"{metric}_difference"] == pytest.approx(reference(y, p) - reference(y, worse), abs=1e-9)
    assert out[f"{metric}_difference_low"] == pytest.approx(low, abs=0.15 * spread)
    assert out[f"{metric}_difference_high"] == pytest.approx(high, abs=0.15 * spread)


@pytest.mark.parametrize("task,metric", [("binary", "log_loss"), ("binary", "brier"), ("binary", "calibration_error"),
                                         ("regression", "calibration_error")])
def test_every_weighted_metric_with_unit_weights_is_the_metric(data, regression, task, metric):
    y, p = data if task == "binary" else regression
    one = metrics._weighted(metric, task, np.asarray(y, float), np.asarray(p, float), np.ones((1, len(y))), 10)[0]
    assert one == pytest.approx(metrics.quality(y, p, 10, task)[metric], rel=1e-9)


def test_identical_models_have_a_zero_difference():
    y = np.array([0, 1] * 100)
    p = np.linspace(0, 1, 200)
    out = metrics.bootstrap_difference("binary", "auc", y, p, p, samples=50, confidence=0.95)
    assert out["auc_difference"] == out["auc_difference_low"] == out["auc_difference_high"] == 0.0
