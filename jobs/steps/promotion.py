"""Evaluate a challenger against the champion, gate it, and move aliases (promotion, rollback).

Three steps, each a CLI command and a DAG task:
- evaluate: both models score every row of the challenger's holdout (from its DVC
  snapshot); quality of each and a paired bootstrap interval of the AUC difference are
  logged to MLflow (experiment batchloop-evaluation).
- gate: the thresholds in params.yaml (`gate`) decide; the verdict is recorded on the
  evaluation run and as tags of the version.
- promote: in auto mode a passed verdict makes the challenger champion; `--rollback`
  restores the champion before the current one. Every alias move is in the history.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import functions as F

from jobs.config import Env, ModelSpec
from jobs.contracts.contract import combine, load_contract
from jobs.contracts.validate import validate_frame
from jobs.core import gate
from jobs.core.metrics import Quality, bootstrap_difference, quality
from jobs.errors import InvalidParameter, ModelNotFound, PromotionRefused
from jobs.io import lineage, registry
from jobs.io.registry import WINDOW_ARTIFACT
from jobs.models import flavors
from jobs.steps import snapshot as snapshots

log = logging.getLogger(__name__)

EXPERIMENT = "batchloop-evaluation"
EVALUATION_ARTIFACT = "evaluation.json"
VERDICT_ARTIFACT = "gate_verdict.json"


@dataclass(frozen=True)
class Evaluation:
    challenger: registry.ResolvedModel
    champion: registry.ResolvedModel | None
    metrics: dict[str, float]
    run_id: str


def holdout_rows(spec: ModelSpec, spark, folder: Path) -> tuple[pd.DataFrame, snapshots.Window]:
    """The snapshot's holdout days, only rows that pass the contracts (as in training)."""
    window = snapshots.Window.from_dict(snapshots.read_window(folder)["window"])
    contract = combine("snapshot", load_contract(spec.table), load_contract(spec.label.table))
    checked = validate_frame(snapshots.read(spark, folder).where(F.col("dt") >= F.lit(window.holdout_first)),
                             contract, spec.validation, f"holdout from {window.holdout_first}", spec.key)
    return checked.passed.toPandas(), window


def evaluate(spec: ModelSpec, spark, env: Env, challenger_ref: str, folder: Path) -> Evaluation:
    """Score the challenger's holdout with the challenger and the champion; log both to MLflow."""
    import mlflow

    client = registry.client(env.mlflow_tracking_uri)
    challenger = registry.resolve(client, challenger_ref)
    trained_window = registry.load_json_artifact(challenger, WINDOW_ARTIFACT)["window"]
    rows, window = holdout_rows(spec, spark, folder)
    if window.as_dict() != trained_window:
        raise InvalidParameter(f"{folder} holds the window {window.as_dict()}, but {challenger.uri} was trained "
                               f"on {trained_window}: pass that version's snapshot (batchloop data restore)")
    champion = registry.holder(client, challenger.name, registry.CHAMPION)
    if champion is not None and champion.version == challenger.version:
        champion = None
    y = rows[spec.label.column].to_numpy()
    bins, primary = spec.gate.calibration_bins, spec.primary_metric
    p_challenger = flavors.predict_version(challenger, rows, spec)
    metrics = quality(y, p_challenger, bins, spec.task).as_dict("challenger_")
    metrics[f"challenger_train_{primary}"] = float(client.get_run(challenger.run_id).data.metrics[f"train_{primary}"])
    if champion is not None:
        p_champion = flavors.predict_version(champion, rows, spec)
        metrics.update(quality(y, p_champion, bins, spec.task).as_dict("champion_"))
        metrics.update(bootstrap_difference(spec.task, primary, y, p_challenger, p_champion,
                                            spec.gate.bootstrap_samples, spec.gate.confidence, bins))
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=f"evaluate-{challenger.name}-v{challenger.version}") as run:
        mlflow.set_tags({"challenger": challenger.uri, "champion": champion.uri if champion else "none",
                         "holdout_from": window.holdout_first.isoformat(), "run_id": lineage.run_id()})
        mlflow.log_metrics(metrics)
        mlflow.log_dict({"challenger": challenger.uri, "champion": champion.uri if champion else None,
                         "window": window.as_dict(), "metrics": metrics}, EVALUATION_ARTIFACT)
    client.set_model_version_tag(challenger.name, challenger.version, "evaluation_run_id", run.info.run_id)
    log.info("evaluated %s against %s on %d holdout rows: %s", challenger.uri,
             champion.uri if champion else "no champion", len(rows),
             {k: round(v, 4) for k, v in metrics.items() if primary in k})
    return Evaluation(challenger, champion, metrics, run.info.run_id)


