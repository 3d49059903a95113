"""Drift of one scored day against the reference profile of the model that scored it.

One Spark job folds the day's features and scores into histograms on the reference's
bins (jobs.core.histogram; the job is the union of the two sides' folded states, so each side
ships only its own columns to Python); every statistic is then computed from those
counts in the driver (jobs.core.drift_stats). Each
feature gets every applicable method; the decisive one is chosen by column type and
reference size, as Evidently chooses (Wasserstein or Jensen-Shannon for large
references, Kolmogorov-Smirnov or chi-square for small), unless params.yaml overrides
it. Results go to `drift_metrics` (a row per feature and method), a JSON summary and a
self-contained HTML report in the reports bucket and in MLflow.
"""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import DriftParams, Env, ModelSpec
from jobs.core import drift_stats, histogram
from jobs.core.histogram import CategoryCounts, NumericHistogram
from jobs.core.reference import categorical_from, numeric_from
from jobs.io import alerts, lineage, objectstore, registry
from jobs.io.lake import FileOpener, Lake
from jobs.io.registry import PROFILE_ARTIFACT

log = logging.getLogger(__name__)

EXPERIMENT = "batchloop-drift"
SHARE_METHODS = ("missing_share", "unseen_share")


# -- choosing and judging --------------------------------------------------------------------------
def default_method(kind: str, reference_rows: int, distinct: int, small_sample_rows: int) -> str:
    """The decisive test by column type and reference size, as Evidently's defaults choose it."""
    small = reference_rows <= small_sample_rows
    if kind == "categorical" or distinct <= 5:
        return "chisquare" if small else "jensenshannon"
    return "ks" if small else "wasserstein"


def threshold(method: str, feature: str, drift: DriftParams, learned: dict[str, Any]) -> float:
    """The fixed threshold, or mean + k deviations of the statistic over reference days when learned."""
    fixed = float(getattr(drift.thresholds, method))
    stats = learned.get(feature, {}).get(method)
    if drift.learned_thresholds.enabled and stats and method not in drift_stats.P_VALUE_METHODS:
        return float(stats["mean"] + drift.learned_thresholds.k * stats["std"])
    return fixed


def _row(method: str, value: tuple[float, float | None], limit: float, decisive: bool) -> dict[str, Any]:
    statistic, p_value = value
    return {"method": method, "statistic": float(statistic), "threshold": float(limit),
            "drifted": drift_stats.drifted(method, statistic, p_value, limit), "decisive": decisive,
            "p_value": None if p_value is None else float(p_value)}


def judge_numeric(feature: str, ref: NumericHistogram, cur: NumericHistogram, coarse: np.ndarray, kind: str,
                  drift: DriftParams, learned: dict[str, Any], decisive: str | None = None) -> dict[str, Any]:
    """Every numeric method for one column, the decisive one marked, and the missing-share check."""
    distinct = int(np.count_nonzero(ref.counts))
    chosen = decisive or drift.overrides.get(feature) or default_method("numeric", ref.n, distinct,
                                                                        drift.small_sample_rows)
    methods = []
    for method in ("wasserstein", "ks", "psi", "jensenshannon", "kl"):
        value = drift_stats.numeric_statistic(method, ref, cur, coarse)
        limit = drift.prediction_threshold if (kind == "prediction" and method == "wasserstein") else \
            threshold(method, feature, drift, learned)
        methods.append(_row(method, value, limit, method == chosen))
    ref_missing = ref.missing / max(ref.n + ref.missing, 1)
    cur_missing = cur.missing / max(cur.n + cur.missing, 1)
    methods.append(_row("missing_share", (cur_missing - ref_missing, None), drift.thresholds.missing_share, False))
    plot = {"type": "numeric", "edges": ref.edges[coarse].tolist() if len(coarse) else [],
            "reference": _shares(drift_stats.coarse_counts(ref, coarse)),
            "current": _shares(drift_stats.coarse_counts(cur, coarse)),
            "missing": {"reference": ref_missing, "current": cur_missing}}
    return _feature(feature, kind, chosen, methods, plot)


