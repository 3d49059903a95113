"""Training: the spec's model from a DVC-versioned snapshot, registered in MLflow with its lineage.

The trainer is the spec's (`trainer`: LightGBM, a scikit-learn pipeline, or a custom
trainer by import path; jobs/models/flavors.py); everything else is the same for every flavor.

`run` reads only the snapshot folder (never the lake), so the same snapshot gives the
same model: the window, the contracts' verdicts, the model, its reference profile and
golden sample are all derived from it. The new version gets alias `challenger`; the
promotion gate (jobs.steps.promotion) decides whether it becomes champion.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from jobs.config import Env, ModelSpec
from jobs.contracts.contract import combine, load_contract, raise_on_failure
from jobs.contracts.validate import validate_frame
from jobs.core.metrics import Quality, oriented, quality
from jobs.core.reference import build_profile
from jobs.errors import ServiceUnavailable
from jobs.io import lineage, registry, versioning
from jobs.io.registry import (
    CONTRACT_ARTIFACT,
    CONTRACT_TAG,
    GOLDEN_ARTIFACT,
    PROFILE_ARTIFACT,
    VOCABULARY_ARTIFACT,
    WINDOW_ARTIFACT,
)
from jobs.models import compiled, flavors
from jobs.steps import snapshot as snapshots

log = logging.getLogger(__name__)

EXPERIMENT = "batchloop-training"
DVC_ARTIFACT_DIR = "dvc"


@dataclass(frozen=True)
class Trained:
    """A registered version and what training measured."""

    model: registry.ResolvedModel
    metrics: dict[str, float]
    window: snapshots.Window


def golden_sample(holdout: pd.DataFrame, scores: np.ndarray, key: str, columns: list[str],
                  rows: int) -> dict[str, Any]:
    """A fixed sample of holdout rows (the smallest keys' hashes) with the scores training gave them."""
    order = pd.util.hash_pandas_object(holdout[key], index=False).to_numpy().argsort(kind="mergesort")[:rows]
    sample = holdout.iloc[order][columns].astype(object).where(holdout.iloc[order][columns].notna(), None)
    records = [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
               for row in sample.to_dict(orient="records")]  # exact floats: json writes repr()
    return {"columns": columns, "rows": records, "scores": [float(s) for s in scores[order]]}


def run(spec: ModelSpec, spark, env: Env, folder: Path, push: bool = True) -> Trained:
    """Train on a snapshot folder: verify and push it with DVC, validate, fit, evaluate, register."""
    from mlflow.exceptions import MlflowException

    client = registry.client(env.mlflow_tracking_uri)
    flavors.check_trainer(spec)  # an import path that does not resolve fails before anything is pushed
    window = snapshots.Window.from_dict(snapshots.read_window(folder)["window"])
    record = versioning.track(env, folder, push=push)
    contract = combine("snapshot", load_contract(spec.table), load_contract(spec.label.table))
    checked = validate_frame(snapshots.read(spark, folder), contract, spec.validation,
                             f"snapshot {window.first}..{window.last}", spec.key, persist=True)
    raise_on_failure(checked.report, checked.text)
    passed = checked.passed
    train_rows = passed.where(F.col("dt") < F.lit(window.holdout_first))
    frame = passed.toPandas()
    log.info("loaded %d training rows (%d quarantined)", len(frame), checked.report.quarantined)
    holdout_mask = frame["dt"] >= window.holdout_first
    train, holdout = frame[~holdout_mask], frame[holdout_mask].reset_index(drop=True)
    y_train, y_holdout = train[spec.label.column].to_numpy(), holdout[spec.label.column].to_numpy()
    fitted = flavors.fit(spec, train)
    log.info("fitted %s (%s) on %d rows, holding out %d", spec.trainer.name, fitted.flavor, len(train), len(holdout))
    holdout_scores = fitted.predict(holdout, spec)
    q_train: Quality = quality(y_train, fitted.predict(train, spec), spec.gate.calibration_bins, spec.task)
    q_holdout: Quality = quality(y_holdout, holdout_scores, spec.gate.calibration_bins, spec.task)
    primary = spec.primary_metric
    metrics = {**q_train.as_dict("train_"), **q_holdout.as_dict("holdout_"),
               "overfit_gap": oriented(primary, q_train[primary] - q_holdout[primary])}
    weights = flavors.importance(fitted, spec, holdout)
    profile = build_profile(train_rows, train, spec, spec.drift, holdout_scores, weights)
    log.info("built the reference profile")
    checked.annotated.unpersist()
    golden = golden_sample(holdout, holdout_scores, spec.key, [spec.key, *spec.features.all],
                           min(spec.train.golden_rows, len(holdout)))
    features_contract = load_contract(spec.table)

    tags = {
        **record.as_tags(),
        "params_hash": spec.digest(),
        "git_commit": lineage.git_commit(),
        "code_version": lineage.code_version(),
        CONTRACT_TAG: features_contract.fingerprint,
        "labels_contract_fingerprint": load_contract(spec.label.table).fingerprint,
        "training_window": f"{window.first}..{window.last}",
        "holdout_from": window.holdout_first.isoformat(),
        "as_of": window.as_of.isoformat(),
        "run_id": lineage.run_id(),
    }
    if lineage.orchestrator_run_id():
        tags["airflow_run_id"] = lineage.orchestrator_run_id()
    artifacts = {PROFILE_ARTIFACT: profile, VOCABULARY_ARTIFACT: fitted.vocab, GOLDEN_ARTIFACT: golden,
                 WINDOW_ARTIFACT: snapshots.read_window(folder)}
    try:
        version = _log_and_register(spec, client, fitted, holdout.head(5), metrics, tags, checked.report,
                                    features_contract, record, artifacts, window)
    except MlflowException as exc:
        raise ServiceUnavailable(
            f"could not store the training run's artifacts and model through the MLflow server at "
            f"{env.mlflow_tracking_uri} (is its artifact store, S3, up?); nothing was registered: "
            f"{str(exc).splitlines()[0][:300]}") from None
    registry.move_alias(client, spec.name, registry.CHALLENGER, version,
                        f"trained on {window.first}..{window.last}", window.as_of + timedelta(days=1),
                        lineage.run_id())
    model = registry.resolve(client, f"models:/{spec.name}/{version}")
    compile_at_registration(spec, client, env, model)
    log.info("registered %s as @challenger: holdout %s %.4f (train %.4f), snapshot %s", model.uri, primary,
             q_holdout[primary], q_train[primary], record.md5)
    return Trained(model, metrics, window)


def compile_at_registration(spec: ModelSpec, client, env: Env, model: registry.ResolvedModel) -> float | None:
    """A registered booster compiled into this host's cache now, so scoring only loads it.

    The time it took goes on the training run (`compile_seconds`) and, with the compiler, on the
    version's tags; a booster lleaves cannot compile is tagged with the reason and scored by the
    booster."""
    if not spec.scoring.compiled:
        return None
    version = model.version
    files = flavors.scoring_model(model.uri, spec)
    if files.kind != flavors.BOOSTER:
        return None
    reason = compiled.unsupported(str(files.payload))
    if reason:
        client.set_model_version_tag(spec.name, version, "compiled", f"no: {reason}")
        return None
    built = compiled.build(str(files.payload), env.compiled_dir)
    seconds = built.compile_seconds or 0.0
    client.set_model_version_tag(spec.name, version, "compiled", f"{compiled.engine()} for {compiled.cpu()}")
    client.set_model_version_tag(spec.name, version, "compile_seconds", f"{seconds:.2f}")
    client.log_metric(model.run_id, "compile_seconds", seconds)
    log.info("compiled %s in %.1f s (%s)", model.uri, seconds, compiled.engine())
    return seconds


def _log_and_register(spec: ModelSpec, client, fitted: flavors.Fitted, example: pd.DataFrame,
                      metrics: dict[str, float],
                      tags: dict[str, str], report, features_contract, record: versioning.Record,
                      artifacts: dict[str, Any], window: snapshots.Window) -> str:
    """One MLflow run with everything a version needs, then the registered version."""
    import mlflow

    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=f"train-{window.as_of}") as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params({"trainer": spec.trainer.name, "flavor": fitted.flavor, "task": spec.task,
                           **({"estimator": spec.trainer.estimator} if spec.trainer.estimator else {})})
        prefix = "lgbm" if spec.trainer.kind == "lightgbm" else "trainer"
        mlflow.log_params({f"{prefix}_{k}": v for k, v in spec.trainer.params.items()})
        mlflow.log_params({"window_days": spec.train.window_days, "holdout_days": spec.train.holdout_days,
                           "as_of": window.as_of.isoformat(), "snapshot_md5": record.md5})
        mlflow.log_metrics(metrics)
        mlflow.set_tags(tags)
        mlflow.log_metrics({"validation_rows": report.rows, "validation_passed": report.passed,
                            "validation_quarantined": report.quarantined})
        mlflow.log_dict(report.as_dict(), "validation/snapshot.json")
        mlflow.log_dict(features_contract.document, CONTRACT_ARTIFACT)
        mlflow.log_dict(load_contract(spec.label.table).document, "contract/labels.json")
        mlflow.log_text(record.text, f"{DVC_ARTIFACT_DIR}/{Path(record.source).name}")
        for name, content in artifacts.items():
            (Path(tmp) / name).write_text(json.dumps(content))
            mlflow.log_artifact(str(Path(tmp) / name))
        info = flavors.log_model(fitted, spec, example)
        version = str(info.registered_model_version)
        for key, value in {**tags, "training_run_id": run.info.run_id}.items():
            client.set_model_version_tag(spec.name, version, key, value)
    return version
