"""Services failing under the pipeline: S3 stopped during a DVC push and an MLflow upload, MLflow down at scoring.

These tests stop servers, so they run their own S3 and MLflow (on free ports) and
leave the session's untouched.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from datetime import date

import pytest

from infra.stack import DEFAULT_PORTS, Stack, free_ports, generate_config
from jobs.errors import ServiceUnavailable
from jobs.io import registry, versioning
from jobs.steps import score
from tests.conftest import make_dvc_repo
from tests.integration.conftest import with_model_name

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def fragile(tmp_path_factory):
    """An S3 server and an MLflow server of this module's own, which the tests stop and start."""
    stack = Stack(generate_config(tmp_path_factory.mktemp("fragile"), free_ports(list(DEFAULT_PORTS))))
    stack.up({"postgres", "s3", "mlflow"})
    yield stack
    stack.down()


def service(stack: Stack, name: str):
    return next(s for s in stack.services({"s3", "mlflow"}) if s.name == name)


def restart_after(stack: Stack, name: str, stop_after: float, down_for: float) -> threading.Thread:
    def run():
        time.sleep(stop_after)
        stack.stop(service(stack, name), grace=2)
        time.sleep(down_for)
        stack.start(service(stack, name))
        stack.wait_healthy(service(stack, name))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.fixture
def fragile_env(fragile, env, tmp_path, monkeypatch):
    """The test world's settings, pointed at the fragile servers and a DVC repository on them."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.setenv(key, fragile.config[key])
    repo = make_dvc_repo(tmp_path / "repo", fragile)
    return env.model_copy(update={"mlflow_tracking_uri": fragile.config["MLFLOW_TRACKING_URI"],
                                  "s3_endpoint_url": fragile.config["BATCHLOOP_S3_ENDPOINT_URL"],
                                  "dvc_root": repo})


def a_snapshot(repo, files: int = 40, size: int = 512 * 1024):
    folder = repo / "snapshots" / "fault"
    folder.mkdir(parents=True)
    for i in range(files):
        (folder / f"part-{i:03}.bin").write_bytes(os.urandom(size))
    return folder


def test_s3_stopped_during_a_dvc_push_is_retried_and_leaves_nothing_corrupt(fragile, fragile_env, tmp_path):
    # given a snapshot being pushed, and S3 stopping a moment into the push and coming back a few seconds later
    folder = a_snapshot(fragile_env.dvc_root)
    outage = restart_after(fragile, "s3", stop_after=0.5, down_for=4)
    # when it is tracked and pushed
    record = versioning.track(fragile_env, folder)
    outage.join()
    # then the push got through on a retry, and the snapshot restores bit for bit from the remote
    shutil.rmtree(fragile_env.dvc_root / ".dvc" / "cache")
    restored = versioning.restore(fragile_env, record.md5, record.size, record.nfiles, tmp_path / "back")
    assert all((folder / p.name).read_bytes() == p.read_bytes() for p in restored.iterdir())


def test_s3_down_for_longer_than_the_retries_is_a_clear_error_then_a_clean_push(fragile, fragile_env, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setattr(versioning, "RETRY_DELAYS_S", (1, 2))
    folder = a_snapshot(fragile_env.dvc_root, files=5)
    fragile.stop(service(fragile, "s3"), grace=2)
    try:
        with pytest.raises(ServiceUnavailable, match="dvc push of snapshots/fault failed after 3 attempts; "
                                                     "is the S3 server up"):
            versioning.track(fragile_env, folder)
    finally:
        fragile.start(service(fragile, "s3"))
        fragile.wait_healthy(service(fragile, "s3"))
    # once S3 is back, the same push succeeds and the data is whole
    record = versioning.track(fragile_env, folder)
    shutil.rmtree(fragile_env.dvc_root / ".dvc" / "cache")
    restored = versioning.restore(fragile_env, record.md5, record.size, record.nfiles, tmp_path / "back")
    assert versioning.folder_hash(restored)[0] == record.md5


def test_s3_stopped_during_an_mlflow_upload_fails_clearly_and_registers_nothing(fragile, fragile_env, champion,
                                                                               lake, spec):
    # given a training snapshot and the MLflow server's artifact store (S3) stopped
    from jobs.steps import train

    p = with_model_name(spec, "churn_fault")
    folder = fragile_env.dvc_root / "data" / "fault_train"
    from jobs.steps import snapshot

    snapshot.write(lake, p, p.train, date(2026, 2, 10), folder)
    fragile.stop(service(fragile, "s3"), grace=2)
    client = registry.client(fragile_env.mlflow_tracking_uri)
    try:
        # when training tries to store the run's artifacts
        with pytest.raises(ServiceUnavailable, match="could not store .* through the MLflow server"):
            train.run(p, lake.spark, fragile_env, folder, push=False)
        # then no version was registered and the run is marked failed
        assert client.search_model_versions("name='churn_fault'") == []
        runs = client.search_runs([client.get_experiment_by_name(train.EXPERIMENT).experiment_id])
        assert runs and runs[0].info.status == "FAILED"
    finally:
        fragile.start(service(fragile, "s3"))
        fragile.wait_healthy(service(fragile, "s3"))
    # and once S3 is back the same training registers a whole version
    trained = train.run(p, lake.spark, fragile_env, folder, push=False)
    assert registry.load_booster(trained.model).num_trees() > 0


def test_mlflow_down_when_scoring_starts_fails_before_anything_is_written(fragile, fragile_env, champion, lake):
    p, _ = champion
    fragile.stop(service(fragile, "mlflow"), grace=2)
    target = lake.with_namespace("fault_tests")
    try:
        with pytest.raises(ServiceUnavailable, match="MLflow tracking server at .* is not reachable"):
            score.run(p, lake, target, fragile_env, date(2026, 2, 12))
    finally:
        fragile.start(service(fragile, "mlflow"))
        fragile.wait_healthy(service(fragile, "mlflow"))
    assert date(2026, 2, 12) not in target.partitions("scores", p.partition)
    assert date(2026, 2, 12) not in target.partitions("quarantine", {"source_table": "features"})
