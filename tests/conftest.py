"""Shared fixtures: params, and real local services for integration and DAG tests.

S3 (SeaweedFS) and MLflow start on free ports under a temp folder, once per session,
and are stopped by PID at the end. Settings never read the project's .env: every test
environment is built here, with its own lake, metastore and DVC repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.stack import DEFAULT_PORTS, Stack, free_ports, generate_config  # noqa: E402

ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture(scope="session")
def params():
    from jobs.settings import load_params

    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    """S3 and MLflow servers, started for this test session and stopped after it."""
    stack = Stack(generate_config(tmp_path_factory.mktemp("stack"), free_ports(list(DEFAULT_PORTS))))
    stack.up({"s3", "mlflow"})
    # the jobs read credentials and endpoints the way they do in production: from the environment
    saved = {k: os.environ.get(k) for k in SERVICE_KEYS}
    os.environ.update({k: stack.config[k] for k in SERVICE_KEYS})
    yield stack
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    stack.down()


SERVICE_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "MLFLOW_S3_ENDPOINT_URL",
                "MLFLOW_TRACKING_URI")


def make_dvc_repo(path: Path, stack: Stack) -> Path:
    """A git + DVC repository with the project's dvc.yaml and params, its remote on the test S3 server."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, path / name)
    dvc = str(Path(sys.executable).parent / "dvc")
    env = {**os.environ, **stack.env()}
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], [dvc, "config", "core.analytics", "false"],
                [dvc, "remote", "add", "-d", "storage", f"s3://{stack.config['BATCHLOOP_BUCKET_DVC']}/store"],
                [dvc, "config", "cache.type", "reflink,hardlink,copy"]):
        subprocess.run(cmd, cwd=path, check=True, env=env, capture_output=True)
    return path


@pytest.fixture(scope="session")
def dvc_repo(tmp_path_factory, services):
    return make_dvc_repo(tmp_path_factory.mktemp("repo"), services)


@pytest.fixture(scope="session")
def env(services, dvc_repo):
    from jobs.settings import Env

    c = services.config
    return Env(_env_file=None, state_dir=services.state, mlflow_tracking_uri=c["MLFLOW_TRACKING_URI"],
               s3_endpoint_url=c["BATCHLOOP_S3_ENDPOINT_URL"], dvc_root=dvc_repo, lake_gc_grace_minutes=0)


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


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests leave files for a person to look at (screenshots, reports)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
