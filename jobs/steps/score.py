"""Batch scoring: one day of features through one resolved model version into `scores`.

Order matters: everything that can refuse the run (model, contract version, input
columns against the model, an empty partition, the golden sample) is checked before
anything is written. Then the input is validated (bad rows to `quarantine`), scored in
one pass (the champion, and the challenger into `scores_shadow` when there is one),
the output is checked against the model's scores contract (expectations/<scores_contract>.json), and each table's partition is
replaced atomically with a manifest. Counts must reconcile: input = scored + quarantined.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import Env, ModelSpec, ValidationParams
from jobs.contracts import datadocs
from jobs.contracts.contract import (
    Contract,
    changed_expectations,
    load_contract,
    quarantine_frame,
    raise_on_failure,
)
from jobs.contracts.validate import require_columns, validate_frame
from jobs.core.experiment import State as ExperimentState
from jobs.errors import ConfigError, ContractViolation, GoldenSampleMismatch, ModelNotFound, PartitionNotFound
from jobs.io import lineage, registry
from jobs.io.lake import Lake, checksum
from jobs.io.registry import (
    CONTRACT_ARTIFACT,
    CONTRACT_TAG,
    GOLDEN_ARTIFACT,
    PROFILE_ARTIFACT,
    VOCABULARY_ARTIFACT,
)
from jobs.io.spark import cores as spark_cores
from jobs.io.spark import keep
from jobs.models import compiled, flavors, predict
from jobs.models.encoding import model_matrix
from jobs.steps import experiment as experiments

log = logging.getLogger(__name__)

NUMERIC_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DecimalType)


@dataclass(frozen=True)
class Scorer:
    """A resolved model version and everything scoring needs from it.

    `kind` is how it is scored: "booster" (a LightGBM model: its model string, read by the
    booster directly on the encoded matrix) or "pyfunc" (any other MLflow model: its saved
    folder as a tar.gz, loaded once per Python worker, predicting pandas batches of the raw
    feature columns `names`)."""

    model: registry.ResolvedModel
    payload: str | bytes
    names: list[str]
    vocab: dict[str, list[str]]
    ranges: dict[str, tuple[float, float]]
    golden: dict[str, Any]
    kind: str = flavors.BOOSTER
    task: str = "binary"
    engine: str = "booster"  # a booster's: "compiled" (lleaves) or "booster"

    @property
    def key(self) -> str:
        return f"{self.model.name}/{self.model.version}"


def load_scorer(model: registry.ResolvedModel, spec: ModelSpec) -> Scorer:
    """The model (booster or pyfunc), vocabulary, training ranges and golden sample of a registered version."""
    profile = registry.load_json_artifact(model, PROFILE_ARTIFACT)
    ranges = {c: (v["min"], v["max"]) for c, v in profile["numeric"].items() if v.get("n")}
    golden = registry.load_json_artifact(model, GOLDEN_ARTIFACT)
    files = flavors.scoring_model(model.uri, spec)
    vocab = registry.load_json_artifact(model, VOCABULARY_ARTIFACT) if files.kind == flavors.BOOSTER else {}
    return Scorer(model, files.payload, files.names, vocab, ranges, golden, files.kind, spec.task)


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


def check_signature(df: DataFrame, scorer: Scorer, spec: ModelSpec) -> None:
    """The input has every model feature, numeric where the model wants a number, text for a category."""
    types = {f.name: f.dataType for f in df.schema.fields}
    categorical = set(scorer.vocab) if scorer.kind == flavors.BOOSTER else set(spec.features.categorical)
    missing = [n for n in scorer.names if n not in types]
    wrong = [f"{n} is {types[n].simpleString()}, the model needs "
             f"{'a string category' if n in categorical else 'a number'}"
             for n in scorer.names if n in types and
             (not isinstance(types[n], T.StringType) if n in categorical else not isinstance(types[n], NUMERIC_TYPES))]
    if missing or wrong:
        raise ContractViolation(f"model {spec.name}: input does not match {scorer.model.uri}'s signature: "
                                + "; ".join(([f"missing column(s) {', '.join(missing)}"] if missing else []) + wrong)
                                + f". The model was trained on them: restore them in {spec.table} upstream, or retrain "
                                f"it without them (params.yaml models.{spec.name}.features)")


def ood_bounds(scorer: Scorer) -> list[tuple[str, float, float]]:
    """(feature, low, high) of each numeric feature with a training range: what `ood_features` counts against."""
    return [(c, float(lo), float(hi)) for c, (lo, hi) in scorer.ranges.items() if c in scorer.names]


def predict_frame(df: DataFrame, key: str, scorers: list[Scorer], top_k: int, batch_rows: int,
                  categorical: tuple[str, ...] = (), compiled_dir: str | None = None) -> DataFrame:
    """(key, ood_features, score_0[, score_1][, top_features]) for every row of df, in one pass."""
    spark = df.sparkSession
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_rows))
    boosters = [s for s in scorers if s.kind == flavors.BOOSTER]
    first = boosters[0] if boosters else scorers[0]
    for s in boosters[1:]:
        if s.names != first.names or s.vocab != first.vocab:
            # another encoding: score it in its own pass rather than feed it the wrong matrix
            raise ModelNotFound(f"{s.model.uri} encodes features differently from {first.model.uri}")
    # the model strings (boosters) and saved folders (pyfunc models) travel inside the function, which
    # Spark ships to the workers once per task (pickled, in both Spark modes); a worker builds each
    # model once and keeps it (predict.booster, predict.pyfunc)
    plan = [predict.Plan(s.key, s.kind, s.payload, s.names, s.task, s.engine, compiled_dir) for s in scorers]
    width, names = (len(first.names), first.names) if boosters else (0, [])
    bounds = ood_bounds(first)
    # a pyfunc-only pass counts out-of-range values on its raw columns: the bounded ones travel too
    raw = sorted({n for s in scorers if s.kind == flavors.PYFUNC for n in s.names}
                 | (set() if boosters else {c for c, _, _ in bounds}))
    key_type = df.schema[key].dataType
    fields = [T.StructField("key", key_type), T.StructField("ood_features", T.IntegerType())]
    fields += [T.StructField(f"score_{i}", T.DoubleType()) for i in range(len(scorers))]
    if top_k:
        fields.append(T.StructField("top_features", T.ArrayType(T.StructType([
            T.StructField("feature", T.StringType()), T.StructField("contribution", T.DoubleType())]))))
    matrix = [model_matrix(names, first.vocab).alias("x")] if boosters else []
    columns = [F.col(c).cast("string" if c in categorical else "double").alias(c) for c in raw]
    inputs = df.select(F.col(key).alias("key"), *matrix, *columns)
    return inputs.mapInArrow(lambda it: predict.score_batches(it, plan, width, names, top_k, bounds),
                             T.StructType(fields))


def lineage_columns(scores: DataFrame, index: int, key: str, scorer: Scorer, run_id: str, scored_at: datetime,
                    with_top: bool) -> DataFrame:
    """One model's scores (`score_<index>`) with its lineage on every row."""
    m = scorer.model
    return _served(scores, key, run_id, scored_at, F.col(f"score_{index}"), F.lit(m.name), F.lit(m.version),
                   F.lit(m.alias).cast("string"), F.lit(m.reference), F.lit(m.run_id),
                   ["top_features"] if with_top else [])


