"""A small world for integration tests: 60 days of generated data and a trained champion.

Everything runs on the real local services (SeaweedFS S3, MLflow server) and local
Spark with an embedded Hive metastore, under the session's temp folders.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

START, DAYS, ROWS = date(2026, 1, 1), 60, 4000
LAST = date(2026, 3, 1)
FIRST_AS_OF = date(2026, 2, 10)   # labels known for 2026-01-01..2026-01-11


def with_model_name(spec, name: str):
    return spec.model_copy(update={"name": name})


@pytest.fixture(scope="session")
def world(spec, generator, lake):
    """Features for 2026-01-01..2026-03-01 and the labels that matured by then."""
    from jobs.demo import generate

    return generate.run(generator, spec, lake, START, DAYS, ROWS, generator.seed)


def train_version(spec, lake, env, as_of: date, folder: Path):
    """snapshot -> train -> evaluate -> gate -> apply the gate: what the retrain DAG runs."""
    from jobs.steps import promotion, snapshot, train

    snapshot.write(lake, spec, spec.train, as_of, folder)
    trained = train.run(spec, lake.spark, env, folder)
    promotion.evaluate(spec, lake.spark, env, trained.model.uri, folder)
    verdict = promotion.decide(spec, env, trained.model.uri)
    outcome = promotion.apply_gate(spec, env, trained.model.uri)
    return trained, verdict, outcome


@pytest.fixture(scope="session")
def champion(world, spec, lake, env):
    """A champion for scoring and drift tests (model `churn_it`, effective from 2026-02-11)."""
    p = with_model_name(spec, "churn_it")
    trained, verdict, outcome = train_version(p, lake, env, FIRST_AS_OF, env.dvc_root / "data" / "it_first")
    assert verdict.passed and outcome["promoted"], outcome
    return p, trained.model