def judge_categorical(feature: str, ref: CategoryCounts, cur: CategoryCounts, drift: DriftParams,
                      learned: dict[str, Any]) -> dict[str, Any]:
    """Every categorical method for one column, plus the shares of unseen and of missing values."""
    chosen = drift.overrides.get(feature) or default_method("categorical", ref.n, len(ref.counts),
                                                            drift.small_sample_rows)
    methods = [_row(m, drift_stats.categorical_statistic(m, ref, cur), threshold(m, feature, drift, learned),
                    m == chosen) for m in ("jensenshannon", "chisquare", "psi")]
    unseen = sum(v for k, v in cur.counts.items() if k not in ref.counts)
    total = cur.n + cur.missing
    ref_missing = ref.missing / max(ref.n + ref.missing, 1)
    cur_missing = cur.missing / max(total, 1)
    methods.append(_row("unseen_share", (unseen / max(total, 1), None), drift.thresholds.unseen_share, False))
    methods.append(_row("missing_share", (cur_missing - ref_missing, None), drift.thresholds.missing_share, False))
    r, c, cats = drift_stats.aligned(ref, cur)
    plot = {"type": "categorical", "categories": cats, "reference": _shares(r), "current": _shares(c),
            "missing": {"reference": ref_missing, "current": cur_missing}}
    return _feature(feature, "categorical", chosen, methods, plot)


def _shares(counts: np.ndarray) -> list[float]:
    total = float(np.sum(counts))
    return [round(float(x) / total, 6) if total else 0.0 for x in counts]


def _feature(feature: str, kind: str, chosen: str, methods: list[dict[str, Any]], plot: dict) -> dict[str, Any]:
    decisive = next(m for m in methods if m["decisive"])
    drifted = decisive["drifted"] or any(m["drifted"] for m in methods if m["method"] in SHARE_METHODS)
    return {"feature": feature, "kind": kind, "decisive": chosen, "statistic": decisive["statistic"],
            "p_value": decisive["p_value"], "threshold": decisive["threshold"], "drifted": bool(drifted),
            "methods": methods, "plot": plot}


def summarise(features: list[dict[str, Any]], prediction: dict[str, Any], multivariate: dict[str, Any],
              importance: dict[str, float], drift: DriftParams) -> dict[str, Any]:
    """Dataset-level verdicts: share of drifted features, the same weighted by importance, the breach."""
    drifted = [f["feature"] for f in features if f["drifted"]]
    share = len(drifted) / len(features) if features else 0.0
    weights = {f["feature"]: importance.get(f["feature"], 0.0) for f in features}
    weighted = sum(weights[f] for f in drifted) / (sum(weights.values()) or 1.0)
    dataset_drifted = share >= drift.dataset_drift_share
    return {"share_drifted": share, "threshold": drift.dataset_drift_share, "drifted": dataset_drifted,
            "weighted_share": weighted, "drifted_features": drifted,
            "breached": bool(dataset_drifted or prediction.get("drifted", False))}


# -- the job --------------------------------------------------------------------------------------
def collect_day(lake: Lake, day: date, profile: dict[str, Any], spec: ModelSpec,
                arm_edges: dict[str, list[float]] | None = None) -> dict[str, histogram.Profile]:
    """The one pass: the day's features and scores, folded into histograms on the reference's bins."""
    features, feature_files = lake.read_partition_files(spec.table, day)  # missing, empty, unreadable: fails here
    scores, score_files = lake.read_partition_files("scores", day, spec.partition)
    return collect_partitions(features, scores, feature_files, score_files, profile, spec, arm_edges,
                              FileOpener(lake.env.s3_endpoint_url), f"drift of {day}")


def collect_partitions(features: DataFrame, scores: DataFrame, feature_files: tuple[str, ...] | None,
                       score_files: tuple[str, ...] | None, profile: dict[str, Any], spec: ModelSpec,
                       arm_edges: dict[str, list[float]] | None, opener: FileOpener,
                       what: str) -> dict[str, histogram.Profile]:
    """Two partitions folded by Python workers that read their Parquet files themselves, no row passing
    through Spark; Spark counts the rows of both, and the counts must equal the rows folded. Where either
    partition's files cannot be read that way (None), every row is handed over by Spark (`collect`)."""
    from jobs.io.spark import cores

    if feature_files is None or score_files is None:
        return collect(features, scores, profile, spec, arm_edges)
    files = {"features": feature_files, "scores": score_files}
    sources = {name: histogram.FileSource(files[side], columns={"score": column} if column else {}, **shape)
               for name, (side, shape, column) in _folds(profile, spec, arm_edges, "arm_scores" in scores.columns).items()}
    out = histogram.collect_files(features.sparkSession, sources, opener, cores(features.sparkSession))
    counted = {"features": features.count(), "scores": scores.count()}
    folded = {name: out[name].rows for name in counted}
    if folded != counted:
        raise RuntimeError(f"{what}: the fold read {folded} rows where Spark counts {counted}; "
                           "the partitions changed during the step, run it again")
    return out


