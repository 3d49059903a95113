"""Shared fixtures: params, and real local services for integration and DAG tests.

S3 (SeaweedFS) and MLflow start on free ports under a temp folder, once per session,
and are stopped by PID at the end. Settings never read the project's .env: every test
environment is built here, with its own lake, metastore and DVC repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.stack import (  # noqa: E402
    DEFAULT_PORTS,
    Stack,
    connect_connection,
    free_ports,
    generate_config,
    metastore_jdbc_url,
)

ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture(scope="session")
def spec():
    """The churn model's spec, as params.yaml declares it."""
    from jobs.config import load_model

    return load_model("churn", ROOT / "params.yaml")


@pytest.fixture(scope="session")
def generator():
    """The demo's synthetic upstream."""
    from jobs.config import load_params

    return load_params(ROOT / "params.yaml").generator


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    """PostgreSQL, S3 and MLflow servers, started for this test session and stopped after it (the Connect server
    too)."""
    stack = Stack(generate_config(tmp_path_factory.mktemp("stack"), free_ports(list(DEFAULT_PORTS))))
    stack.up({"postgres", "s3", "mlflow"})
    # the jobs read credentials and endpoints the way they do in production: from the environment
    saved = {k: os.environ.get(k) for k in (*SERVICE_KEYS, "PGPASSFILE")}
    os.environ.update({k: stack.config[k] for k in SERVICE_KEYS})
    os.environ["PGPASSFILE"] = str(stack.passfile)  # the metastore database's password, as libpq finds it
    yield stack
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    stack.down()


SERVICE_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "MLFLOW_S3_ENDPOINT_URL",
                "MLFLOW_TRACKING_URI", "SPARK_CONNECT_AUTHENTICATE_TOKEN")


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
    from jobs.config import Env

    c = services.config
    # the stack's defaults: the lake on its S3 server, the metastore on its PostgreSQL
    return Env(_env_file=None, state_dir=services.state, mlflow_tracking_uri=c["MLFLOW_TRACKING_URI"],
               s3_endpoint_url=c["BATCHLOOP_S3_ENDPOINT_URL"], dvc_root=dvc_repo, lake_gc_grace_minutes=0,
               spark_remote=c["BATCHLOOP_SPARK_REMOTE"], lake_root=c["BATCHLOOP_LAKE_ROOT"],
               metastore_jdbc_url=services.spark_env().metastore_jdbc_url)


def start_connect_server(stack: Stack):
    """The stack's Spark Connect server, started and healthy (the caller stops it by PID)."""
    server = stack.spark()
    stack.start(server)
    stack.wait_healthy(server)
    return server


@pytest.fixture(scope="session")
def spark(services, env):
    """A Spark Connect session on this worker's own server: the in-process tests are clients like the steps."""
    from jobs.io.spark import build_session

    server = start_connect_server(services)
    session = build_session(env, "batchloop-tests")
    yield session
    session.stop()
    services.stop(server)


@pytest.fixture(scope="session")
def lake(spark, env):
    from jobs.io.lake import Lake

    return Lake(spark, env)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests leave files for a person to look at (screenshots, reports)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


# -- the integration world, shared with the reliability tests --------------------------------------------------
@pytest.fixture(scope="session")
def world(spec, generator, lake):
    """Features for 2026-01-01..2026-03-01 and the labels that matured by then."""
    from jobs.demo import generate
    from tests.integration.conftest import DAYS, ROWS, START

    return generate.run(generator, spec, lake, START, DAYS, ROWS, generator.seed)


@pytest.fixture(scope="session")
def champion(world, spec, lake, env):
    """A champion for scoring and drift tests (model `churn_it`, effective from 2026-02-11)."""
    from tests.integration.conftest import FIRST_AS_OF, train_version, with_model_name

    p = with_model_name(spec, "churn_it")
    trained, verdict, outcome = train_version(p, lake, env, FIRST_AS_OF, env.dvc_root / "data" / "it_first")
    assert verdict.passed and outcome["promoted"], outcome
    return p, trained.model


# -- the DAG world: Spark steps as spark-submit subprocesses ------------------------------------------------
BIN = Path(sys.executable).parent
MODEL = "churn_dags"
# the world's models' own DAGs (dags/ makes one of each per declared model): churn's, and spend's (a scikit-learn
# regression pipeline on another table) for the tests of a second model of another kind
SCORE_DAILY, RETRAIN, MONITOR = (f"{kind}__{MODEL}" for kind in ("score_daily", "retrain", "monitor_performance"))
SPEND = "spend_dags"
SPEND_DAGS = tuple(f"{kind}__{SPEND}" for kind in ("score_daily", "retrain", "monitor_performance"))


