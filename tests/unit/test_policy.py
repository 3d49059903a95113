from datetime import date

from jobs.core.policy import Facts, decide

DAY = date(2026, 3, 1)


def facts(**kw):
    base = dict(as_of=DAY, drift_breaches=(False, False, False), champion_metric=("auc", 0.80),
                champion_trained_on=date(2026, 2, 20), last_training=date(2026, 2, 20), new_labelled_rows=50_000)
    return Facts(**{**base, **kw})


def test_nothing_fires_nothing_happens_and_the_reasons_say_so(spec):
    d = decide(facts(), spec.retraining)
    assert not d.retrain and not d.triggers
    assert any(r.startswith("ok: drift breached on 0 of the last 3") for r in d.reasons)


def test_n_of_the_last_m_drift_breaches_trigger_retraining(spec):
    assert decide(facts(drift_breaches=(True, False, True)), spec.retraining).retrain
    # older breaches fall out of the window of the last M days
    assert not decide(facts(drift_breaches=(True, True, False, False, True)), spec.retraining).retrain


def test_poor_matured_performance_or_age_trigger_retraining(spec):
    assert decide(facts(champion_metric=("auc", 0.65)), spec.retraining).retrain
    old = decide(facts(champion_trained_on=date(2026, 1, 1), last_training=date(2026, 1, 1)), spec.retraining)
    assert old.retrain and any("trained 59 days ago" in t for t in old.triggers)


def test_cooldown_and_too_little_new_data_block_a_trigger(spec):
    recent = decide(facts(drift_breaches=(True, True, True), last_training=date(2026, 2, 27)), spec.retraining)
    assert not recent.retrain and any(b.startswith("cooldown") for b in recent.blockers)
    thin = decide(facts(drift_breaches=(True, True, True), new_labelled_rows=10), spec.retraining)
    assert not thin.retrain and any("new labelled rows" in b for b in thin.blockers)


def test_no_champion_or_an_operator_forces_training(spec):
    assert decide(facts(has_champion=False, new_labelled_rows=0), spec.retraining).retrain
    forced = decide(facts(last_training=date(2026, 2, 28)), spec.retraining, force=True)
    assert forced.retrain and "forced by the operator" in forced.triggers