def _folds(profile: dict[str, Any], spec: ModelSpec, arm_edges: dict[str, list[float]] | None,
           arm_column: bool) -> dict[str, tuple[str, dict[str, Any], tuple[str, str | None] | None]]:
    """What the drift job folds: name -> (the side it reads, its bins and sample, the score's column and map
    key). On a day of an experiment, `arm_edges` (version -> its reference's score edges) adds every arm's own
    scores, as `arm:<version>`."""
    folds: dict[str, tuple[str, dict[str, Any], tuple[str, str | None] | None]] = {
        "features": ("features", {"edges": {c: profile["numeric"][c]["edges"] for c in spec.features.numeric},
                                  "categorical": tuple(spec.features.categorical),
                                  "sample_rows": spec.drift.multivariate.sample_rows, "sample_key": spec.key,
                                  "sample_columns": tuple(profile["sample"]["columns"])}, None),
        "scores": ("scores", {"edges": {"score": profile["score"]["edges"]}}, ("score", None)),
    }
    if arm_edges and arm_column:
        for version, edges in arm_edges.items():
            folds[f"arm:{version}"] = ("scores", {"edges": {"score": edges}}, ("arm_scores", version))
    return folds


def collect(features: DataFrame, scores: DataFrame, profile: dict[str, Any], spec: ModelSpec,
            arm_edges: dict[str, list[float]] | None = None) -> dict[str, histogram.Profile]:
    """Features and scores folded in one Spark job, every row handed over by Spark, each side shipping only its
    own columns."""
    frames = {"features": features, "scores": scores}

    def frame(side: str, column: tuple[str, str | None] | None) -> DataFrame:
        if column is None:
            return frames[side]
        name, key = column
        value = F.col(name)[key] if key else F.col(name)
        return frames[side].select(value.cast("double").alias("score"))

    sources = {name: histogram.Source(frame(side, column), **shape)
               for name, (side, shape, column) in _folds(profile, spec, arm_edges, "arm_scores" in scores.columns).items()}
    out = histogram.collect_sources(sources)
    return {name: groups[histogram.ALL] for name, groups in out.items()}


def compare(profile: dict[str, Any], day: dict[str, histogram.Profile], spec: ModelSpec) -> dict[str, Any]:
    """Every per-feature, prediction and multivariate result, and the dataset verdict."""
    drift = spec.drift
    learned = profile.get("learned", {})
    cur = day["features"]
    features = [judge_numeric(c, numeric_from(profile["numeric"][c]), cur.numeric[c],
                              np.asarray(profile["numeric"][c]["coarse"], int), "numeric", drift, learned)
                for c in spec.features.numeric]
    features += [judge_categorical(c, categorical_from(profile["categorical"][c]), cur.categorical[c], drift, learned)
                 for c in spec.features.categorical]
    prediction = judge_numeric("score", numeric_from(profile["score"]), day["scores"].numeric["score"],
                               np.asarray(profile["score"]["coarse"], int), "prediction", drift, {},
                               decisive="wasserstein")
    sample = np.asarray(profile["sample"]["rows"], float)
    current_sample = cur.sample.rows
    mv: dict[str, Any] = {"method": "mmd", "alpha": drift.multivariate.alpha,
                          "sample_rows": [int(len(sample)), int(len(current_sample))]}
    if len(sample) >= 10 and len(current_sample) >= 10:
        stat, p = drift_stats.mmd_permutation_test(sample, current_sample, drift.multivariate.permutations)
        mv.update(statistic=stat, p_value=p, drifted=bool(p < drift.multivariate.alpha))
    else:
        mv.update(statistic=float("nan"), p_value=float("nan"), drifted=False)
    dataset = summarise(features, prediction, mv, profile.get("importance", {}), drift)
    for f in features:
        f["importance"] = profile.get("importance", {}).get(f["feature"], 0.0)
    return {"features": features, "prediction": prediction, "multivariate": mv, "dataset": dataset}


