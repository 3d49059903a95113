"""Drift of one scoring day against the reference profile of the model that scored it."""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs import lineage, registry
from jobs.reference import psi
from jobs.settings import Params
from jobs.train import PROFILE_ARTIFACT

log = logging.getLogger(__name__)

EXPERIMENT = "batchloop-drift"


def cumulative_to_counts(cumulative: list[int], total: int) -> list[int]:
    """Counts per bin from counts of (x <= edge_i) and the non-null total."""
    return np.diff([0, *cumulative, total]).astype(int).tolist()


def numeric_bin_counts(df: DataFrame, edges: dict[str, list[float]]) -> dict[str, list[int]]:
    """Bin counts of every numeric column against its reference edges, in one aggregation."""
    aggs = []
    for col, col_edges in edges.items():
        aggs.append(F.count(F.col(col)).alias(f"{col}__n"))
        aggs.extend(F.sum((F.col(col) <= F.lit(e)).cast("long")).alias(f"{col}__{i}")
                    for i, e in enumerate(col_edges))
    row = df.agg(*aggs).first().asDict()
    return {col: cumulative_to_counts([row[f"{col}__{i}"] or 0 for i in range(len(e))], row[f"{col}__n"])
            for col, e in edges.items()}


def category_counts(df: DataFrame, columns: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Value counts of every categorical column, in one grouped pass."""
    pairs = F.explode(F.array(*[F.struct(F.lit(c).alias("feature"), F.col(c).cast("string").alias("value"))
                                for c in columns]))
    rows = df.select(pairs.alias("p")).groupBy("p.feature", "p.value").count().collect()
    out: dict[str, dict[str, int]] = {c: {} for c in columns}
    for r in rows:
        out[r["feature"]][str(r["value"])] = int(r["count"])
    return out


def category_psi(reference: dict[str, int], current: dict[str, int]) -> float:
    cats = sorted(set(reference) | set(current))
    return psi([reference.get(c, 0) for c in cats], [current.get(c, 0) for c in cats])


def compare(profile: dict[str, Any], numeric: dict[str, list[int]], categorical: dict[str, dict[str, int]],
            score_counts: list[int] | None, threshold: float) -> list[dict[str, Any]]:
    """One row per feature (and the score): PSI against the reference, threshold, verdict."""
    rows = []
    for col, counts in numeric.items():
        rows.append(("numeric", col, psi(profile["numeric"][col]["counts"], counts)))
    for col, counts in categorical.items():
        rows.append(("categorical", col, category_psi(profile["categorical"][col]["counts"], counts)))
    if score_counts is not None and "score" in profile:
        rows.append(("prediction", "score", psi(profile["score"]["counts"], score_counts)))
    return [{"kind": kind, "feature": name, "method": "psi", "statistic": float(value),
             "threshold": threshold, "drifted": bool(value > threshold)} for kind, name, value in rows]


def run(params: Params, lake, tracking_uri: str, day: date, model_ref: str | None = None) -> dict[str, Any]:
    """PSI of each feature and of the score for one day; written to `drift_metrics` and MLflow."""
    import mlflow

    client = registry.client(tracking_uri)
    scores = lake.read_partition("scores", day)
    if model_ref is None:
        served = scores.select("model_name", "model_version").distinct().collect()
        model_ref = f"models:/{served[0]['model_name']}/{served[0]['model_version']}"
    model = registry.resolve(client, model_ref)
    profile = registry.load_json_artifact(model, PROFILE_ARTIFACT)
    d = params.data
    features = lake.read_partition("features", day)
    numeric = numeric_bin_counts(features, {c: profile["numeric"][c]["edges"] for c in d.numeric_features})
    categorical = category_counts(features, d.categorical_features)
    score_counts = numeric_bin_counts(scores, {"score": profile["score"]["edges"]})["score"]
    results = compare(profile, numeric, categorical, score_counts, params.drift.psi_threshold)
    drifted = [r["feature"] for r in results if r["drifted"] and r["kind"] != "prediction"]
    n_features = len(d.features)
    summary = {
        "date": day.isoformat(), "model": model.uri, "run_id": lineage.run_id(),
        "share_drifted": len(drifted) / n_features, "drifted_features": drifted,
        "prediction_psi": next((r["statistic"] for r in results if r["kind"] == "prediction"), None),
        "metrics": results,
    }
    computed_at = datetime.now(UTC)
    table = lake.spark.createDataFrame(
        [{**r, "model_name": model.name, "model_version": model.version, "run_id": summary["run_id"],
          "computed_at": computed_at, "dt": day} for r in results])
    lake.overwrite_partitions(table, "drift_metrics")
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=f"drift-{day}"), tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags({"date": day.isoformat(), "model": model.uri, "run_id": summary["run_id"]})
        mlflow.log_metrics({f"psi_{r['feature']}": r["statistic"] for r in results})
        mlflow.log_metric("share_drifted", summary["share_drifted"])
        (Path(tmp) / "drift_summary.json").write_text(json.dumps(summary, indent=1))
        mlflow.log_artifact(str(Path(tmp) / "drift_summary.json"))
    log.info("drift %s: %d of %d features drifted (PSI > %s)", day, len(drifted), n_features,
             params.drift.psi_threshold)
    return summary
