"""The retraining policy: should a new model be trained now, and why. Pure: facts in, decision out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date

from jobs.config import RetrainingParams
from jobs.core.metrics import HIGHER_IS_BETTER


@dataclass(frozen=True)
class Facts:
    """What the policy looks at, gathered by the retrain job from the lake and the registry."""

    as_of: date
    drift_breaches: tuple[bool, ...] = ()   # one per scored day, oldest first
    champion_metric: tuple[str, float] | None = None  # (primary metric, value) on matured labels, latest day
    champion_trained_on: date | None = None     # the as-of day the champion was trained on
    last_training: date | None = None        # as-of date of the latest training, any outcome
    new_labelled_rows: int = 0               # labelled rows after the champion's training window
    has_champion: bool = True


@dataclass(frozen=True)
class Decision:
    retrain: bool
    reasons: tuple[str, ...]
    triggers: tuple[str, ...] = field(default=())
    blockers: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict:
        return asdict(self)


def decide(facts: Facts, params: RetrainingParams, force: bool = False) -> Decision:
    """Retrain when a trigger fires and nothing blocks it; every reason is spelled out."""
    triggers, blockers, notes = [], [], []
    if not facts.has_champion:
        triggers.append("no champion: the first model must be trained")
    recent = facts.drift_breaches[-params.drift_windows:]
    breaches = sum(recent)
    drift_note = f"drift breached on {breaches} of the last {len(recent)} scored days " \
                 f"(trigger: {params.drift_breaches} of {params.drift_windows})"
    (triggers if breaches >= params.drift_breaches else notes).append(drift_note)
    if facts.champion_metric is not None and params.performance_limit is not None:
        metric, value = facts.champion_metric
        higher = HIGHER_IS_BETTER[metric]
        limit = params.performance_limit
        note = f"champion {metric} on matured labels {value:.4f} ({'minimum' if higher else 'maximum'} {limit})"
        (triggers if (value < limit if higher else value > limit) else notes).append(note)
    if facts.champion_trained_on is not None:
        age = (facts.as_of - facts.champion_trained_on).days
        age_note = f"champion was trained {age} days ago (maximum {params.max_model_age_days})"
        (triggers if age > params.max_model_age_days else notes).append(age_note)
    if force:
        triggers.append("forced by the operator")
    if facts.has_champion and not force:
        if facts.last_training is not None:
            since = (facts.as_of - facts.last_training).days
            if since < params.cooldown_days:
                blockers.append(f"cooldown: last training {since} day(s) ago (at least {params.cooldown_days})")
        if facts.new_labelled_rows < params.min_new_labelled_rows:
            blockers.append(f"only {facts.new_labelled_rows} new labelled rows since the champion's window "
                            f"(at least {params.min_new_labelled_rows})")
    retrain = bool(triggers) and not blockers
    reasons = [f"trigger: {t}" for t in triggers] + [f"blocked: {b}" for b in blockers] + \
              [f"ok: {n}" for n in notes]
    return Decision(retrain, tuple(reasons), tuple(triggers), tuple(blockers))