def metric_rows(result: dict[str, Any], model: registry.ResolvedModel, run_id: str, computed_at: datetime):
    """The drift_metrics rows: one per feature and method, plus prediction, multivariate and dataset rows."""
    base = {"model_name": model.name, "model_version": model.version, "run_id": run_id, "computed_at": computed_at}
    rows = []
    for f in [*result["features"], result["prediction"]]:
        for m in f["methods"]:
            rows.append({**base, "feature": f["feature"], "kind": f["kind"], "method": m["method"],
                         "statistic": m["statistic"], "threshold": m["threshold"], "drifted": m["drifted"],
                         "decisive": m["decisive"], "p_value": m["p_value"]})
    mv, ds = result["multivariate"], result["dataset"]
    rows.append({**base, "feature": "*", "kind": "multivariate", "method": "mmd", "statistic": mv["statistic"],
                 "threshold": mv["alpha"], "drifted": mv["drifted"], "decisive": False, "p_value": mv["p_value"]})
    rows.append({**base, "feature": "*", "kind": "dataset", "method": "share_drifted", "statistic": ds["share_drifted"],
                 "threshold": ds["threshold"], "drifted": ds["breached"], "decisive": True, "p_value": None})
    rows.append({**base, "feature": "*", "kind": "dataset", "method": "weighted_share",
                 "statistic": ds["weighted_share"], "threshold": ds["threshold"],
                 "drifted": ds["weighted_share"] >= ds["threshold"], "decisive": False, "p_value": None})
    return rows


METRICS_SCHEMA = T.StructType([
    T.StructField("feature", T.StringType()), T.StructField("kind", T.StringType()),
    T.StructField("method", T.StringType()), T.StructField("statistic", T.DoubleType()),
    T.StructField("threshold", T.DoubleType()), T.StructField("drifted", T.BooleanType()),
    T.StructField("decisive", T.BooleanType()), T.StructField("p_value", T.DoubleType()),
    T.StructField("model_name", T.StringType()), T.StructField("model_version", T.StringType()),
    T.StructField("run_id", T.StringType()), T.StructField("computed_at", T.TimestampType()),
])


def trend(lake: Lake, day: date, days: int, today: list[dict[str, Any]], by: dict[str, str]) -> dict[str, Any]:
    """The decisive statistics of the model's last `days` days (from drift_metrics) and today's."""
    history: dict[str, dict[str, float]] = {}
    if lake.exists("drift_metrics"):
        past = (lake.read_range("drift_metrics", day - timedelta(days=days - 1), day - timedelta(days=1), by)
                .where(F.col("decisive")).select("dt", "feature", "kind", "statistic").collect())
        for r in past:
            name = "__dataset__" if r["kind"] == "dataset" else r["feature"]
            history.setdefault(r["dt"].isoformat(), {})[name] = r["statistic"]
    history[day.isoformat()] = {("__dataset__" if r["kind"] == "dataset" else r["feature"]): r["statistic"]
                                for r in today if r["decisive"]}
    dates = sorted(history)
    names = sorted({n for v in history.values() for n in v} - {"__dataset__", "score"})
    return {"days": dates, "share_drifted": [history[x].get("__dataset__") for x in dates],
            "prediction": [history[x].get("score") for x in dates],
            "features": {n: [history[x].get(n) for x in dates] for n in names}}


