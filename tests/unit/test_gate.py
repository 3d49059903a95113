from jobs.core.gate import decide
from jobs.core.metrics import Quality


def q(auc, ece=0.01):
    return Quality("binary", 10000, {"positives": 2000, "auc": auc, "log_loss": 0.4, "brier": 0.1,
                                     "calibration_error": ece})


def r(rmse, ece=0.02):
    return Quality("regression", 10000, {"label_mean": 50.0, "rmse": rmse, "mae": 0.8 * rmse, "r2": 0.6,
                                         "calibration_error": ece})


def test_a_first_model_is_judged_on_overfitting_alone(spec):
    verdict = decide("auc", q(0.80), 0.82, None, None, spec.gate, "models:/m/1", None)
    assert verdict.passed and [c.name for c in verdict.checks] == ["overfitting"]


def test_a_challenger_within_the_allowed_auc_drop_passes(spec):
    # given a challenger whose AUC interval against the champion reaches down to -0.005 (allowed: -0.01)
    verdict = decide("auc", q(0.80), 0.82, q(0.805), (-0.005, 0.004), spec.gate, "models:/m/2", "models:/m/1")
    assert verdict.passed
    assert {c.name for c in verdict.checks} == {"overfitting", "auc", "calibration"}


def test_each_failing_check_fails_the_gate_and_says_why(spec):
    worse_auc = decide("auc", q(0.78), 0.80, q(0.80), (-0.03, -0.01), spec.gate, "models:/m/2", "models:/m/1")
    assert not worse_auc.passed and any(r.startswith("FAIL auc") for r in worse_auc.reasons)
    worse_calibration = decide("auc", q(0.80, ece=0.08), 0.81, q(0.80, ece=0.01), (0.0, 0.01), spec.gate, "c", "p")
    assert not worse_calibration.passed and any(r.startswith("FAIL calibration") for r in worse_calibration.reasons)
    overfit = decide("auc", q(0.80), 0.95, q(0.79), (0.0, 0.02), spec.gate, "c", "p")
    assert not overfit.passed and any(r.startswith("FAIL overfitting") for r in overfit.reasons)


def test_a_metric_where_lower_is_better_is_judged_the_other_way_round(spec):
    gate = spec.gate.model_copy(update={"max_degradation": 0.5, "max_overfit_gap": 1.0})
    # an RMSE interval of the difference up to +0.3 (at worst 0.3 worse; allowed 0.5) passes
    better = decide("rmse", r(10.0), 9.5, r(10.1), (-0.4, 0.3), gate, "c", "p")
    assert better.passed, better.reasons
    # up to +0.7 fails: the worse end of the interval is what counts, for RMSE the upper one
    worse = decide("rmse", r(10.6), 10.2, r(10.1), (0.1, 0.7), gate, "c", "p")
    assert not worse.passed and any(x.startswith("FAIL rmse") for x in worse.reasons)
    # train RMSE far below the holdout's is overfitting (the gap is oriented: positive = better on train)
    overfit = decide("rmse", r(10.0), 8.5, None, None, gate, "c", None)
    assert not overfit.passed and overfit.checks[0].value == 1.5
