"""Training: a LightGBM model on the labelled window, logged and registered in MLflow."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from jobs import lineage, registry
from jobs.contract import load_contract, raise_on_failure
from jobs.encoding import encode_pandas, learn_vocabulary
from jobs.errors import PartitionNotFound
from jobs.reference import build_profile
from jobs.settings import Params
from jobs.validate import validate_frame

log = logging.getLogger(__name__)

EXPERIMENT = "batchloop-training"
PROFILE_ARTIFACT = "reference_profile.json"
VOCABULARY_ARTIFACT = "vocabulary.json"
CONTRACT_ARTIFACT = "contract/features.json"
CONTRACT_TAG = "contract_fingerprint"


@dataclass(frozen=True)
class Window:
    """The labelled days a model is trained on; the last `holdout_days` are held out."""

    first: date
    last: date
    holdout_first: date


def choose_window(label_days: list[date], as_of: date, window_days: int, holdout_days: int,
                  delay_days: int) -> Window:
    """The latest `window_days` labelled days whose labels were known on `as_of`."""
    known = sorted(d for d in label_days if d + timedelta(days=delay_days) <= as_of)
    if len(known) < holdout_days + 1:
        raise PartitionNotFound(
            f"only {len(known)} labelled day(s) known as of {as_of}; training needs at least "
            f"{holdout_days + 1}: generate more days or move --as-of later"
        )
    days = known[-window_days:]
    return Window(first=days[0], last=days[-1], holdout_first=days[-holdout_days])


def fit(X: pd.DataFrame, y: np.ndarray, params: Params):
    """Fit LightGBM with the hyperparameters from params.yaml on an encoded matrix."""
    import lightgbm as lgb

    hp = dict(params.train.lightgbm)
    rounds = int(hp.pop("num_boost_round", 100))
    hp["verbosity"] = -1
    dataset = lgb.Dataset(X, label=y, categorical_feature=list(params.data.categorical_features))
    return lgb.train(hp, dataset, num_boost_round=rounds)


def evaluate(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import log_loss, roc_auc_score

    return {"auc": float(roc_auc_score(y, p)), "log_loss": float(log_loss(y, p, labels=[0, 1]))}


def run(params: Params, lake, tracking_uri: str, as_of: date) -> tuple[registry.ResolvedModel, dict[str, float]]:
    """Train on the window known as of `as_of`, log to MLflow, register a new version."""
    import mlflow
    from mlflow.models import infer_signature

    client = registry.client(tracking_uri)
    d = params.data
    window = choose_window(lake.partitions("labels"), as_of, params.train.window_days,
                           params.train.holdout_days, d.label_delay_days)
    log.info("training window %s..%s (holdout from %s)", window.first, window.last, window.holdout_first)
    features_contract = load_contract("features")
    span = f"{window.first}..{window.last}"
    features = validate_frame(lake.read_range("features", window.first, window.last), features_contract,
                              params.validation, f"features {span}", d.key, persist=True)
    raise_on_failure(features.report, features.text)
    labels = validate_frame(
        lake.read_range("labels", window.first, window.last).where(F.col("available_at") <= F.lit(as_of)),
        load_contract("labels"), params.validation, f"labels {span}", d.key, persist=True)
    raise_on_failure(labels.report, labels.text)
    frame = (features.passed.join(labels.passed.select(d.key, "dt", d.label), [d.key, "dt"], "inner")
             .toPandas())
    features.annotated.unpersist()
    labels.annotated.unpersist()
    holdout_mask = frame["dt"] >= window.holdout_first
    train, holdout = frame[~holdout_mask], frame[holdout_mask]
    vocab = learn_vocabulary(train, d.categorical_features)
    X_train = encode_pandas(train, d.numeric_features, vocab)
    X_holdout = encode_pandas(holdout, d.numeric_features, vocab)
    booster = fit(X_train, train[d.label].to_numpy(), params)
    metrics = {f"train_{k}": v for k, v in evaluate(train[d.label].to_numpy(), booster.predict(X_train)).items()}
    holdout_scores = booster.predict(X_holdout)
    metrics.update({f"holdout_{k}": v for k, v in evaluate(holdout[d.label].to_numpy(), holdout_scores).items()})
    metrics["train_rows"], metrics["holdout_rows"] = float(len(train)), float(len(holdout))
    profile = build_profile(train, d.numeric_features, d.categorical_features, params.drift.bins,
                            scores=holdout_scores)

    mlflow.set_experiment(EXPERIMENT)
    tags = {
        "params_hash": params.digest(),
        "git_commit": lineage.git_commit(),
        "training_window": f"{window.first}..{window.last}",
        "holdout_from": window.holdout_first.isoformat(),
        "run_id": lineage.run_id(),
        CONTRACT_TAG: features_contract.fingerprint,
    }
    with mlflow.start_run(run_name=f"train-{as_of}") as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params({f"lgbm_{k}": v for k, v in params.train.lightgbm.items()})
        mlflow.log_params({"window_days": params.train.window_days,
                           "holdout_days": params.train.holdout_days, "as_of": as_of.isoformat()})
        mlflow.log_metrics(metrics)
        mlflow.set_tags(tags)
        for checked in (features, labels):
            r = checked.report
            mlflow.log_metrics({f"validation_{r.dataset.split()[0]}_{k}": float(getattr(r, k))
                                for k in ("rows", "passed", "quarantined")})
            mlflow.log_dict(r.as_dict(), f"validation/{r.dataset.split()[0]}.json")
        mlflow.log_dict(features_contract.document, CONTRACT_ARTIFACT)
        for name, content in ((PROFILE_ARTIFACT, profile), (VOCABULARY_ARTIFACT, vocab)):
            (Path(tmp) / name).write_text(json.dumps(content, indent=1))
            mlflow.log_artifact(str(Path(tmp) / name))
        example = X_holdout.head(5)
        info = mlflow.lightgbm.log_model(
            booster, name="model", input_example=example,
            signature=infer_signature(example, booster.predict(example)),
            registered_model_name=params.model.name,
        )
        version = str(info.registered_model_version)
        for key, value in tags.items():
            client.set_model_version_tag(params.model.name, version, key, value)
        alias = registry.CHAMPION if not registry.has_alias(client, params.model.name, registry.CHAMPION) \
            else registry.CHALLENGER
        registry.set_alias(client, params.model.name, alias, version)
    log.info("registered %s version %s as @%s: holdout AUC %.3f", params.model.name, version, alias,
             metrics["holdout_auc"])
    return registry.ResolvedModel(params.model.name, version, alias, run.info.run_id), metrics
