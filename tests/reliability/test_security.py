"""No credential anywhere it does not belong: logs, lake, reports, MLflow, Airflow's rendered fields, the code.

This runs after the DAG, scheduler and reliability tests of the session, which ran
the whole loop with the session's generated credentials: every file they left, every
object in every bucket, every MLflow param and tag and every rendered Airflow field
is searched for those credentials.
"""

from __future__ import annotations

import json
import re
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from jobs.io import registry
from tests.conftest import ROOT

pytestmark = pytest.mark.reliability

SECRET_KEYS = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AIRFLOW__API_AUTH__JWT_SECRET",
               "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY", "SPARK_CONNECT_AUTHENTICATE_TOKEN",
               "BATCHLOOP_POSTGRES_PASSWORD")
# where a credential is supposed to be: the S3 server's identity file, Airflow's generated password file and
# the PostgreSQL clients' password file
CREDENTIAL_STORES = ("s3-identities.json", "simple_auth_manager_passwords.json.generated", "pgpass")


def secrets(services, dag_world) -> dict[str, bytes]:
    found = {k: services.config[k].encode() for k in SECRET_KEYS}
    for path in Path(dag_world.root).rglob(CREDENTIAL_STORES[1]):
        for user, password in json.loads(path.read_text()).items():
            found[f"airflow password of {user}"] = password.encode()
    return found


def leaks(blob: bytes, where: str, wanted: dict[str, bytes]) -> list[str]:
    return [f"{name} in {where}" for name, value in wanted.items() if value in blob]


def test_no_credential_in_any_log_file_table_or_result(services, dag_world, trained):
    wanted = secrets(services, dag_world)
    hits, scanned = [], 0
    for folder in (Path(dag_world.root), services.state):
        for path in folder.rglob("*"):
            if path.is_file() and path.name not in CREDENTIAL_STORES and path.stat().st_size < 200 * 2**20:
                hits += leaks(path.read_bytes(), str(path), wanted)
                scanned += 1
    assert scanned > 500 and hits == []


def test_no_credential_in_any_object_of_any_bucket(services, dag_world, trained):
    wanted = secrets(services, dag_world)
    s3 = services.s3_client()
    hits, scanned = [], 0
    for bucket in (b["Name"] for b in s3.list_buckets()["Buckets"]):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                hits += leaks(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read(),
                              f"s3://{bucket}/{item['Key']}", wanted)
                scanned += 1
    assert scanned > 50 and hits == []


def test_no_credential_in_mlflow_params_tags_or_registry(services, dag_world, trained):
    wanted = secrets(services, dag_world)
    client = registry.client(services.config["MLFLOW_TRACKING_URI"])
    runs = [run for experiment in client.search_experiments()
            for run in client.search_runs([experiment.experiment_id], max_results=1000)]
    versions = [version for model in client.search_registered_models()
                for version in client.search_model_versions(f"name='{model.name}'")]
    texts = [json.dumps({"params": run.data.params, "tags": run.data.tags}) for run in runs]
    texts += [json.dumps(model.tags) for model in client.search_registered_models()]
    texts += [json.dumps(version.tags) for version in versions]
    hits = [h for i, t in enumerate(texts) for h in leaks(t.encode(), f"mlflow item {i}", wanted)]
    assert hits == []
    # and there was something to search: training runs with their parameters, registered versions with lineage
    assert any(run.data.params for run in runs) and any("dvc_md5" in v.tags for v in versions)


def test_no_credential_in_airflows_rendered_fields(services, dag_world, trained):
    wanted = secrets(services, dag_world)
    server = services.postgres()
    with closing(server.connect()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE 'airflow%'")
        databases = [r[0] for r in cursor.fetchall()]
    rows = []
    for database in databases:  # every Airflow database of the session: dag.test's, the scheduler tests'
        with closing(server.connect(database)) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('rendered_task_instance_fields') IS NOT NULL")
            if not cursor.fetchone()[0]:
                continue  # created, never migrated (no Airflow ran on it)
            cursor.execute("SELECT rendered_fields FROM rendered_task_instance_fields")
            rows += [r[0] for r in cursor.fetchall()]
    hits = [h for i, r in enumerate(rows) for h in leaks(str(r).encode(), f"rendered field {i}", wanted)]
    assert databases and len(rows) > 10 and hits == []


def test_no_credential_is_written_in_the_code():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    patterns = [re.compile(p) for p in (
        r"AKIA[0-9A-Z]{16}",                                                   # an AWS access key id
        r"(?i)(secret|password|token)[_a-z]*\s*[:=]\s*['\"][^'\"\s{]{8,}['\"]",  # a literal secret value
        r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+=]{30,}")]
    hits = []
    for name in tracked:
        path = ROOT / name
        if path.suffix in (".py", ".yaml", ".yml", ".toml", ".cfg", ".json", ".md", ".sh", "") and path.is_file():
            text = path.read_text(errors="replace")
            hits += [f"{name}: {m.group(0)[:40]}" for p in patterns for m in p.finditer(text)]
    assert hits == []