def experiment_columns(scores: DataFrame, state: ExperimentState, key: str, arms: list[Scorer], run_id: str,
                       scored_at: datetime, not_served: Sequence[int] = ()) -> DataFrame:
    """The served score of each row (its arm's), with the arm, version and experiment, and every arm's score
    beside it (`arm_scores`: version -> score), so arms can be compared on the same rows. The rows of an arm in
    `not_served` are served by the control (arm 0)."""
    d = state.design
    arm = F.col("arm")
    versions = F.array(*[F.lit(s.model.version) for s in arms])
    served = F.array(*[F.col(f"score_{i}") for i in range(len(arms))])
    assigned = experiments.arm_column(state, experiments.bucket_column(d.salt, F.col("key")))
    if not_served:
        assigned = F.when(assigned.isin(*not_served), F.lit(0)).otherwise(assigned)
    return _served(scores.withColumn("arm", assigned), key, run_id, scored_at, F.element_at(served, arm + 1),
                   F.lit(arms[0].model.name), F.element_at(versions, arm + 1), F.lit("experiment"),
                   F.concat(F.lit(f"experiment {d.id} arm "), arm.cast("string")),
                   F.element_at(F.array(*[F.lit(s.model.run_id) for s in arms]), arm + 1),
                   [F.lit(d.id).alias("experiment_id"), arm, F.map_from_arrays(versions, served).alias("arm_scores")])


