"""Shared fixtures: params, and real local services for integration and DAG tests.

S3 (SeaweedFS) and MLflow start on free ports under a temp folder, once per session,
and are stopped by PID at the end. Settings never read the project's .env.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.stack import DEFAULT_PORTS, Stack, free_ports, generate_config  # noqa: E402


@pytest.fixture(scope="session")
def params():
    from jobs.settings import load_params

    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    """S3 and MLflow servers, started for this test session and stopped after it."""
    stack = Stack(generate_config(tmp_path_factory.mktemp("stack"), free_ports(list(DEFAULT_PORTS))))
    stack.up({"s3", "mlflow"})
    yield stack
    stack.down()


@pytest.fixture(scope="session")
def env(services):
    from jobs.settings import Env

    c = services.config
    return Env(_env_file=None, state_dir=services.state, mlflow_tracking_uri=c["MLFLOW_TRACKING_URI"],
               s3_endpoint_url=c["BATCHLOOP_S3_ENDPOINT_URL"])


@pytest.fixture(scope="session")
def spark(env):
    from jobs.spark import build_session

    session = build_session(env, "batchloop-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def lake(spark, env):
    from jobs.lake import Lake

    return Lake(spark, env)
