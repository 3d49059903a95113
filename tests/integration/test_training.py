"""Continuous training on the real services: two windows, lineage, bit-identical restore, the gate, rollback."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime

import pytest

from jobs.errors import ModelNotFound, PromotionRefused
from jobs.io import registry, versioning
from jobs.steps import promotion
from tests.integration.conftest import train_version, with_model_name

pytestmark = pytest.mark.integration

NAME = "churn_training"
LINEAGE_TAGS = {"dvc_md5", "dvc_record", "dvc_path", "git_commit", "params_hash", "contract_fingerprint",
                "training_window", "as_of", "run_id", "training_run_id"}


@pytest.fixture(scope="module")
def two_versions(world, spec, lake, env):
    """Version 1 trained on the labels known on 2026-02-06, version 2 on those known on 2026-02-26."""
    p = with_model_name(spec, NAME)
    first = train_version(p, lake, env, date(2026, 2, 6), env.dvc_root / "data" / "training_a")
    second = train_version(p, lake, env, date(2026, 2, 26), env.dvc_root / "data" / "training_b")
    return p, first, second


def test_each_version_carries_its_full_lineage(two_versions, env):
    # given two trainings on two windows
    _, (v1, _, _), (v2, _, _) = two_versions
    client = registry.client(env.mlflow_tracking_uri)
    # then each version has every lineage tag, its own window and snapshot hash, and its artifacts
    for trained in (v1, v2):
        tags = client.get_model_version(NAME, trained.model.version).tags
        assert LINEAGE_TAGS <= set(tags), LINEAGE_TAGS - set(tags)
        artifacts = {a.path for a in client.list_artifacts(trained.model.run_id)}
        assert {"reference_profile.json", "golden_sample.json", "vocabulary.json", "training_window.json",
                "contract", "dvc", "validation"} <= artifacts
        assert registry.load_booster(trained.model).num_trees() > 0
        record = client.download_artifacts(trained.model.run_id, "dvc")
        assert tags["dvc_md5"] in open(f"{record}/{tags['dvc_record'].rsplit('/', 1)[-1]}").read()
    t1 = client.get_model_version(NAME, v1.model.version).tags
    t2 = client.get_model_version(NAME, v2.model.version).tags
    assert t1["training_window"] != t2["training_window"] and t1["dvc_md5"] != t2["dvc_md5"]
    assert t1["params_hash"] == t2["params_hash"] and t1["contract_fingerprint"] == t2["contract_fingerprint"]


def test_training_metrics_cover_quality_calibration_and_overfitting(two_versions, env):
    _, (v1, _, _), _ = two_versions
    metrics = registry.client(env.mlflow_tracking_uri).get_run(v1.model.run_id).data.metrics
    for name in ("holdout_auc", "holdout_log_loss", "holdout_brier", "holdout_calibration_error", "overfit_gap",
                 "train_auc", "validation_rows", "validation_quarantined"):
        assert name in metrics
    assert 0.7 < metrics["holdout_auc"] < 0.95
    assert metrics["overfit_gap"] == pytest.approx(metrics["train_auc"] - metrics["holdout_auc"])


def test_a_snapshot_is_restored_bit_for_bit_from_the_s3_remote(two_versions, env, tmp_path):
    # given the DVC cache is emptied, so the data can only come from the S3 remote
    _, (v1, _, _), _ = two_versions
    tags = registry.client(env.mlflow_tracking_uri).get_model_version(NAME, v1.model.version).tags
    original = env.dvc_root / tags["dvc_path"]
    shutil.rmtree(env.dvc_root / ".dvc" / "cache", ignore_errors=True)
    # when it is restored by the version's recorded hash
    restored = versioning.restore(env, tags["dvc_md5"], int(tags["dvc_size"]), int(tags["dvc_nfiles"]),
                                  tmp_path / "restored")
    # then every file has the same bytes
    files = sorted(p.relative_to(original) for p in original.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(restored) for p in restored.rglob("*") if p.is_file())
    assert all((original / f).read_bytes() == (restored / f).read_bytes() for f in files)
    assert versioning.folder_hash(restored)[0] == tags["dvc_md5"]


def test_evaluation_uses_every_holdout_row_and_a_bootstrap_interval(two_versions, env):
    _, _, (v2, _, _) = two_versions
    client = registry.client(env.mlflow_tracking_uri)
    run = client.get_run(client.get_model_version(NAME, v2.model.version).tags["evaluation_run_id"])
    m = run.data.metrics
    holdout_rows = v2.metrics["holdout_rows"]
    assert m["challenger_rows"] == m["champion_rows"] == holdout_rows > 10_000  # no 10k-row cap
    assert m["auc_difference_low"] <= m["auc_difference"] <= m["auc_difference_high"]


def test_promotion_follows_the_gate(two_versions, env):
    p, (v1, verdict1, outcome1), (v2, verdict2, outcome2) = two_versions
    client = registry.client(env.mlflow_tracking_uri)
    # the first version passed (no champion to beat) and became champion
    assert verdict1.passed and outcome1["promoted"]
    # the second was gated against it; the champion is whatever the verdict allowed
    tags = client.get_model_version(NAME, v2.model.version).tags
    assert tags["gate_passed"] == str(verdict2.passed).lower()
    champion = registry.holder(client, NAME, registry.CHAMPION)
    assert champion.version == (v2.model.version if verdict2.passed else v1.model.version)


def test_a_challenger_that_fails_the_gate_is_not_promoted(two_versions, env):
    # given a gate that demands the challenger be far better than the champion
    p, (v1, _, _), (v2, _, _) = two_versions
    strict = p.model_copy(update={"gate": p.gate.model_copy(update={"max_degradation": -0.5})})
    client = registry.client(env.mlflow_tracking_uri)
    registry.move_alias(client, NAME, registry.CHAMPION, v1.model.version, "test: reset", date(2026, 2, 27), "test")
    # when it is gated and the pipeline applies the verdict
    verdict = promotion.decide(strict, env, v2.model.uri)
    outcome = promotion.apply_gate(strict, env, v2.model.uri)
    # then it stays challenger, the champion is unchanged, and a manual promotion is refused
    assert not verdict.passed and any("FAIL auc" in r for r in verdict.reasons)
    assert outcome["promoted"] is False
    assert registry.holder(client, NAME, registry.CHAMPION).version == v1.model.version
    with pytest.raises(PromotionRefused, match="did not pass the gate"):
        promotion.promote(strict, env, v2.model.uri, "try")
    # and forcing it with a reason works, and is recorded
    forced = promotion.promote(strict, env, v2.model.uri, "incident 42: forced", date(2026, 2, 28), force=True)
    assert forced["promoted"] and registry.holder(client, NAME, registry.CHAMPION).version == v2.model.version


def test_rollback_restores_the_earlier_champion_and_history_answers_as_of_questions(two_versions, env):
    p, (v1, _, _), (v2, _, _) = two_versions
    client = registry.client(env.mlflow_tracking_uri)
    registry.move_alias(client, NAME, registry.CHAMPION, v2.model.version, "test: set", date(2026, 3, 1), "test")
    # when the champion is rolled back
    result = promotion.rollback(p, env, NAME, "scores looked wrong", date(2026, 3, 5))
    # then the previous champion is back, and the history says who was champion on each day
    assert result["champion"] == v1.model.uri
    assert registry.holder(client, NAME, registry.CHAMPION).version == v1.model.version
    assert registry.alias_as_of(client, NAME, registry.CHAMPION, date(2026, 2, 8)) == v1.model.version
    assert registry.alias_as_of(client, NAME, registry.CHAMPION, date(2026, 3, 2)) == v2.model.version
    assert registry.alias_as_of(client, NAME, registry.CHAMPION, date(2026, 3, 6)) == v1.model.version
    with pytest.raises(ModelNotFound, match="no version of 'churn_training' was @champion on 2026-01-01"):
        registry.alias_as_of(client, NAME, registry.CHAMPION, date(2026, 1, 1))
    events = [e for e in registry.alias_history(client, NAME) if e.alias == registry.CHAMPION]
    assert events[-1].reason == "rollback: scores looked wrong" and events[-1].previous == v2.model.version
    assert all(datetime.fromisoformat(e.at) <= datetime.now(UTC) for e in events)


def test_the_training_window_only_uses_labels_known_on_the_day(two_versions, env):
    _, (v1, _, _), _ = two_versions
    window = json.loads(open(registry.download_artifact(v1.model, "training_window.json")).read())["window"]
    # labels arrive 30 days late: on 2026-02-06 the latest known label is for 2026-01-07
    assert window == {"as_of": "2026-02-06", "first": "2026-01-01", "last": "2026-01-07",
                      "holdout_first": "2026-01-05"}
