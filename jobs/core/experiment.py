"""Controlled rollouts between model versions: the pure logic (no Spark, no MLflow).

An experiment serves each entity one arm (a model version) from a hash of the
experiment's salt and the entity's key into `BUCKETS` buckets; a table says which arm
owns each bucket. The table is never stored: it is replayed from the experiment's
events (start, share changes, guardrail stops, conclusion), so a past day's arms are
always the ones that day had. A share change moves only the buckets it must: an arm
that shrinks gives up its highest buckets, an arm that grows takes the lowest freed ones.

The decision is an always-valid sequential test (the mixture SPRT of Johari, Pekelis and
Walsh, "Always valid inference", 2017): with a normal mixing distribution of scale tau
on the difference between two arms, the likelihood ratio

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 * d^2 / (2 * V * (V + tau^2)))

(d the estimated difference, V its variance) stays below 1/alpha with probability at
least 1 - alpha under "no difference" at every look at once, however many looks there
are and whenever they happen. That fits a batch experiment: labels mature a day at a
time, an analysis runs every day, and the number of looks is not known in advance, which
a group-sequential design with alpha spending needs. tau is the declared minimum
detectable effect. With several challengers, each comparison with the control gets
alpha / (arms - 1).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from statistics import NormalDist
from typing import Any

import numpy as np

from jobs.core.metrics import bootstrap_difference, midranks, oriented
from jobs.errors import InvalidParameter

BUCKETS = 10_000
EXPERIMENT_ID = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,63}")
KINDS = ("canary", "ab", "bandit")
# the metrics an experiment can be decided on: each has a per-row variance the sequential test can use
METRICS = {"binary": ("auc", "log_loss", "brier"), "regression": ("rmse", "mae")}
ENDING = ("conclude", "stop")
CANARY_MAX_SHARE = 0.5
WIN_PROBABILITY = 0.95  # a bandit concludes when one arm is best with this posterior probability
PAIRED_BOOTSTRAP = 200  # replicates of the paired bootstrap of a metric other than AUC


# -- the design ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Design:
    """What an experiment fixes when it starts. versions[0] is the control (the champion)."""

    id: str
    model: str
    kind: str
    versions: tuple[str, ...]
    shares: tuple[float, ...]
    primary_metric: str
    mde: float
    max_days: int
    start: date
    alpha: float = 0.05
    floor: float = 0.05
    task: str = "binary"

    @property
    def salt(self) -> str:
        return self.id

    @property
    def last_day(self) -> date:
        return date.fromordinal(self.start.toordinal() + self.max_days - 1)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "start": self.start.isoformat(), "versions": list(self.versions),
                "shares": list(self.shares)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Design:
        return cls(**{**d, "start": date.fromisoformat(d["start"]), "versions": tuple(str(v) for v in d["versions"]),
                      "shares": tuple(float(s) for s in d["shares"])})


def check_shares(shares: Sequence[float], arms: int, what: str = "shares") -> tuple[float, ...]:
    """Shares, one per arm, each in [0, 1], summing to one."""
    if len(shares) != arms:
        raise InvalidParameter(f"{what}: {len(shares)} given for {arms} versions; give one share per version")
    values = tuple(float(s) for s in shares)
    if any(not math.isfinite(s) or s < 0 or s > 1 for s in values):
        raise InvalidParameter(f"{what} {list(values)}: each must be between 0 and 1")
    if abs(sum(values) - 1.0) > 1e-6:
        raise InvalidParameter(f"{what} {list(values)} sum to {sum(values):.6g}, not 1")
    return values


def design(id: str, model: str, kind: str, versions: Sequence[str], shares: Sequence[float] | None,
           primary_metric: str, mde: float, max_days: int, start: date, task: str, alpha: float = 0.05,
           floor: float = 0.05) -> Design:
    """A checked design, or one InvalidParameter naming what is wrong."""
    if not EXPERIMENT_ID.fullmatch(id or ""):
        raise InvalidParameter(f"experiment id {id!r}: a letter, then letters, digits, '_' or '-' (at most 64)")
    if kind not in KINDS:
        raise InvalidParameter(f"kind {kind!r}: one of {', '.join(KINDS)}")
    versions = tuple(str(v) for v in versions)
    if len(versions) < 2 or len(set(versions)) != len(versions):
        raise InvalidParameter(f"versions {list(versions)}: give two or more distinct versions, the control first")
    if kind == "canary" and len(versions) != 2:
        raise InvalidParameter(f"a canary has one challenger: versions {list(versions)} give {len(versions) - 1}")
    if task not in METRICS or primary_metric not in METRICS[task]:
        raise InvalidParameter(f"primary metric {primary_metric!r}: for a {task} model one of "
                               f"{', '.join(METRICS.get(task, ()))}")
    if not (isinstance(mde, int | float) and math.isfinite(mde) and mde > 0):
        raise InvalidParameter(f"minimum detectable effect {mde!r}: a positive difference of {primary_metric}")
    if not (isinstance(max_days, int) and 1 <= max_days <= 366):
        raise InvalidParameter(f"maximum duration {max_days!r}: 1 to 366 days")
    if not 0 < alpha < 0.5:
        raise InvalidParameter(f"alpha {alpha!r}: between 0 and 0.5")
    if kind == "bandit" and not 0 <= floor * len(versions) < 1:
        raise InvalidParameter(f"floor share {floor} times {len(versions)} arms must stay below 1")
    if shares is None:
        if kind == "canary":
            raise InvalidParameter("a canary needs its shares, e.g. 0.95,0.05")
        shares = [1 / len(versions)] * len(versions)
    values = check_shares(shares, len(versions))
    if kind == "canary" and not 0 < values[1] <= CANARY_MAX_SHARE:
        raise InvalidParameter(f"a canary serves its challenger to a small share: {values[1]} is not in "
                               f"(0, {CANARY_MAX_SHARE}]")
    if kind == "bandit" and min(values) < floor - 1e-9:
        raise InvalidParameter(f"bandit shares {list(values)}: each at least the floor share {floor}")
    return Design(id, model, kind, versions, values, primary_metric, float(mde), max_days, start, alpha, floor, task)


# -- assignment --------------------------------------------------------------------------------
def bucket(salt: str, key: Any) -> int:
    """The bucket of a key: the first 32 bits of md5("salt:key") modulo BUCKETS (as the Spark expression)."""
    return int(hashlib.md5(f"{salt}:{key}".encode()).hexdigest()[:8], 16) % BUCKETS


def bucket_counts(shares: Sequence[float]) -> list[int]:
    """Whole buckets per arm, summing to BUCKETS (largest remainder; ties to the earlier arm)."""
    exact = [s * BUCKETS for s in shares]
    counts = [math.floor(x + 1e-9) for x in exact]
    order = sorted(range(len(shares)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:BUCKETS - sum(counts)]:
        counts[i] += 1
    return counts


def initial_table(shares: Sequence[float]) -> tuple[int, ...]:
    """Arm of every bucket when an experiment starts: contiguous ranges in arm order."""
    table: list[int] = []
    for arm, n in enumerate(bucket_counts(shares)):
        table += [arm] * n
    return tuple(table)


def reallocate(table: Sequence[int], shares: Sequence[float]) -> tuple[int, ...]:
    """The table after a change of shares, moving only the buckets it must (sum of the shrinking arms' losses)."""
    target = bucket_counts(shares)
    owned: list[list[int]] = [[] for _ in shares]
    for b, arm in enumerate(table):
        owned[arm].append(b)
    freed = sorted(b for arm, bs in enumerate(owned) for b in bs[target[arm]:] if len(bs) > target[arm])
    new = list(table)
    position = 0
    for arm, bs in enumerate(owned):
        for _ in range(max(0, target[arm] - len(bs))):
            new[freed[position]] = arm
            position += 1
    return tuple(new)


def ranges(table: Sequence[int]) -> list[tuple[int, int, int]]:
    """The table as (first bucket, end bucket (exclusive), arm) runs: what the Spark expression tests."""
    out: list[tuple[int, int, int]] = []
    start = 0
    for b in range(1, len(table) + 1):
        if b == len(table) or table[b] != table[start]:
            out.append((start, b, table[start]))
            start = b
    return out


def arm_of(table: Sequence[int], salt: str, key: Any) -> int:
    """The arm that serves a key (the plain-Python reference of the Spark expression)."""
    return table[bucket(salt, key)]


# -- the event history -------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    """One recorded change of an experiment; `shares` is the allocation from `effective_from` on."""

    experiment: str
    event: str
    shares: tuple[float, ...]
    effective_from: date
    at: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shares": list(self.shares), "effective_from": self.effective_from.isoformat()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Event:
        return cls(d["experiment"], d["event"], tuple(float(s) for s in d["shares"]),
                   date.fromisoformat(d["effective_from"]), d["at"], d["reason"], dict(d.get("details") or {}))


@dataclass(frozen=True)
class State:
    """An experiment as it stands on one day."""

    design: Design
    shares: tuple[float, ...]
    table: tuple[int, ...]
    active: bool

    def arm_of(self, key: Any) -> int:
        return arm_of(self.table, self.design.salt, key)


def ordered(events: Sequence[Event]) -> list[Event]:
    return sorted(events, key=lambda e: (e.effective_from, e.at))


def state_on(start: Design, events: Sequence[Event], day: date) -> State | None:
    """The allocation that applies on `day` (None before the experiment starts), replayed from its events."""
    applying = [e for e in ordered(events) if e.experiment == start.id and e.effective_from <= day]
    if not applying or day < start.start:
        return None
    table, shares = initial_table(start.shares), start.shares
    for e in applying:
        if e.event != "start" and e.shares != shares:
            table, shares = reallocate(table, e.shares), e.shares
    return State(start, shares, table, not any(e.event in ENDING for e in applying))


# -- statistics --------------------------------------------------------------------------------
def delong(y: np.ndarray, scores: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of several models on the same rows and their covariance (DeLong et al. 1988, with midranks)."""
    y = np.asarray(y).astype(bool)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    m, n = len(pos), len(neg)
    k = len(scores)
    if m < 2 or n < 2:
        return np.full(k, np.nan), np.full((k, k), np.nan)
    v10, v01, aucs = np.empty((k, m)), np.empty((k, n)), np.empty(k)
    for i, s in enumerate(scores):
        s = np.asarray(s, float)
        tz = midranks(np.concatenate([s[pos], s[neg]]))
        tx, ty = midranks(s[pos]), midranks(s[neg])
        aucs[i] = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
        v10[i] = (tz[:m] - tx) / n
        v01[i] = 1.0 - (tz[m:] - ty) / m
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def row_losses(metric: str, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-row terms whose mean is the metric (squared error for rmse, taken through the delta method)."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    if metric == "log_loss":
        eps = np.finfo(float).eps
        q = np.clip(p, eps, 1 - eps)
        return -(y * np.log(q) + (1 - y) * np.log(1 - q))
    if metric in ("brier", "rmse"):
        return (p - y) ** 2
    if metric == "mae":
        return np.abs(p - y)
    raise ValueError(f"{metric!r} is not a mean of per-row terms")


@dataclass(frozen=True)
class Estimate:
    """A metric on some rows and the variance of that estimate."""

    value: float
    variance: float
    rows: int

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        z = NormalDist().inv_cdf(0.5 + confidence / 2)
        half = z * math.sqrt(max(self.variance, 0.0))
        return self.value - half, self.value + half


def estimate(metric: str, y: np.ndarray, p: np.ndarray) -> Estimate:
    """The metric on these rows with its variance (DeLong for AUC, the per-row terms otherwise)."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    n = len(y)
    if metric == "auc":
        aucs, cov = delong(y, [p])
        return Estimate(float(aucs[0]), float(cov[0, 0]), n)
    if n < 2:
        return Estimate(float("nan"), float("nan"), n)
    terms = row_losses(metric, y, p)
    mean, var = float(terms.mean()), float(terms.var(ddof=1) / n)
    if metric == "rmse":  # sqrt of the mean squared error: delta method
        value = math.sqrt(mean)
        return Estimate(value, var / (4 * mean) if mean > 0 else float("nan"), n)
    return Estimate(mean, var, n)


def paired_auc_difference(y: np.ndarray, challenger: np.ndarray, control: np.ndarray) -> Estimate:
    """AUC(challenger) - AUC(control) on the same rows, with DeLong's paired variance."""
    aucs, cov = delong(y, [challenger, control])
    return Estimate(float(aucs[0] - aucs[1]), float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), len(y))


def unpaired_difference(challenger: Estimate, control: Estimate) -> Estimate:
    """challenger - control on disjoint rows (each arm's served rows): the variances add."""
    return Estimate(challenger.value - control.value, challenger.variance + control.variance,
                    challenger.rows + control.rows)


@dataclass(frozen=True)
class Test:
    """The mixture SPRT at one look: the z statistic, the |z| it must reach, and the verdict."""

    z: float
    boundary: float
    likelihood_ratio: float
    rejects: bool


def msprt(difference: Estimate, tau: float, alpha: float) -> Test:
    """Always-valid test of "no difference" (see the module docstring)."""
    v, t2 = difference.variance, tau * tau
    if not (math.isfinite(v) and v > 0 and math.isfinite(difference.value)):
        return Test(0.0, float("inf"), 0.0, False)
    z = difference.value / math.sqrt(v)
    log_lr = 0.5 * math.log(v / (v + t2)) + t2 * difference.value ** 2 / (2 * v * (v + t2))
    # Lambda >= 1/alpha  <=>  |z| >= boundary
    boundary = math.sqrt((v + t2) / t2 * (2 * math.log(1 / alpha) + math.log((v + t2) / v)))
    return Test(z, boundary, math.exp(min(log_lr, 700.0)), log_lr >= math.log(1 / alpha))


def influence_variance(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    """Per-row variance of the metric: Var(estimate) is about this divided by the rows."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    e = estimate(metric, y, p)
    return e.variance * len(y)


def sample_size(metric: str, per_row_variance: float, mde: float, alpha: float, power: float = 0.8,
                arms: int = 2) -> int:
    """About how many matured rows each arm needs to detect `mde` (two-sided, fixed horizon, equal arms).

    The always-valid test pays for its daily looks with somewhat more rows than this."""
    if not (math.isfinite(per_row_variance) and per_row_variance > 0):
        return 0
    z = NormalDist().inv_cdf(1 - alpha / (2 * max(arms - 1, 1))) + NormalDist().inv_cdf(power)
    return math.ceil(2 * per_row_variance * z * z / (mde * mde))


# -- bandits -----------------------------------------------------------------------------------
def reward(task: str, y: np.ndarray, served: np.ndarray, scale: float | None = None) -> tuple[float, int]:
    """(successes, trials) of one arm on one day's matured served rows.

    Binary: among the rows the arm ranked in its top decile (the entities a team acts on),
    how many were positive. Regression: exp(-|error| / scale) per row, in (0, 1], scale the
    outcome's standard deviation that day: a fractional success that the Beta posterior takes."""
    y, s = np.asarray(y, float), np.asarray(served, float)
    if len(y) == 0:
        return 0.0, 0
    if task == "binary":
        top = s >= np.quantile(s, 0.9)
        return float(y[top].sum()), int(top.sum())
    scale = scale if scale and scale > 0 else float(np.std(y)) or 1.0
    return float(np.exp(-np.abs(s - y) / scale).sum()), len(y)


def probability_best(successes: Sequence[float] | np.ndarray, trials: Sequence[float] | np.ndarray, draws: int = 20_000,
                     seed: int = 0) -> np.ndarray:
    """Posterior probability that each arm has the highest reward rate (Beta(1 + s, 1 + f) per arm)."""
    rng = np.random.default_rng(seed)
    s, t = np.asarray(successes, float), np.asarray(trials, float)
    samples = rng.beta(1 + s[:, None], 1 + np.maximum(t - s, 0)[:, None], size=(len(s), draws))
    wins = np.bincount(samples.argmax(axis=0), minlength=len(s))
    return wins / draws


def thompson_shares(p_best: Sequence[float] | np.ndarray, floor: float, live: Sequence[bool]) -> tuple[float, ...]:
    """Shares proportional to the probability of being best, each live arm at least `floor`, stopped arms 0."""
    p = np.where(np.asarray(live), np.asarray(p_best, float), 0.0)
    n = int(np.sum(live))
    if p.sum() == 0:
        p = np.asarray(live, float)
    shares = np.where(live, floor + (1 - n * floor) * p / p.sum(), 0.0)
    rounded = np.round(shares, 4)
    rounded[int(np.argmax(rounded))] += 1.0 - rounded.sum()
    return tuple(float(x) for x in rounded)


def without(shares: Sequence[float], arms: Sequence[int]) -> tuple[float, ...]:
    """The shares with `arms` stopped: their share goes to the control (arm 0)."""
    out = list(shares)
    for a in arms:
        out[0] += out[a]
        out[a] = 0.0
    return tuple(out)


def seed_of(*parts: Any) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:8], 16)