@dataclass
class World:
    root: Path
    env: dict[str, str]
    stack: Stack

    @property
    def remote(self) -> str:
        return self.env["BATCHLOOP_SPARK_REMOTE"]

    @contextmanager
    def session(self):
        """A Spark Connect session of the test itself on this world's server (its metastore, its lake)."""
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.remote(self.remote).create()
        try:
            yield spark
        finally:
            spark.stop()

    def cli(self, *args: str, timeout: float = 900) -> dict:
        """Run `batchloop ...` in this world; its JSON result."""
        done = subprocess.run([str(BIN / "batchloop"), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    def sql(self, query: str) -> list[dict]:
        done = subprocess.run([str(BIN / "batchloop"), "sql", "--json", "--limit", "1000", query], env=self.env,
                              capture_output=True, text=True, timeout=600, cwd=self.root)
        assert done.returncode == 0, done.stderr[-3000:]
        return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


RUN = """
import json, sys
from datetime import datetime, timezone
sys.path.insert(0, "{dags}")
import {module} as m
logical = {logical!r}
dag = getattr(m, {dag_id!r}) if "__" in {dag_id!r} else getattr(m, {module!r} + "_dag")
run = dag.test(run_conf={conf!r},
               logical_date=datetime.fromisoformat(logical).replace(tzinfo=timezone.utc) if logical else None)
states = {{ti.task_id: ti.state for ti in run.get_task_instances()}}
print("RESULT " + json.dumps({{"state": str(run.state), "tasks": {{k: str(v) for k, v in states.items()}}}}))
"""


def dag_test(world, dag_id: str, conf: dict | None = None, logical: str | None = None) -> dict:
    """`dag.test()` of one DAG (a model's, e.g. score_daily__churn_dags, or a shared one) in the world."""
    module = dag_id.split("__")[0]
    done = subprocess.run([sys.executable, "-c", RUN.format(dags=ROOT / "dags", module=module, dag_id=dag_id,
                                                            conf=conf or {}, logical=logical)],
                          env=world.env, capture_output=True, text=True, timeout=1800, cwd=world.root)
    log = world.root / f"dag_test_{dag_id}.log"
    log.write_text(done.stdout + done.stderr)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, f"no result; see {log}: " + (done.stdout + done.stderr)[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="session")
def trained(dag_world):
    """The retrain DAG, forced on 2026-02-09: the first champion."""
    return dag_test(dag_world, RETRAIN, {"as_of": "2026-02-09", "force": True})


@pytest.fixture(scope="session")
def dag_world(services, tmp_path_factory) -> World:
    """50 days of small data, a params file of its own (models churn_dags and spend_dags), Airflow's metadata database,
    and a Spark Connect server of its own (the world's lake and metastore) that its steps are clients of."""
    root = tmp_path_factory.mktemp("dagworld")
    repo = make_dvc_repo(root / "repo", services)
    own = yaml.safe_load((ROOT / "params.yaml").read_text())
    own["models"] = {MODEL: own["models"]["churn"], SPEND: own["models"]["spend"]}
    own["generator"]["rows"] = 1500
    own["defaults"]["gate"]["max_overfit_gap"] = 0.25  # 1,500 subscribers a day overfit more than production volumes
    own["models"][SPEND]["gate"]["max_overfit_gap"] = 3.0  # (in RMSE units)
    (repo / "params.yaml").write_text(yaml.safe_dump(own))
    (root / "airflow").mkdir()
    port = free_ports(["BATCHLOOP_SPARK_CONNECT_PORT"])
    # dag.test's Airflow database and the Hive metastore: databases of its own on the session's PostgreSQL; the
    # lake under a prefix of its own on the session's S3 server (the stack's defaults, as `make up` has them)
    config = {**services.config, **{k: str(v) for k, v in port.items()}, "BATCHLOOP_STATE_DIR": str(root / "state"),
              "BATCHLOOP_SPARK_REMOTE": f"sc://localhost:{port['BATCHLOOP_SPARK_CONNECT_PORT']}",
              "BATCHLOOP_AIRFLOW_DB": "airflow_dag_test", "BATCHLOOP_METASTORE_DB": "metastore_dag_world",
              "BATCHLOOP_LAKE_ROOT": "s3a://batchloop-lake/dag-world", "BATCHLOOP_LINEAGE": str(root / "lineage")}
    stack = Stack(config)
    stack.prepare()
    stack.create_databases()
    stack.create_metastore_schema()
    server = stack.spark()
    stack.start(server)  # the JVM warms up while Airflow's database is made
    env = {**services.env(), "BATCHLOOP_STATE_DIR": str(root / "state"), "BATCHLOOP_DVC_ROOT": str(repo),
           "BATCHLOOP_PARAMS": str(repo / "params.yaml"), "AIRFLOW_HOME": str(root / "airflow"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": stack.airflow_database(), "PGPASSFILE": str(stack.passfile),
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(connect_connection(config)),
           "BATCHLOOP_SPARK_REMOTE": config["BATCHLOOP_SPARK_REMOTE"], "BATCHLOOP_LAKE_GC_GRACE_MINUTES": "0",
           **{k: config[k] for k in ("BATCHLOOP_LAKE_ROOT", "BATCHLOOP_METASTORE_DB", "BATCHLOOP_LINEAGE",
                                     "BATCHLOOP_SPARK_CONNECT_PORT")},
           "BATCHLOOP_METASTORE_JDBC_URL": metastore_jdbc_url(config)}
    # Airflow's database is set up while the server starts and the data is generated: none needs the others
    migrate = subprocess.Popen([str(BIN / "airflow"), "db", "migrate"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    world = World(root, env, stack)
    try:
        stack.wait_healthy(server)
        world.cli("generate", "--start", "2026-01-01", "--days", "50", "--rows", "1500")
        out, err = migrate.communicate(timeout=600)
    finally:
        if migrate.poll() is None:
            migrate.kill()
            migrate.wait()
    assert migrate.returncode == 0, out[-2000:] + err[-2000:]
    yield world
    stack.stop(stack.spark())


# -- running in two processes (make test: pytest -n 2 --dist loadgroup) -------------------------------------------
# Tests that drive the DAG world (spark-submit subprocesses, Airflow, a cluster) stay in one worker, in
# file order; those that run Spark in the test process go to the other. Each worker starts its own servers.
DAG_WORLD = ("tests/dags/", "tests/pipeline/", "tests/reliability/test_kill_and_concurrency.py",
             "tests/reliability/test_security.py")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath)).relative_to(ROOT).as_posix()
        group = "dag_world" if path.startswith(DAG_WORLD) else "in_process"
        item.add_marker(pytest.mark.xdist_group(group))