def run(spec: ModelSpec, lake: Lake, env: Env, day: date, model_ref: str | None = None) -> dict[str, Any]:
    """Drift of `day` against the reference of the model that scored it (or `model_ref`)."""
    import mlflow

    from jobs.core.report import render_drift_report
    from jobs.steps import experiment as experiments

    client = registry.client(env.mlflow_tracking_uri)
    # the served scores of a canary or bandit: every arm's own prediction drift too, in the same job
    arms = experiments.drift_arms(client, spec, day) if model_ref is None else None
    if model_ref is None:
        manifest = lake.manifest("scores", day, spec.partition) or {}
        model_ref = manifest.get("model_uri")
        if model_ref is None:
            served = lake.read_partition("scores", day, spec.partition).select("model_name", "model_version").first()
            model_ref = f"models:/{served['model_name']}/{served['model_version']}"
    model = registry.resolve(client, model_ref)
    profile = registry.load_json_artifact(model, PROFILE_ARTIFACT)
    run_id, computed_at = lineage.run_id(), datetime.now(UTC)
    day_hist = collect_day(lake, day, profile, spec, arms.edges() if arms else None)
    result = compare(profile, day_hist, spec)
    rows = metric_rows(result, model, run_id, computed_at)
    lake.write_partition(lake.spark.createDataFrame(rows, METRICS_SCHEMA), "drift_metrics", day,
                         {"model_uri": model.uri, "breached": result["dataset"]["breached"]}, by=spec.partition)
    window = model.tags.get("training_window", "")
    summary = {"date": day.isoformat(), "model": model.uri, "model_reference": model.reference, "run_id": run_id,
               "generated_at": computed_at.isoformat(timespec="seconds"),
               "reference": {"rows": profile["rows"], "window": window},
               "current": {"rows": day_hist["features"].rows}, **result,
               "trend": trend(lake, day, spec.drift.history_days, rows, spec.partition)}
    summary["features"] = [*result["features"], {**result["prediction"], "importance": None}]
    summary["prediction"] = {**result["prediction"], "method": result["prediction"]["decisive"]}
    prefix = f"drift/{model.name}/{day.isoformat()}"
    report_uri = f"s3://{env.bucket_reports}/{prefix}/report.html"
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=f"drift-{day}") as mlrun, tempfile.TemporaryDirectory() as tmp:
        run_url = f"{env.mlflow_tracking_uri.rstrip('/')}/#/experiments/{mlrun.info.experiment_id}/runs/{mlrun.info.run_id}"
        summary["links"] = {"mlflow_run": run_url, "report": report_uri}
        html = render_drift_report(summary)
        text = json.dumps(summary, indent=1, default=_json_default)
        objectstore.upload(env, env.bucket_reports, f"{prefix}/report.html", html, "text/html; charset=utf-8")
        objectstore.upload(env, env.bucket_reports, f"{prefix}/summary.json", text, "application/json")
        mlflow.set_tags({"date": day.isoformat(), "model": model.uri, "run_id": run_id,
                         "breached": str(result["dataset"]["breached"]).lower(), "report": report_uri})
        mlflow.log_metrics({"share_drifted": result["dataset"]["share_drifted"],
                            "weighted_share_drifted": result["dataset"]["weighted_share"],
                            "prediction_wasserstein": result["prediction"]["statistic"],
                            **{f"{f['decisive']}_{f['feature']}": f["statistic"] for f in result["features"]
                               if np.isfinite(f["statistic"])}})
        for name, content in (("drift_report.html", html), ("drift_summary.json", text)):
            (Path(tmp) / name).write_text(content)
            mlflow.log_artifact(str(Path(tmp) / name))
    ds = result["dataset"]
    log.info("drift %s: %d of %d features drifted (share %.2f, threshold %.2f), prediction %s; report %s",
             day, len(ds["drifted_features"]), len(result["features"]), ds["share_drifted"], ds["threshold"],
             "drifted" if result["prediction"]["drifted"] else "stable", report_uri)
    if ds["breached"]:
        alerts.notify(env, f"batchloop: drift breached on {day}",
                      {"date": day.isoformat(), "model": model.uri, "share_drifted": round(ds["share_drifted"], 3),
                       "drifted_features": ds["drifted_features"], "prediction_drifted": result["prediction"]["drifted"],
                       "report": report_uri, "mlflow_run": run_url})
    guardrail = experiments.drift_guardrail(spec, env, day, arms, day_hist) if arms else None
    return {"date": day.isoformat(), "model": model.uri, "breached": ds["breached"], "experiment": guardrail,
            "share_drifted": ds["share_drifted"], "drifted_features": ds["drifted_features"],
            "prediction_drifted": result["prediction"]["drifted"],
            "multivariate_p_value": result["multivariate"]["p_value"], "report": report_uri,
            "mlflow_run": run_url, "run_id": run_id}


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
