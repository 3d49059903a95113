"""Batch scoring: one day of features through one resolved model version into `scores`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StructField, StructType

from jobs import lineage, registry
from jobs.contract import Contract, changed_expectations, load_contract, quarantine_frame, raise_on_failure
from jobs.encoding import Vocabulary, encode_spark
from jobs.errors import ContractViolation
from jobs.settings import Params, ValidationParams
from jobs.train import CONTRACT_ARTIFACT, CONTRACT_TAG, VOCABULARY_ARTIFACT
from jobs.validate import validate_frame

log = logging.getLogger(__name__)

# One booster per Python worker process, keyed by model version, built on first use.
_BOOSTERS: dict[str, object] = {}


def _booster(key: str, model_str: str):
    import lightgbm as lgb

    if key not in _BOOSTERS:
        _BOOSTERS[key] = lgb.Booster(model_str=model_str)
    return _BOOSTERS[key]


def predict_batches(batches: Iterator[pa.RecordBatch], key: str, model_str: str,
                    id_col: str) -> Iterator[pa.RecordBatch]:
    """Score encoded Arrow batches (key, then model columns) with one model thread."""
    booster = _booster(key, model_str)
    for batch in batches:
        X = np.column_stack([batch.column(i).to_numpy(zero_copy_only=False)
                             for i in range(1, batch.num_columns)])
        scores = booster.predict(X, num_threads=1)
        yield pa.RecordBatch.from_arrays([batch.column(0), pa.array(scores, pa.float64())],
                                         names=[id_col, "score"])


def score_frame(features: DataFrame, params: Params, model: registry.ResolvedModel, model_str: str,
                vocab: Vocabulary, run_id: str, scored_at: datetime, day: date) -> DataFrame:
    """Features -> scores with lineage columns on every row (lazy)."""
    d = params.data
    key_field = features.schema[d.key]
    out_schema = StructType([StructField(d.key, key_field.dataType, False), StructField("score", DoubleType())])
    model_key = f"{model.name}/{model.version}"
    encoded = encode_spark(features, d.key, d.numeric_features, vocab)
    scored = encoded.mapInArrow(lambda it: predict_batches(it, model_key, model_str, d.key), out_schema)
    return scored.select(
        d.key,
        "score",
        F.lit(model.name).alias("model_name"),
        F.lit(model.version).alias("model_version"),
        F.lit(model.alias).cast("string").alias("model_alias"),
        F.lit(model.run_id).alias("model_run_id"),
        F.lit(run_id).alias("run_id"),
        F.lit(scored_at).cast("timestamp").alias("scored_at"),
        F.lit(lineage.code_version()).alias("code_version"),
        F.lit(day).alias("dt"),
    )


def check_contract_version(model: registry.ResolvedModel, features: Contract, policy: ValidationParams) -> None:
    """Refuse (or warn) when the model was trained under another feature contract, naming what changed."""
    trained = model.tags.get(CONTRACT_TAG)
    if trained is None or trained == features.fingerprint:
        return
    stored = registry.load_json_artifact(model, CONTRACT_ARTIFACT)
    message = (f"{model.uri} was trained under feature contract {trained}; expectations/features.json is now "
               f"{features.fingerprint}. Changed: {', '.join(changed_expectations(stored, features))}")
    if policy.on_contract_change == "fail":
        raise ContractViolation(f"{message}. Retrain, or set validation.on_contract_change: warn in params.yaml")
    log.warning(message)


def run(params: Params, lake, tracking_uri: str, day: date, model_ref: str | None = None) -> dict[str, object]:
    """Score one day with a model resolved once at start; replace that day's `scores` partition.

    Input rows that break the feature contract go to `quarantine`; the counts must
    reconcile: input = scored + quarantined.
    """
    import mlflow

    client = registry.client(tracking_uri)
    ref = model_ref or f"models:/{params.model.name}@{registry.CHAMPION}"
    model = registry.resolve(client, ref)
    log.info("scoring %s with %s (resolved from %s)", day, model.uri, ref)
    features_contract = load_contract("features")
    check_contract_version(model, features_contract, params.validation)
    run_id = lineage.run_id()
    checked = validate_frame(lake.read_partition("features", day), features_contract, params.validation,
                             f"features dt={day}", params.data.key, persist=True)
    lake.replace_partition(quarantine_frame(checked.annotated, params.data.key, run_id), "quarantine", day)
    raise_on_failure(checked.report, checked.text)
    booster = mlflow.lightgbm.load_model(model.uri)
    vocab = registry.load_json_artifact(model, VOCABULARY_ARTIFACT)
    scores = score_frame(checked.passed, params, model, booster.model_to_string(), vocab, run_id,
                         datetime.now(UTC), day).persist(StorageLevel.MEMORY_AND_DISK)
    output = validate_frame(scores, load_contract("scores"), params.validation, f"scores dt={day}", params.data.key)
    if output.report.quarantined:
        raise ContractViolation(f"scoring output breaks expectations/scores.json; nothing was written:\n{output.text}")
    lake.overwrite_partitions(scores, "scores")
    counts = {
        "input_rows": checked.report.rows,
        "quarantined_rows": checked.report.quarantined,
        "scored_rows": lake.read_partition("scores", day).count(),
    }
    if counts["input_rows"] != counts["scored_rows"] + counts["quarantined_rows"]:
        raise ContractViolation(f"scoring {day}: counts do not reconcile: {counts}")
    scores.unpersist()
    checked.annotated.unpersist()
    log.info("scored %s: %s", day, counts)
    return {"model": model.uri, "model_alias": model.alias, "run_id": run_id, **counts}
