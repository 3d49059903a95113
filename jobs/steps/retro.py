"""Retro-tests: how a given model would have scored a range of days, written to its own namespace.

Input comes from the production namespace; every write goes to the retro-test
namespace (refused when it is the production one): its own `scores` and `quarantine`,
`retro_metrics` (quality where labels exist) and `retro_diff` (against what production
served on the same keys).
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import Env, ModelSpec
from jobs.errors import InvalidParameter, PartitionNotFound
from jobs.io import registry
from jobs.io.lake import Lake, check_identifier
from jobs.steps import monitor
from jobs.steps import score as scoring

log = logging.getLogger(__name__)

DIFF_SCHEMA = T.StructType([
    T.StructField("rows_compared", T.LongType()), T.StructField("retro_rows", T.LongType()),
    T.StructField("production_rows", T.LongType()), T.StructField("mean_abs_diff", T.DoubleType()),
    T.StructField("max_abs_diff", T.DoubleType()), T.StructField("share_diff_over_0_01", T.DoubleType()),
    T.StructField("retro_model", T.StringType()), T.StructField("production_models", T.StringType()),
    T.StructField("computed_at", T.TimestampType()),
])


def target(production: Lake, namespace: str) -> Lake:
    """The retro-test namespace: a valid identifier, never the production one."""
    check_identifier(namespace, "namespace")
    if namespace == production.namespace:
        raise InvalidParameter(f"namespace {namespace!r} is the production namespace: retro-tests write only to "
                               "their own (e.g. retro_march_v7)")
    return production.with_namespace(namespace)


def diff(production: Lake, retro: Lake, day: date, key: str, model_uri: str, by: dict[str, str]) -> dict[str, Any]:
    """Compare the retro scores of a day with what production served (of one model, `by`)."""
    mine = retro.read_partition("scores", day, by).select(key, F.col("score").alias("retro"))
    theirs = production.read_partition("scores", day, by)
    served = ",".join(sorted({f"{r[0]}/{r[1]}" for r in theirs.select("model_name", "model_version")
                              .distinct().collect()}))
    both = mine.join(theirs.select(key, F.col("score").alias("prod")), key, "inner") \
        .select((F.col("retro") - F.col("prod")).alias("d"))
    r = both.agg(F.count(F.lit(1)).alias("n"), F.avg(F.abs("d")).alias("mean"), F.max(F.abs("d")).alias("max"),
                 F.avg((F.abs("d") > 0.01).cast("double")).alias("share")).first()
    return {"rows_compared": int(r["n"]), "retro_rows": mine.count(), "production_rows": theirs.count(),
            "mean_abs_diff": r["mean"], "max_abs_diff": r["max"], "share_diff_over_0_01": r["share"],
            "retro_model": model_uri, "production_models": served, "computed_at": datetime.now(UTC)}


def run(spec: ModelSpec, production: Lake, env: Env, model_ref: str | None, champion_as_of: date | None,
        first: date, last: date, namespace: str, compare: bool) -> dict[str, Any]:
    """Score first..last with one model into `namespace`; metrics where labels exist; diff to production."""
    if last < first:
        raise InvalidParameter(f"the date range is empty: end {last} is before start {first}")
    if (model_ref is None) == (champion_as_of is None):
        raise InvalidParameter("give exactly one of a model version (models:/name/N) and a champion-as-of date")
    retro = target(production, namespace)
    client = registry.client(env.mlflow_tracking_uri)
    ref = model_ref or f"models:/{spec.name}@{registry.CHAMPION}"
    model = registry.resolve(client, ref, as_of=champion_as_of)
    pinned = f"models:/{model.name}/{model.version}"
    log.info("retro-test of %s (%s) over %s..%s into %s", pinned, model.reference, first, last, namespace)
    days, skipped = [], []
    day = first
    while day <= last:
        try:
            scoring.run(spec, production, retro, env, day, model_ref=pinned, shadow=False)
            days.append(day)
        except PartitionNotFound as exc:
            skipped.append({"date": day.isoformat(), "reason": str(exc)})
        day += timedelta(days=1)
    metrics, diffs = [], []
    for day in days:
        if day in production.partitions(spec.label.table):
            labels = production.read_partition(spec.label.table, day).select(spec.key, spec.label.column)
            scored = retro.read_partition("scores", day, spec.partition).select(spec.key, "score", "model_name", "model_version",
                                                                F.lit("retro").alias("source"))
            for m in monitor.measure(scored.join(labels, spec.key, "inner"), spec.label.column, spec.task,
                                     spec.gate.calibration_bins):
                rows = [{**{f.name: None for f in monitor.SCHEMA.fields}, **m, "measured_on": day,
                         "computed_at": datetime.now(UTC)}]
                retro.write_partition(retro.spark.createDataFrame(rows, monitor.SCHEMA), "retro_metrics", day,
                                      by=spec.partition)
                metrics.append({"date": day.isoformat(), spec.primary_metric: m[spec.primary_metric],
                                "rows": m["rows"]})
        if compare and day in production.partitions("scores", spec.partition):
            result = diff(production, retro, day, spec.key, pinned, spec.partition)
            retro.write_partition(retro.spark.createDataFrame([result], DIFF_SCHEMA), "retro_diff", day,
                                  by=spec.partition)
            diffs.append({"date": day.isoformat(), **{k: v for k, v in result.items() if k != "computed_at"}})
    return {"model": pinned, "model_reference": model.reference, "namespace": namespace,
            "scored_days": [x.isoformat() for x in days], "skipped": skipped, "metrics": metrics, "diff": diffs}