def _served(scores: DataFrame, key: str, run_id: str, scored_at: datetime, score: Column, name: Column,
            version: Column, alias: Column, reference: Column, model_run_id: Column,
            extra: Sequence[Column | str]) -> DataFrame:
    """The columns of `scores` and `scores_shadow`: the key, the score and its lineage, then `extra`."""
    return scores.select(
        F.col("key").alias(key),
        score.alias("score"),
        name.alias("model_name"),
        version.alias("model_version"),
        alias.alias("model_alias"),
        reference.alias("model_reference"),
        model_run_id.alias("model_run_id"),
        F.lit(run_id).alias("run_id"),
        F.lit(scored_at).cast("timestamp").alias("scored_at"),
        F.lit(lineage.code_version()).alias("code_version"),
        "ood_features",
        *extra,
    )


def _encodes_differently(a: Scorer, b: Scorer) -> bool:
    return a.kind == b.kind == flavors.BOOSTER and (a.names != b.names or a.vocab != b.vocab)


def check_golden(spark, scorer: Scorer, data_key: str, input_schema: T.StructType, tolerance: float,
                 batch_rows: int, categorical: tuple[str, ...], compiled_dir: str | None = None) -> float:
    """Re-score the golden sample through the same Spark path; refuse when scores differ from training's."""
    worst = golden_difference(spark, scorer, data_key, input_schema, batch_rows, categorical, compiled_dir)
    if worst > tolerance:
        raise GoldenSampleMismatch(
            f"{scorer.model.uri} scores its golden sample differently here than in training (largest difference "
            f"{worst:.3g} > {tolerance:g}): the scoring environment (LightGBM, numpy, encoding) differs from the "
            "training one. Align library versions or retrain")
    return worst


def golden_difference(spark, scorer: Scorer, data_key: str, input_schema: T.StructType, batch_rows: int,
                      categorical: tuple[str, ...], compiled_dir: str | None = None) -> float:
    """The largest difference between the golden sample's scores here and the ones training recorded.

    The sample's rows take the types of the day's input (the table they were drawn from)."""
    golden = scorer.golden
    # rows are matched by their position in the sample: a key can be in it twice (from two holdout days)
    schema = T.StructType([T.StructField("__golden_row", T.LongType(), False),
                           *[input_schema[c] for c in golden["columns"] if c != data_key]])
    rows = [(i, *(_typed(r.get(c), schema[c].dataType) for c in golden["columns"] if c != data_key))
            for i, r in enumerate(golden["rows"])]
    df = spark.createDataFrame(rows, schema)
    got = {r["key"]: r["score_0"] for r in predict_frame(df, "__golden_row", [scorer], 0, batch_rows,
                                                         categorical, compiled_dir).collect()}
    return max(abs(got[i] - v) for i, v in enumerate(golden["scores"]))


def checked_engine(spark, scorer: Scorer, spec: ModelSpec, input_schema: T.StructType, compiled_dir: str) -> Scorer:
    """The scorer with the engine it will score with, its golden sample checked through that engine.

    A booster is scored by its compiled predictor when `scoring.compiled` is on and lleaves can
    compile it; should the compiled predictor's golden-sample scores differ from the booster's
    (recorded at training) by more than the tolerance, it is scored by the booster instead, with a
    warning. Any other mismatch is refused (GoldenSampleMismatch)."""
    tolerance, batch_rows = spec.scoring.golden_tolerance, spec.scoring.arrow_batch_rows
    if scorer.kind == flavors.BOOSTER and spec.scoring.compiled:
        reason = compiled.unsupported(str(scorer.payload))
        if reason is None:
            candidate = replace(scorer, engine="compiled")
            worst = golden_difference(spark, candidate, spec.key, input_schema, batch_rows,
                                      spec.features.categorical, compiled_dir)
            if worst <= tolerance:
                log.info("golden sample of %s, compiled: largest difference %.3g", scorer.model.uri, worst)
                return candidate
            log.warning("%s: its compiled predictor differs from the booster on the golden sample by %.3g "
                        "(> scoring.golden_tolerance %g); scoring with the booster", scorer.model.uri, worst, tolerance)
        else:
            log.warning("%s cannot be compiled (%s); scoring with the booster", scorer.model.uri, reason)
    worst = check_golden(spark, scorer, spec.key, input_schema, tolerance, batch_rows, spec.features.categorical,
                         compiled_dir)
    log.info("golden sample of %s: largest difference %.3g", scorer.model.uri, worst)
    return scorer