def decide(spec: ModelSpec, env: Env, challenger_ref: str) -> gate.Verdict:
    """Apply the gate in params.yaml to the challenger's latest evaluation; record the verdict."""
    import mlflow

    client = registry.client(env.mlflow_tracking_uri)
    challenger = registry.resolve(client, challenger_ref)
    run_id = challenger.tags.get("evaluation_run_id")
    if not run_id:
        raise ModelNotFound(f"{challenger.uri} has not been evaluated: run `batchloop evaluate --model "
                            f"{challenger.uri}` first")
    evaluation = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/{EVALUATION_ARTIFACT}"))
    m, primary = evaluation["metrics"], spec.primary_metric
    if f"challenger_train_{primary}" not in m:
        raise ModelNotFound(f"{challenger.uri} was evaluated without {primary} (the spec's primary metric now): "
                            f"run `batchloop evaluate --model {challenger.uri}` again")
    challenger_quality = Quality.from_dict(spec.task, m, "challenger_")
    if challenger_quality is None:
        raise ModelNotFound(f"{challenger.uri}'s evaluation holds no {spec.task} metrics: run `batchloop evaluate "
                            f"--model {challenger.uri}` again")
    difference = ((m[f"{primary}_difference_low"], m[f"{primary}_difference_high"])
                  if f"{primary}_difference_low" in m else None)
    verdict = gate.decide(primary, challenger_quality, m[f"challenger_train_{primary}"],
                          Quality.from_dict(spec.task, m, "champion_"), difference, spec.gate, challenger.uri,
                          evaluation["champion"])
    with mlflow.start_run(run_id=run_id):
        mlflow.log_dict({**verdict.as_dict(), "mode": spec.gate.mode, "reasons": verdict.reasons}, VERDICT_ARTIFACT)
        mlflow.set_tags({"gate_passed": str(verdict.passed).lower(), "gate_mode": spec.gate.mode})
    client.set_model_version_tag(challenger.name, challenger.version, "gate_passed", str(verdict.passed).lower())
    client.set_model_version_tag(challenger.name, challenger.version, "gate_reasons", "; ".join(verdict.reasons)[:4900])
    log.info("gate for %s: %s\n  %s", challenger.uri, "PASSED" if verdict.passed else "FAILED",
             "\n  ".join(verdict.reasons))
    return verdict


def _effective_default(model: registry.ResolvedModel) -> date:
    """A promotion applies from the first day not yet scored: the day after the challenger's as-of day
    for a version trained by the pipeline, today for a manual move."""
    as_of = model.tags.get("as_of")
    return date.fromisoformat(as_of) + timedelta(days=1) if as_of else datetime.now(UTC).date()


def promote(spec: ModelSpec, env: Env, model_ref: str, reason: str, effective_from: date | None = None,
            force: bool = False) -> dict[str, Any]:
    """Make a version champion. It must have passed the gate, unless forced (the reason says why)."""
    client = registry.client(env.mlflow_tracking_uri)
    candidate = registry.resolve(client, model_ref)
    current = registry.holder(client, candidate.name, registry.CHAMPION)
    if current is not None and current.version == candidate.version:
        return {"promoted": False, "champion": current.uri, "reason": "already champion"}
    if candidate.tags.get("gate_passed") != "true" and not force:
        why = candidate.tags.get("gate_reasons", "it has no gate verdict")
        raise PromotionRefused(f"{candidate.uri} did not pass the gate ({why}); "
                               "promote it anyway with --force and a --reason")
    when = effective_from or _effective_default(candidate)
    registry.move_alias(client, candidate.name, registry.CHAMPION, candidate.version, reason, when, lineage.run_id())
    challenger = registry.holder(client, candidate.name, registry.CHALLENGER)
    if challenger is not None and challenger.version == candidate.version:
        registry.move_alias(client, candidate.name, registry.CHALLENGER, None, f"promoted to champion: {reason}",
                            when, lineage.run_id())
    return {"promoted": True, "champion": candidate.uri, "previous": current.uri if current else None,
            "effective_from": when.isoformat()}


def apply_gate(spec: ModelSpec, env: Env, model_ref: str) -> dict[str, Any]:
    """The pipeline's last step: in auto mode a challenger that passed becomes champion."""
    client = registry.client(env.mlflow_tracking_uri)
    candidate = registry.resolve(client, model_ref)
    if candidate.tags.get("gate_passed") != "true":
        why = candidate.tags.get("gate_reasons", "no gate verdict")
        log.info("%s stays challenger: %s", candidate.uri, why)
        return {"promoted": False, "challenger": candidate.uri, "reason": why}
    if spec.gate.mode == "manual":
        log.info("%s passed the gate; gate.mode is manual: `batchloop promote --model %s` applies it",
                 candidate.uri, candidate.uri)
        return {"promoted": False, "challenger": candidate.uri, "reason": "gate passed; awaiting manual promotion"}
    return promote(spec, env, model_ref, "gate passed (auto)")


def rollback(spec: ModelSpec, env: Env, name: str, reason: str, effective_from: date | None = None) -> dict[str, Any]:
    """Give the champion alias back to the version that held it before the current one."""
    client = registry.client(env.mlflow_tracking_uri)
    current = registry.holder(client, name, registry.CHAMPION)
    if current is None:
        raise ModelNotFound(f"models:/{name}@champion does not exist: nothing to roll back")
    previous = [e.version for e in registry.alias_history(client, name)
                if e.alias == registry.CHAMPION and e.version and e.version != current.version]
    if not previous:
        raise PromotionRefused(f"{current.uri} is the only champion {name!r} has had: nothing to roll back to")
    when = effective_from or datetime.now(UTC).date()
    registry.move_alias(client, name, registry.CHAMPION, previous[-1], f"rollback: {reason}", when, lineage.run_id())
    return {"rolled_back": True, "champion": f"models:/{name}/{previous[-1]}", "previous": current.uri,
            "effective_from": when.isoformat()}
