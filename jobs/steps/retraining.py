"""Should a new model be trained on day D? Gathers the facts, asks the policy, logs every decision.

The facts come from the lake (drift verdicts per scored day, performance on matured
labels, labelled rows since the champion's window) and the registry (the champion's
window, the latest training). The decision, "no" included, is logged to MLflow
(experiment batchloop-retraining) with its reasons.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from pyspark.sql import functions as F

from jobs.config import ModelSpec
from jobs.core import policy
from jobs.io import lineage, registry
from jobs.io.lake import Lake

log = logging.getLogger(__name__)

EXPERIMENT = "batchloop-retraining"


def facts(spec: ModelSpec, lake: Lake, client, as_of: date) -> policy.Facts:
    """What the policy needs to know on `as_of`."""
    name = spec.name
    champion = registry.holder(client, name, registry.CHAMPION)
    breaches: tuple[bool, ...] = ()
    if lake.exists("drift_metrics"):
        rows = (lake.read("drift_metrics").where((F.col("dt") <= F.lit(as_of)) & (F.col("kind") == "dataset")
                                                 & (F.col("method") == "share_drifted")
                                                 & (F.col("model") == name))
                .select("dt", "drifted").orderBy("dt").collect())
        breaches = tuple(bool(r["drifted"]) for r in rows[-spec.retraining.drift_windows:])
    champion_metric = None
    primary = spec.primary_metric
    if champion is not None and lake.exists("performance_metrics"):
        latest = (lake.read("performance_metrics")
                  .where((F.col("measured_on") <= F.lit(as_of)) & (F.col("source") == "scores")
                         & (F.col("model") == name) & (F.col("model_version") == champion.version))
                  .orderBy(F.col("dt").desc()).select(primary).first())
        if latest is not None and latest[primary] is not None:
            champion_metric = (primary, float(latest[primary]))
    trained_until = None
    if champion is not None and champion.tags.get("training_window"):
        trained_until = date.fromisoformat(champion.tags["training_window"].split("..")[1])
    versions = client.search_model_versions(f"name='{name}'")
    trainings = [date.fromisoformat(v.tags["as_of"]) for v in versions if v.tags.get("as_of")]
    last_training = max((t for t in trainings if t <= as_of), default=None)
    new_rows = 0
    if trained_until is not None:
        days = [d for d in lake.partitions(spec.label.table) if d > trained_until]
        new_rows = sum((lake.manifest(spec.label.table, d) or {}).get("rows", 0) for d in days
                       if d.toordinal() + spec.label.delay_days <= as_of.toordinal())
    trained_on = date.fromisoformat(champion.tags["as_of"]) if champion and champion.tags.get("as_of") else None
    return policy.Facts(as_of=as_of, drift_breaches=breaches, champion_metric=champion_metric,
                        champion_trained_on=trained_on, last_training=last_training,
                        new_labelled_rows=new_rows, has_champion=champion is not None)


def decide(spec: ModelSpec, lake: Lake, tracking_uri: str, as_of: date, force: bool = False) -> dict[str, Any]:
    """Gather the facts, apply the policy, log the decision and its reasons to MLflow."""
    import mlflow

    client = registry.client(tracking_uri)
    known = facts(spec, lake, client, as_of)
    decision = policy.decide(known, spec.retraining, force=force)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=f"policy-{as_of}"):
        mlflow.set_tags({"model": spec.name, "as_of": as_of.isoformat(), "retrain": str(decision.retrain).lower(),
                         "run_id": lineage.run_id(), "forced": str(force).lower()})
        mlflow.log_metrics({"retrain": float(decision.retrain), "drift_breaches": float(sum(known.drift_breaches)),
                            "new_labelled_rows": float(known.new_labelled_rows),
                            **({f"champion_{known.champion_metric[0]}": known.champion_metric[1]}
                               if known.champion_metric else {})})
        mlflow.log_dict({"facts": {k: (v.isoformat() if isinstance(v, date) else v)
                                   for k, v in known.__dict__.items()}, **decision.as_dict()}, "decision.json")
    log.info("retraining on %s: %s\n  %s", as_of, "YES" if decision.retrain else "no", "\n  ".join(decision.reasons))
    return {"as_of": as_of.isoformat(), "retrain": decision.retrain, "reasons": list(decision.reasons)}
