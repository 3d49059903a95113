from jobs.gate import decide
from jobs.metrics import Quality


def q(auc, ece=0.01):
    return Quality(rows=10000, positives=2000, auc=auc, log_loss=0.4, brier=0.1, calibration_error=ece)


def test_a_first_model_is_judged_on_overfitting_alone(spec):
    verdict = decide(q(0.80), 0.82, None, None, spec.gate, "models:/m/1", None)
    assert verdict.passed and [c.name for c in verdict.checks] == ["overfitting"]


def test_a_challenger_within_the_allowed_auc_drop_passes(spec):
    # given a challenger whose AUC interval against the champion reaches down to -0.005 (allowed: -0.01)
    verdict = decide(q(0.80), 0.82, q(0.805), -0.005, spec.gate, "models:/m/2", "models:/m/1")
    assert verdict.passed
    assert {c.name for c in verdict.checks} == {"overfitting", "auc", "calibration"}


def test_each_failing_check_fails_the_gate_and_says_why(spec):
    worse_auc = decide(q(0.78), 0.80, q(0.80), -0.03, spec.gate, "models:/m/2", "models:/m/1")
    assert not worse_auc.passed and any(r.startswith("FAIL auc") for r in worse_auc.reasons)
    worse_calibration = decide(q(0.80, ece=0.08), 0.81, q(0.80, ece=0.01), 0.0, spec.gate, "c", "p")
    assert not worse_calibration.passed and any(r.startswith("FAIL calibration") for r in worse_calibration.reasons)
    overfit = decide(q(0.80), 0.95, q(0.79), 0.0, spec.gate, "c", "p")
    assert not overfit.passed and any(r.startswith("FAIL overfitting") for r in overfit.reasons)
