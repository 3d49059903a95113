"""`dvc repro` reproduces training without Airflow, through the same CLI commands the retrain DAG runs."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from jobs.io import registry
from tests.conftest import BIN, MODEL, ROOT, SPEND

pytestmark = pytest.mark.integration


def dvc(world, *args: str) -> subprocess.CompletedProcess:
    repo = world.env["BATCHLOOP_DVC_ROOT"]
    return subprocess.run([str(BIN / "dvc"), *args], env=world.env, cwd=repo, capture_output=True, text=True,
                          timeout=1800)


def test_dvc_repro_snapshots_validates_trains_and_evaluates(dag_world, trained, services):
    # given the project's pipeline in the DAG world's repository (its code and contracts beside it)
    repo = dag_world.root / "repo"
    for folder in ("jobs", "expectations"):
        shutil.copytree(ROOT / folder, repo / folder, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    # when `dvc repro` runs
    first = dvc(dag_world, "repro")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # then every stage of every declared model ran and dvc.lock records the snapshot and the metrics
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == {f"{stage}@{name}" for stage in ("snapshot", "validate", "train", "evaluate")
                                   for name in (MODEL, SPEND)}
    snapshot_md5 = lock["stages"][f"snapshot@{MODEL}"]["outs"][0]["md5"]
    trained_by_repro = json.loads((repo / "metrics" / MODEL / "train.json").read_text())
    evaluation = json.loads((repo / "metrics" / MODEL / "evaluate.json").read_text())
    assert evaluation["challenger"] == trained_by_repro["model"] and evaluation["champion"] == f"models:/{MODEL}/1"
    # and the registered version points at that snapshot, recorded in dvc.lock and pushed to S3
    client = registry.client(services.config["MLFLOW_TRACKING_URI"])
    tags = client.get_model_version(MODEL, trained_by_repro["version"]).tags
    assert tags["dvc_md5"] == snapshot_md5 and tags["dvc_record"] == "dvc.lock" and tags["gate_passed"] in ("true",
                                                                                                           "false")
    assert dvc(dag_world, "status", "-c").stdout.strip().startswith(("Cache and remote", "Data and pipelines"))
    # and a second `dvc repro` changes nothing: no stage runs, no new version
    versions = len(client.search_model_versions(f"name='{MODEL}'"))
    again = dvc(dag_world, "repro")
    assert again.returncode == 0 and "didn't change, skipping" in again.stdout
    assert len(client.search_model_versions(f"name='{MODEL}'")) == versions
