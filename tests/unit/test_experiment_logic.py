"""Controlled rollouts, the pure logic: assignment, the replayed allocation history, the
always-valid test under daily looks (A/A simulation), bandit and A/B on generated data."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from jobs.core import experiment as xp
from jobs.core.metrics import auc as exact_auc
from jobs.errors import InvalidParameter

START = date(2026, 3, 1)


def make(kind="ab", versions=("1", "2"), shares=(0.5, 0.5), metric="auc", mde=0.02, max_days=60, **kw):
    return xp.design("churn-xp", "churn", kind, versions, shares, metric, mde, max_days, START, "binary", **kw)


def event(name, shares, day, at="0"):
    return xp.Event("churn-xp", name, tuple(shares), day, f"{day.isoformat()}T{at}", "test")


def test_bucket_counts_sum_to_all_buckets_and_follow_the_shares():
    for shares in ([0.5, 0.5], [0.9, 0.1], [1 / 3] * 3, [0.05, 0.05, 0.9], [0.33335, 0.33335, 0.3333]):
        counts = xp.bucket_counts(shares)
        assert sum(counts) == xp.BUCKETS
        assert all(abs(c - s * xp.BUCKETS) < 1 for c, s in zip(counts, shares, strict=True))


def test_a_change_of_shares_moves_only_the_buckets_it_must():
    table = xp.initial_table([0.5, 0.5])
    for shares in ([0.7, 0.3], [0.2, 0.8], [0.2, 0.8], [1.0, 0.0], [0.5, 0.5]):
        old_counts = np.bincount(table, minlength=len(shares))
        new = xp.reallocate(table, shares)
        moved = sum(a != b for a, b in zip(table, new, strict=True))
        assert moved == sum(max(0, int(o) - n) for o, n in zip(old_counts, xp.bucket_counts(shares), strict=True))
        assert list(np.bincount(new, minlength=len(shares))) == xp.bucket_counts(shares)
        table = new


def test_three_arms_taking_a_share_from_two_move_nothing_else():
    table = xp.initial_table([0.5, 0.5, 0.0])
    new = xp.reallocate(table, [0.4, 0.4, 0.2])
    changed = [b for b in range(xp.BUCKETS) if table[b] != new[b]]
    assert len(changed) == 2000 and all(new[b] == 2 for b in changed)


def test_a_key_keeps_its_arm_while_the_shares_do_not_change():
    d = make()
    history = [event("start", d.shares, START)]
    first = xp.state_on(d, history, START)
    later = xp.state_on(d, history, START + timedelta(days=20))
    keys = range(20_000)
    assert [first.arm_of(k) for k in keys] == [later.arm_of(k) for k in keys]


def test_the_python_reference_gives_the_declared_shares_within_sampling_error():
    table = xp.initial_table([0.9, 0.1])
    arms = np.array([xp.arm_of(table, "salt-1", k) for k in range(200_000)])
    share = arms.mean()
    assert abs(share - 0.1) < 4 * np.sqrt(0.1 * 0.9 / len(arms))


def test_replaying_the_history_gives_each_day_the_arms_it_had():
    d = make()
    history = [event("start", (0.5, 0.5), START), event("shares", (0.8, 0.2), START + timedelta(days=5)),
               event("guardrail", (1.0, 0.0), START + timedelta(days=9)),
               event("conclude", (1.0, 0.0), START + timedelta(days=12))]
    assert xp.state_on(d, history, START - timedelta(days=1)) is None
    assert xp.state_on(d, history, START + timedelta(days=4)).shares == (0.5, 0.5)
    day6 = xp.state_on(d, history, START + timedelta(days=6))
    assert day6.shares == (0.8, 0.2) and day6.active
    # a key on arm 1 after the change was on arm 1 before it (the shrinking arm only gives buckets up)
    before = xp.state_on(d, history, START)
    assert all(before.table[b] == 1 for b in range(xp.BUCKETS) if day6.table[b] == 1)
    assert xp.state_on(d, history, START + timedelta(days=10)).shares == (1.0, 0.0)
    assert not xp.state_on(d, history, START + timedelta(days=12)).active
    # the same events in another order of recording replay the same way
    assert xp.state_on(d, history[::-1], START + timedelta(days=6)) == day6


@pytest.mark.parametrize("kwargs,message", [
    ({"shares": (0.6, 0.6)}, "sum to 1.2"),
    ({"shares": (0.5, 0.3, 0.2)}, "3 given for 2 versions"),
    ({"metric": "accuracy"}, "primary metric 'accuracy'"),
    ({"metric": "rmse"}, "for a binary model one of auc, log_loss, brier"),
    ({"kind": "canary", "shares": (0.4, 0.6)}, "small share"),
    ({"kind": "canary", "versions": ("1", "2", "3"), "shares": (0.8, 0.1, 0.1)}, "one challenger"),
    ({"versions": ("1", "1")}, "distinct"),
    ({"kind": "rollout"}, "kind 'rollout'"),
    ({"mde": 0}, "minimum detectable effect"),
    ({"kind": "bandit", "versions": ("1", "2", "3"), "shares": (0.98, 0.01, 0.01)}, "floor share"),
])
def test_a_bad_design_is_one_clear_error(kwargs, message):
    with pytest.raises(InvalidParameter, match=message):
        make(**kwargs)


def test_delong_matches_the_exact_auc_and_a_bootstrap_variance():
    rng = np.random.default_rng(3)
    y = rng.random(3000) < 0.3
    a = y * 0.8 + rng.normal(0, 1, 3000)
    b = np.round(y * 0.5 + rng.normal(0, 1, 3000), 1)  # ties
    aucs, cov = xp.delong(y, [a, b])
    assert aucs[0] == pytest.approx(exact_auc(y, a), abs=1e-12)
    assert aucs[1] == pytest.approx(exact_auc(y, b), abs=1e-12)
    boot = []
    for _ in range(400):
        i = rng.integers(0, 3000, 3000)
        boot.append(exact_auc(y[i], a[i]) - exact_auc(y[i], b[i]))
    paired = xp.paired_auc_difference(y, a, b)
    assert paired.variance == pytest.approx(np.var(boot), rel=0.25)


def test_the_boundary_is_where_the_likelihood_ratio_reaches_one_over_alpha():
    for v in (1e-4, 1e-3, 0.04):
        t = xp.msprt(xp.Estimate(0.0, v, 100), 0.02, 0.05)
        at = xp.msprt(xp.Estimate(t.boundary * np.sqrt(v) * (1 + 1e-9), v, 100), 0.02, 0.05)
        below = xp.msprt(xp.Estimate(t.boundary * np.sqrt(v) * (1 - 1e-6), v, 100), 0.02, 0.05)
        assert at.rejects and not below.rejects
        assert at.likelihood_ratio == pytest.approx(20.0, rel=1e-5)


@pytest.mark.parametrize("metric", ["auc", "brier"])
def test_an_a_a_experiment_with_daily_looks_keeps_the_false_positive_rate(metric):
    """2,000 simulated A/A experiments (one model, rows split between two arms), a look every day for 30 days:
    the share that ever rejects stays within alpha + 0.01, where a fixed-horizon z test repeated at every look
    would reject far more often."""
    rng = np.random.default_rng(11)
    alpha, experiments, days, per_day = 0.05, 2000, 30, 40
    false_positives, naive = 0, 0
    n = days * per_day
    for _ in range(experiments):
        # one model serves both arms: truth and score drawn the same way for every row
        signal = rng.normal(0, 1, (2, n))
        y = rng.random((2, n)) < 1 / (1 + np.exp(-(signal - 1.0)))
        p = 1 / (1 + np.exp(-(0.8 * signal + rng.normal(0, 0.6, (2, n)) - 1.0)))
        rejected = peeked = False
        for look in range(1, days + 1):
            m = look * per_day
            a, b = xp.estimate(metric, y[0, :m], p[0, :m]), xp.estimate(metric, y[1, :m], p[1, :m])
            test = xp.msprt(xp.unpaired_difference(b, a), 0.02, alpha)
            rejected = rejected or test.rejects
            peeked = peeked or abs(test.z) > 1.96
        false_positives += rejected
        naive += peeked
    rate = false_positives / experiments
    assert rate <= alpha + 0.01, rate
    assert naive / experiments > 2 * alpha, naive / experiments  # what the daily looks would cost a naive test


def simulate(kind: str, days: int = 40, rows: int = 1500, delay: int = 3, seed: int = 5):
    """Generated data where version 2 ranks better than version 1: run an experiment day by day with
    the real assignment and analysis, labels maturing `delay` days after scoring."""
    rng = np.random.default_rng(seed)
    d = make(kind=kind, shares=None if kind != "canary" else (0.9, 0.1), mde=0.03, max_days=days,
             **({"floor": 0.05} if kind == "bandit" else {}))
    history = [xp.Event(d.id, "start", d.shares, START, "0", "start")]
    served, ys, scores, scored_days = [], [], [], []
    decisions = []
    for i in range(days):
        day = START + timedelta(days=i)
        state = xp.state_on(d, history, day)
        if not state.active:
            break
        keys = rng.integers(0, 10**9, rows)
        signal = rng.normal(0, 1, rows)
        y = rng.random(rows) < 1 / (1 + np.exp(-(1.5 * signal - 1.5)))
        worse = 1 / (1 + np.exp(-(1.0 * signal + rng.normal(0, 1, rows) - 1.5)))
        better = 1 / (1 + np.exp(-(1.2 * signal + rng.normal(0, 1, rows) - 1.5)))
        served.append(np.array([state.arm_of(int(k)) for k in keys]))
        ys.append(y)
        scores.append(np.vstack([worse, better]))
        scored_days.append(np.full(rows, day.toordinal()))
        matured = i - delay + 1  # days whose labels are known today
        if matured <= 0:
            continue
        decision = xp.analyse(d, state, np.concatenate(ys[:matured]).astype(float),
                              np.hstack(scores[:matured]), np.concatenate(served[:matured]),
                              np.concatenate(scored_days[:matured]), day, START + timedelta(days=matured - 1))
        decisions.append((day, decision))
        name = "conclude" if decision.conclude else ("guardrail" if decision.stop_arms else "shares")
        if decision.conclude or decision.shares != state.shares:
            history.append(xp.Event(d.id, name, decision.shares, day + timedelta(days=1), str(i), decision.reason))
    return d, history, decisions


def test_a_bandit_moves_most_of_the_traffic_to_the_better_version():
    d, history, decisions = simulate("bandit")
    moving = [e.shares[1] for e in history[:-1]]  # the allocations before the conclusion
    assert len(moving) >= 3 and max(moving) > 0.75, moving
    last = decisions[-1][1]
    assert last.conclude and last.winner == 1, last.reason
    assert all(s >= d.floor - 1e-9 for e in history[:-1] for s in e.shares)  # no arm starved before the end


def test_an_ab_test_concludes_for_the_better_version():
    d, history, decisions = simulate("ab")
    day, last = decisions[-1]
    assert last.conclude and last.winner == 1, last.reason
    assert history[-1].event == "conclude" and history[-1].shares == (0.0, 1.0)
    assert day < START + timedelta(days=d.max_days - 1)  # decided before the maximum duration


def test_a_worse_canary_is_stopped_by_the_guardrail_from_the_next_day():
    rng_design = make(kind="canary", versions=("2", "1"), shares=(0.7, 0.3), mde=0.03)
    rng = np.random.default_rng(2)
    n = 6000
    signal = rng.normal(0, 1, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * signal - 1.5)))).astype(float)
    good = 1 / (1 + np.exp(-(1.2 * signal - 1.5)))
    bad = 1 / (1 + np.exp(-(0.2 * signal + rng.normal(0, 1, n) - 1.5)))
    state = xp.state_on(rng_design, [xp.Event(rng_design.id, "start", rng_design.shares, START, "0", "")], START)
    served = np.array([state.arm_of(k) for k in range(n)])
    decision = xp.analyse(rng_design, state, y, np.vstack([good, bad]), served, np.full(n, START.toordinal()), START)
    assert decision.stop_arms == [1] and decision.conclude and decision.winner == 0
    assert decision.shares == (1.0, 0.0)


def test_sample_size_matches_the_textbook_formula_for_a_mean():
    # two arms, per-row variance 0.25, difference 0.01, alpha 0.05, power 0.8: 2 * 0.25 * (1.96 + 0.84)^2 / 1e-4
    assert xp.sample_size("brier", 0.25, 0.01, 0.05) == pytest.approx(39_245, rel=0.002)


def test_a_regression_ab_test_concludes_for_the_control_when_the_challenger_is_worse():
    d = xp.design("spend-ab", "spend", "ab", ["1", "2"], [0.5, 0.5], "rmse", 0.5, 8, START, "regression")
    rng = np.random.default_rng(4)
    n = 20_000
    x = rng.normal(0, 1, n)
    y = 50 + 10 * np.sin(2 * x) + rng.normal(0, 3, n)
    good = 50 + 10 * np.sin(2 * x)            # the champion got the shape
    linear = 50 + 4 * x                       # the linear challenger did not
    state = xp.state_on(d, [xp.Event(d.id, "start", d.shares, START, "0", "")], START)
    served = np.array([state.arm_of(k) for k in range(n)])
    decision = xp.analyse(d, state, y, np.vstack([good, linear]), served, np.full(n, START.toordinal()),
                          START + timedelta(days=30), START)
    assert decision.conclude and decision.winner == 0 and "every challenger is worse" in decision.reason
    [test] = decision.tests
    assert test["rejects"] and test["difference"] > 0  # RMSE higher: worse
    assert test["paired_low"] > 0  # the paired bootstrap interval of the RMSE difference excludes 0
    assert decision.arms[0]["rmse"] == pytest.approx(3.0, rel=0.05)


def test_a_guardrail_stops_only_serving_challengers_that_fail_while_the_control_passes():
    d = make(kind="bandit", versions=("1", "2", "3"), shares=(0.4, 0.3, 0.3))
    state = xp.state_on(d, [event("start", d.shares, START)], START)
    assert xp.guardrail_stops(state, [False, True, False]) == [1]
    assert xp.guardrail_stops(state, [True, True, True], control_failing=True) == []
    stopped = xp.State(d, (0.5, 0.0, 0.5), state.table, True)
    assert xp.guardrail_stops(stopped, [False, True, True]) == [2]  # arm 1 serves nothing already
    assert xp.without((0.4, 0.3, 0.3), [1, 2]) == (1.0, 0.0, 0.0)