# -- one day's analysis ------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """What one look concludes: per-arm figures, the tests, share changes, stops and a conclusion."""

    arms: list[dict[str, Any]]
    tests: list[dict[str, Any]]
    shares: tuple[float, ...]
    stop_arms: list[int]
    conclude: bool
    winner: int | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shares": list(self.shares)}


def analyse(d: Design, state: State, y: np.ndarray, scores: np.ndarray, served_arm: np.ndarray,
            days: np.ndarray, today: date, matured_through: date | None = None) -> Decision:
    """Judge an experiment on every matured row so far.

    y: outcome per row; scores: (arms, rows), every arm's score on every row; served_arm: the
    arm that served each row; days: the scored day of each row (ordinals). `today` is the day
    of the look: shares and stops it decides apply from the next day. `matured_through` is the
    last scored day whose labels are known today (default: today): once it reaches the
    experiment's last day, the maximum duration has been judged in full."""
    metric, k = d.primary_metric, len(d.versions)
    live = [s > 0 for s in state.shares]
    alpha = d.alpha / (k - 1)
    arms, tests = [], []
    per_arm = []
    for a in range(k):
        rows = served_arm == a
        e = estimate(metric, y[rows], scores[a, rows]) if rows.sum() >= 2 else Estimate(float("nan"), float("nan"),
                                                                                          int(rows.sum()))
        per_arm.append(e)
        low, high = e.interval(1 - d.alpha)
        arms.append({"arm": a, "version": d.versions[a], "share": state.shares[a], "served_rows": int(rows.sum()),
                     metric: e.value, f"{metric}_low": low, f"{metric}_high": high})
    better: list[int] = []
    worse: list[int] = []
    for a in range(1, k):
        diff = unpaired_difference(per_arm[a], per_arm[0])
        test = msprt(diff, d.mde, alpha)
        if d.primary_metric == "auc":
            paired = paired_auc_difference(y, scores[a], scores[0])
            low, high = paired.interval(1 - d.alpha)
            paired_value = paired.value
        else:  # a paired bootstrap (the gate's): the same Poisson row weights for both arms
            boot = bootstrap_difference(d.task, metric, y, scores[a], scores[0], PAIRED_BOOTSTRAP, 1 - d.alpha,
                                        seed=seed_of(d.id, a))
            paired_value, low, high = (boot[f"{metric}_difference"], boot[f"{metric}_difference_low"],
                                       boot[f"{metric}_difference_high"])
        improvement = oriented(metric, diff.value)
        tests.append({"arm": a, "version": d.versions[a], "difference": diff.value, "z": test.z,
                      "boundary": test.boundary, "likelihood_ratio": test.likelihood_ratio, "rejects": test.rejects,
                      "paired_difference": paired_value, "paired_low": low, "paired_high": high,
                      "sample_size_per_arm": sample_size(metric, per_arm[0].variance * max(per_arm[0].rows, 1),
                                                         d.mde, d.alpha, arms=k)})
        if test.rejects and live[a]:
            (better if improvement > 0 else worse).append(a)
    shares = list(state.shares)
    stop_arms: list[int] = []
    if d.kind in ("canary", "bandit"):
        stop_arms = worse  # guardrail: worse than the control with the test's confidence
        for a in stop_arms:
            live[a] = False
    p_best = [0.0] * k
    if d.kind == "bandit":
        successes, trials = np.zeros(k), np.zeros(k)
        scale = float(np.std(y)) if d.task == "regression" else None
        for a in range(k):
            for day in np.unique(days[served_arm == a]):
                rows = (served_arm == a) & (days == day)
                s, t = reward(d.task, y[rows], scores[a, rows], scale)
                successes[a] += s
                trials[a] += t
        posterior = probability_best(successes, trials, seed=seed_of(d.id, today.isoformat()))
        p_best = [float(x) for x in posterior]
        for entry, won, tried, pb in zip(arms, successes, trials, p_best, strict=True):
            entry.update(reward_successes=float(won), reward_trials=int(tried), p_best=pb)
        shares = list(thompson_shares(posterior, d.floor, live))
    elif stop_arms:
        shares = list(without(shares, stop_arms))
    ended = (matured_through or today) >= d.last_day
    conclude, winner, reason = False, 0, ""
    if d.kind == "bandit":
        top = int(np.argmax(p_best))
        if p_best[top] >= WIN_PROBABILITY:
            conclude, winner = True, top
            reason = f"version {d.versions[top]} is best with posterior probability {p_best[top]:.3f}"
        elif sum(live) == 1:
            conclude, winner, reason = True, 0, "every challenger was stopped by a guardrail"
    elif better:
        best = max(better, key=lambda a: oriented(metric, float(tests[a - 1]["difference"])))  # type: ignore[arg-type]
        conclude, winner = True, best
        reason = (f"version {d.versions[best]} beats the control on {metric} "
                  f"(z {tests[best - 1]['z']:.2f} beyond the boundary {tests[best - 1]['boundary']:.2f})")
    elif d.kind == "canary" and stop_arms:
        conclude, winner, reason = True, 0, f"the canary version {d.versions[1]} is worse than the control on {metric}"
    elif d.kind == "ab" and worse and len(worse) == k - 1:
        conclude, winner, reason = True, 0, f"every challenger is worse than the control on {metric}"
    if not conclude and ended:
        conclude = True
        if d.kind == "canary" and live[1]:
            winner, reason = 1, f"the canary ran its {d.max_days} days without being worse than the control"
        elif d.kind == "bandit":
            winner, reason = 0, (f"maximum duration of {d.max_days} days reached; no arm is best with probability "
                                 f"{WIN_PROBABILITY} (best {max(p_best):.3f}): the control stays")
        else:
            winner, reason = 0, f"maximum duration of {d.max_days} days reached without a decision: the control stays"
    if conclude:
        shares = [0.0] * k
        shares[winner] = 1.0
    return Decision(arms, tests, tuple(shares), stop_arms, conclude, winner if conclude else None,
                    reason or ("guardrail: " + ", ".join(f"version {d.versions[a]} is worse than the control"
                                                         for a in stop_arms) if stop_arms else "no decision yet"))


def guardrail_stops(state: State, failing: Sequence[bool], control_failing: bool = False) -> list[int]:
    """The challengers a guardrail stops: serving (share above zero) and failing the check while the control
    passes it (a drift guardrail: the arm's prediction drift breaches while the control's does not)."""
    if control_failing:
        return []
    return [a for a in range(1, len(state.shares)) if failing[a] and state.shares[a] > 0]