def _typed(value: Any, data_type: T.DataType) -> Any:
    """A JSON value as the column's type wants it (JSON has one number type)."""
    if value is None:
        return None
    if isinstance(data_type, (T.FloatType, T.DoubleType)):
        return float(value)
    if isinstance(data_type, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)) and float(value).is_integer():
        return int(value)
    return value


def resolve_models(client, spec: ModelSpec, day: date, model_ref: str | None, shadow: bool,
                   as_of: date | None = None) -> tuple[registry.ResolvedModel, registry.ResolvedModel | None]:
    """The model to score with (default: the champion on the scored day) and the shadow challenger, once."""
    name = spec.name
    if model_ref:
        model = registry.resolve(client, model_ref, as_of=as_of)
    else:
        model = registry.resolve(client, f"models:/{name}@{registry.CHAMPION}", as_of=as_of or day)
    challenger = None
    if shadow and not model_ref:
        try:
            challenger = registry.resolve(client, f"models:/{name}@{registry.CHALLENGER}", as_of=as_of or day)
        except ModelNotFound:
            challenger = None
        if challenger is not None and challenger.version == model.version:
            challenger = None
    return model, challenger


def run(spec: ModelSpec, source: Lake, sink: Lake, env: Env, day: date, model_ref: str | None = None,
        as_of: date | None = None, shadow: bool | None = None) -> dict[str, Any]:
    """Score one day from `source` into `sink` (the same lake, or a retro-test namespace)."""
    client = registry.client(env.mlflow_tracking_uri)
    # an experiment running on the day (of the model's history, unless a model is pinned) serves each row one
    # of its arms, and every arm scores every row: the arms are the comparison, no shadow is scored then
    experiment = None if model_ref or as_of else experiments.state_on(client, spec.name, day)
    if experiment is None:
        model, challenger = resolve_models(client, spec, day, model_ref,
                                           spec.scoring.shadow if shadow is None else shadow, as_of)
        arms = [model]
        log.info("scoring %s with %s (%s)%s", day, model.uri, model.reference,
                 f", shadow {challenger.uri}" if challenger else "")
    else:
        arms = [registry.resolve(client, f"models:/{spec.name}/{v}") for v in experiment.design.versions]
        model, challenger = arms[0], None
        log.info("scoring %s in experiment %s: %s with shares %s", day, experiment.design.id,
                 ", ".join(m.uri for m in arms), list(experiment.shares))
    features_contract = load_contract(spec.table)
    for m in arms:
        check_contract_version(m, features_contract, spec.validation)
    n_arms = len(arms)
    scorers = [load_scorer(m, spec) for m in arms] + ([load_scorer(challenger, spec)] if challenger else [])
    for s in scorers[1:n_arms]:
        if experiment is not None and _encodes_differently(scorers[0], s):
            raise ModelNotFound(f"experiment {experiment.design.id}: {s.model.uri} encodes features differently "
                                f"from {model.uri}; the arms of an experiment are scored in one pass and must share "
                                "the encoding (retrain them on the same vocabulary, or stop the experiment)")
    if challenger and _encodes_differently(scorers[0], scorers[-1]):
        log.warning("%s encodes features differently; it is not shadow-scored", challenger.uri)
        scorers, challenger = scorers[:n_arms], None
    if spec.scoring.contributions_top_k and scorers[0].kind != flavors.BOOSTER:
        raise ConfigError(f"model {spec.name}: scoring.contributions_top_k needs a tree booster (LightGBM); "
                          f"{scorers[0].model.uri} is an MLflow pyfunc model: set it to 0 for this model")
    spark = source.spark
    batch_rows = spec.scoring.arrow_batch_rows
    try:
        features = source.read_partition(spec.table, day)
    except PartitionNotFound as exc:
        raise PartitionNotFound(f"model {spec.name}: {exc} (its feature table, params.yaml models.{spec.name}.table)"
                                ) from None
    require_columns(spec, features, spec.table, (spec.key,))
    for s in scorers:
        check_signature(features, s, spec)
    compiled_dir = str(env.compiled_dir)
    scorers = [checked_engine(spark, s, spec, features.schema, compiled_dir) for s in scorers]
    _size_partitions(source, spec.table, day)

    run_id = lineage.run_id()
    checked = validate_frame(features, features_contract, spec.validation, f"{spec.table} dt={day}", spec.key,
                             persist=True)
    input_fingerprint = checksum(checked.annotated, [c for c in features.columns])
    published = datadocs.publish(env, checked.record(run_id), f"{sink.namespace}.{spec.table}", day.isoformat(),
                                 "score", html=False)
    sink.write_partition(quarantine_frame(checked.annotated, spec.key, run_id), "quarantine", day,
                         {"input_rows": checked.report.rows, "quarantined_rows": checked.report.quarantined,
                          "contract": features_contract.fingerprint}, by={"source_table": spec.table})
    raise_on_failure(checked.report, checked.text)

    # an experiment's rows would carry the control's contributions whichever arm served them: none then
    top_k = spec.scoring.contributions_top_k if experiment is None else 0
    scored = keep(predict_frame(checked.passed, spec.key, scorers, top_k, batch_rows, spec.features.categorical,
                                compiled_dir))
    scored_at = datetime.now(UTC)
    scores_contract = load_contract(spec.scores_contract)
    broken: list[int] = []
    if experiment is None:
        outputs = {"scores": lineage_columns(scored, 0, spec.key, scorers[0], run_id, scored_at, bool(top_k))}
    else:
        # guardrail: a challenger whose own scores break the scores contract serves none of its rows (the
        # control serves them) and is stopped from the next day
        for i in range(1, n_arms):
            own = validate_frame(lineage_columns(scored, i, spec.key, scorers[i], run_id, scored_at, False),
                                 scores_contract, spec.validation, f"{scorers[i].model.uri} dt={day}", spec.key)
            if own.report.quarantined or own.report.verdict == "fail":
                log.warning("experiment %s: %s breaks expectations/%s.json; the control serves its rows:\n%s",
                            experiment.design.id, scorers[i].model.uri, spec.scores_contract, own.text)
                broken.append(i)
        outputs = {"scores": experiment_columns(scored, experiment, spec.key, scorers[:n_arms], run_id, scored_at,
                                                broken)}
    if challenger:
        outputs["scores_shadow"] = lineage_columns(scored, n_arms, spec.key, scorers[n_arms], run_id, scored_at,
                                                   False)
    counts = {"input_rows": checked.report.rows, "quarantined_rows": checked.report.quarantined}
    for table, frame in outputs.items():
        output = validate_frame(frame, scores_contract, spec.validation, f"{table} dt={day}", spec.key)
        if output.report.quarantined or output.report.verdict == "fail":
            raise ContractViolation(f"{table} output breaks expectations/{spec.scores_contract}.json; nothing was written:\n"
                                    f"{output.text}")
        counts[f"{table}_rows"] = output.report.rows
    if counts["scores_rows"] + counts["quarantined_rows"] != counts["input_rows"]:
        raise ContractViolation(f"scoring {day}: counts do not reconcile: {counts}")
    served_by = {"experiment": experiment.design.id, "arms": [s.model.uri for s in scorers[:n_arms]],
                 "shares": list(experiment.shares), "not_served": [scorers[i].model.uri for i in broken]} \
        if experiment else {}
    for table, frame in outputs.items():
        scorer = scorers[0] if table == "scores" else scorers[n_arms]
        sink.write_partition(frame, table, day, {
            "input_fingerprint": input_fingerprint, "input_table": f"{source.namespace}.{spec.table}",
            "model_uri": scorer.model.uri, "model_version": scorer.model.version,
            "model_reference": scorer.model.reference, "model_run_id": scorer.model.run_id,
            "contract": features_contract.fingerprint, **counts, **(served_by if table == "scores" else {})},
            by=spec.partition)
    if broken and experiment is not None:
        experiments.stop_arms(spec, env, experiment, broken, day, "scores contract",
                              f"broke expectations/{spec.scores_contract}.json")
    scored.unpersist()
    checked.annotated.unpersist()
    result = {"date": day.isoformat(), "model": model.uri, "model_reference": model.reference, "run_id": run_id,
              "shadow": challenger.uri if challenger else None, "validation": published["record"], **counts,
              **served_by}
    log.info("scored %s: %s", day, counts)
    return result


def _size_partitions(lake: Lake, table: str, day: date) -> None:
    """Split the input so every core gets work: about four input partitions per core."""
    location = lake.location(table, day)
    if not location:
        return
    cores = spark_cores(lake.spark)
    target = max(1 << 20, lake.fs.total_size(location) // max(1, 4 * cores))
    lake.spark.conf.set("spark.sql.files.maxPartitionBytes", str(target))
    lake.spark.conf.set("spark.sql.files.openCostInBytes", str(min(target, 4 << 20)))
