"""The integration world's dates and helpers. Its fixtures (`world`: 60 days of generated data, `champion`: a
trained champion) live in tests/conftest.py, so that the reliability tests share the same ones: a fixture
imported into a second conftest is a second fixture, set up again."""

from __future__ import annotations

from datetime import date
from pathlib import Path

START, DAYS, ROWS = date(2026, 1, 1), 60, 4000
LAST = date(2026, 3, 1)
FIRST_AS_OF = date(2026, 2, 10)   # labels known for 2026-01-01..2026-01-11


def with_model_name(spec, name: str):
    return spec.model_copy(update={"name": name})


def train_version(spec, lake, env, as_of: date, folder: Path):
    """snapshot -> train -> evaluate -> gate -> apply the gate: what the retrain DAG runs."""
    from jobs.steps import promotion, snapshot, train

    snapshot.write(lake, spec, spec.train, as_of, folder)
    trained = train.run(spec, lake.spark, env, folder)
    promotion.evaluate(spec, lake.spark, env, trained.model.uri, folder)
    verdict = promotion.decide(spec, env, trained.model.uri)
    outcome = promotion.apply_gate(spec, env, trained.model.uri)
    return trained, verdict, outcome
