"""Benchmark: the scoring pass against the model's own predict and against mlflow.pyfunc.spark_udf.

    make bench            (BENCH_ROWS=5000000 by default)

One day of 5M generated subscribers (15 numeric + 5 categorical = 20 features) is written
as Parquet once; LightGBM models of 200 trees x 31 leaves and of 500 x 63 are trained on
another day. For each, on those same files in this one run:

(a) the stock in-process limit: pyarrow reads the files, the categories are encoded as
    training encodes them, and the booster predicts the numpy matrix on all cores;
(b) mlflow.pyfunc.spark_udf (env_manager="local") on the same columns, encoded in the JVM;
(c) this job's scoring pass, `score.predict_frame` plus the lineage columns, as
    `batchloop score` runs it (input partitions sized by the job): the compiled predictor
    (jobs.models.compiled), compiled first as registration does, its time reported.
(b) and (c) end in Spark's `noop` sink, so no output format is measured. Medians after a
warm-up (of 3 for 200 x 31, of 1 for the slower 500 x 63); peak resident memory of this
process and its children (Spark's JVM and Python workers). All three must give the same
scores: checked before timing, and (c) against the booster's own on every row of a
100,000-row sample (within 1e-12).

The generic-model row does the same for a scikit-learn pipeline (the spec's sklearn
trainer: imputation, scaling, one-hot categories, HistGradientBoostingClassifier) on the
same files: (a) its own predict_proba in this process on all cores, (b) spark_udf of the
MLflow model, (c) batchloop's load-once pyfunc path (the saved model unpacked once per
Python worker, pandas batches of the raw columns).
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))

from measure import PeakMemory, timed, write  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from jobs.config import Env, load_params  # noqa: E402
from jobs.demo import generate
from jobs.io import registry
from jobs.io.lake import Lake  # noqa: E402
from jobs.io.spark import build_session  # noqa: E402
from jobs.models import compiled, flavors  # noqa: E402
from jobs.models.encoding import encode_pandas, encode_spark, learn_vocabulary  # noqa: E402
from jobs.steps import score

DAY, TRAIN_DAY = date(2026, 1, 20), date(2026, 1, 19)
TREES, LEAVES = 200, 31


def model_and_scorer(spec, generator, cores: int, trees: int, leaves: int):
    """A trees x leaves LightGBM on one generated day, and the Scorer the job would load for it (compiled)."""
    d = spec
    day = generate.generate_day(generator, d, TRAIN_DAY, 300_000, generator.seed)
    vocab = learn_vocabulary(day.features, d.features.categorical)
    X = encode_pandas(day.features, d.features.numeric, vocab)
    hp = {**spec.trainer.params, "num_leaves": leaves, "min_data_in_leaf": 20, "num_boost_round": trees,
          "num_threads": cores}
    booster = flavors.booster_fit(X, day.labels[d.label.column].to_numpy(), hp, d.features.categorical)
    assert booster.num_trees() == trees
    ranges = {c: (float(X[c].min()), float(X[c].max())) for c in d.features.numeric}
    model = registry.ResolvedModel("bench", f"{trees}x{leaves}", "champion", "bench-run",
                                   reference="models:/bench@champion")
    return booster, vocab, score.Scorer(model, booster.model_to_string(), list(booster.feature_name()), vocab,
                                        ranges, {}, engine="compiled")


def limit(files: list[str], columns: list[str], spec, vocab, booster, cores: int) -> np.ndarray:
    """(a): the files into numpy in this process, then the model's own predict on all cores."""
    frame = pq.ParquetDataset(files).read(columns=columns).to_pandas()
    X = np.ascontiguousarray(encode_pandas(frame, spec.features.numeric, vocab).to_numpy())
    return booster.predict(X, num_threads=cores)


def tree_model(spec, generator, files, columns, df, rows, cores, trees, leaves, repeats, compiled_dir) -> dict:
    """(a), (b), (c) for a trees x leaves LightGBM on the same files; compile time; exactness on 100,000 rows."""
    import mlflow
    from mlflow.models import infer_signature

    d = spec
    booster, vocab, scorer = model_and_scorer(spec, generator, cores, trees, leaves)
    # the compile, as registration pays it (this process, the host cache the workers load from)
    built = compiled.build(str(scorer.payload), compiled_dir)
    compile_s = built.compile_seconds
    print(f"LightGBM {trees} trees x {leaves} leaves: compiled in {compile_s:.1f} s ({compiled.engine()})")

    # (b) the MLflow way: the model logged with the lightgbm flavour, a pandas UDF per batch
    encoded = encode_spark(df, d.key, d.features.numeric, vocab)
    sample = encoded.limit(100).toPandas().drop(columns=[d.key])
    with tempfile.TemporaryDirectory(prefix="batchloop-bench-model-") as tmp:
        model_dir = f"{tmp}/model"
        mlflow.lightgbm.save_model(booster, model_dir, signature=infer_signature(sample, booster.predict(sample)))
        udf = mlflow.pyfunc.spark_udf(df.sparkSession, model_dir, result_type="double", env_manager="local")
        via_udf = encoded.select(d.key, udf(*[F.col(c) for c in scorer.names]).alias("score"))

        # (c) the job's pass, with the lineage columns it writes: the compiled predictor in every worker
        via_job = score.lineage_columns(
            score.predict_frame(df, d.key, [scorer], 0, spec.scoring.arrow_batch_rows, (), compiled_dir),
            0, d.key, scorer, "bench-run", datetime.now(UTC), False)

        # every row of a 100,000-row sample: the job's scores against the booster's own
        first = pq.ParquetDataset(files).read(columns=columns).slice(0, 100_000).to_pandas()
        own = booster.predict(np.ascontiguousarray(encode_pandas(first, d.features.numeric, vocab).to_numpy()),
                              num_threads=cores)
        keys = first[d.key].to_numpy()
        wanted = df.sparkSession.createDataFrame(first[[d.key]])
        got = via_job.join(wanted, d.key).select(d.key, "score").toPandas()
        got = got.set_index(d.key).loc[keys, "score"].to_numpy()
        largest = float(np.max(np.abs(got - own)))
        assert got.size == 100_000 and largest <= 1e-12, largest

        # the same scores from all three, before anything is timed
        expected = limit(files, columns, spec, vocab, booster, cores)
        for name, out in (("spark_udf", via_udf), ("job", via_job)):
            got_sum = out.agg(F.count("score").alias("n"), F.sum("score").alias("s")).first()
            assert got_sum["n"] == rows and abs(got_sum["s"] - expected.sum()) < 1e-6 * rows, (name, got_sum)

        figures: dict = {"trees": trees, "leaves": leaves, "compile_s": round(compile_s, 2),
                         "largest_difference_on_100000_rows": largest}
        for name, run in (
            ("limit", lambda: limit(files, columns, spec, vocab, booster, cores)),
            ("spark_udf", lambda: via_udf.write.format("noop").mode("overwrite").save()),
            ("job", lambda: via_job.write.format("noop").mode("overwrite").save()),
        ):
            with PeakMemory() as peak:
                median, runs = timed(run, repeats)
            figures[name] = {"median_s": round(median, 3), "runs_s": [round(x, 3) for x in runs],
                             "rows_per_s": round(rows / median), "peak_rss_gib": peak.gib}
    # the pure predicts, for reference: the matrix already in memory, one thread
    frame = pq.ParquetDataset(files).read(columns=columns).slice(0, 500_000).to_pandas()
    X = np.ascontiguousarray(encode_pandas(frame, d.features.numeric, vocab).to_numpy())
    booster_s, _ = timed(lambda: booster.predict(X, num_threads=1), 1)
    compiled_s, _ = timed(lambda: built.predict(X), 1)
    a, b, c = (figures[k]["rows_per_s"] for k in ("limit", "spark_udf", "job"))
    figures.update({
        "one_thread_rows_per_s": {"booster": round(len(X) / booster_s), "compiled": round(len(X) / compiled_s)},
        "job_vs_limit": round(c / a, 3), "goal_job_vs_limit_at_least": 2.0,
        "job_vs_spark_udf": round(c / b, 3), "goal_job_vs_spark_udf_at_least": 3.0})
    return figures


def main() -> None:
    rows = int(os.environ.get("BENCH_ROWS", "5000000"))
    cores = os.cpu_count() or 1
    params = load_params()
    spec, generator = params.model("churn"), params.generator
    d = spec
    with tempfile.TemporaryDirectory(prefix="batchloop-bench-") as tmp:
        env = Env(_env_file=None, state_dir=Path(tmp), lake_format="parquet", lake_root=f"{tmp}/lake",
                  spark_driver_memory="4g")
        spark = build_session(env, "bench-scoring")
        lake = Lake(spark, env)
        generate.run(generator, d, lake, DAY, 1, rows, generator.seed)
        files = sorted(str(p) for p in Path(lake.location("features", DAY).replace("file:", "")).rglob("*.parquet"))
        columns = [d.key, *d.features.numeric, *d.features.categorical]
        score._size_partitions(lake, "features", DAY)
        df = lake.read_partition("features", DAY)
        print(f"{rows:,} rows x {len(d.features.all)} features in {len(files)} Parquet files, "
              f"{df.rdd.getNumPartitions()} input partitions")
        models = [tree_model(spec, generator, files, columns, df, rows, cores, trees, leaves, repeats,
                             str(env.compiled_dir)) for trees, leaves, repeats in ((TREES, LEAVES, 3), (500, 63, 1))]
        generic_figures = generic(spec, generator, files, columns, df, rows, cores)
        spark.stop()

    main_model = models[0]
    result = {"rows": rows, "features": len(d.features.all), "trees": TREES, "leaves": LEAVES,
              **{k: v for k, v in main_model.items() if k not in ("trees", "leaves")},
              "larger_model": models[1],
              "spark": f"local[{cores}], {spec.scoring.arrow_batch_rows} rows per Arrow batch"}
    result["generic"] = generic_figures
    path = write("scoring", result)
    print(f"\nscoring benchmark: {rows:,} rows (medians after a warm-up: of 3 for 200 x 31, of 1 for 500 x 63)")
    for m in models:
        print(f"\nLightGBM {m['trees']} trees x {m['leaves']} leaves, compiled in {m['compile_s']:.1f} s; largest "
              f"difference from the booster on 100,000 rows {m['largest_difference_on_100000_rows']:.2g}")
        print(f"  {'':44} {'seconds':>8} {'rows/s':>12} {'peak RSS':>9}")
        for key, label in (("limit", "(a) booster.predict in-process, all cores"),
                           ("spark_udf", "(b) mlflow.pyfunc.spark_udf, env local"),
                           ("job", "(c) batchloop scoring pass (compiled)")):
            f = m[key]
            print(f"  {label:44} {f['median_s']:8.2f} {f['rows_per_s']:12,} {f['peak_rss_gib']:7.2f} GiB")
        t = m["one_thread_rows_per_s"]
        print(f"  one thread on a matrix in memory: booster {t['booster']:,} rows/s, compiled {t['compiled']:,} rows/s")
        print(f"  (c)/(a) = {m['job_vs_limit']:.2f}  (goal >= 2.0)      (c)/(b) = {m['job_vs_spark_udf']:.2f}  "
              "(goal >= 3.0)")
    g = result["generic"]
    print(f"\ngeneric model: {g['model']}")
    for key, label in (("limit", "(a) pipeline.predict_proba in-process"), ("spark_udf", "(b) mlflow.pyfunc.spark_udf"),
                       ("job", "(c) batchloop load-once pyfunc path")):
        f = g[key]
        print(f"  {label:44} {f['median_s']:8.2f} {f['rows_per_s']:12,} {f['peak_rss_gib']:7.2f} GiB")
    print(f"  (c)/(a) = {g['job_vs_limit']:.2f}  (goal >= 0.85)      (c)/(b) = {g['job_vs_spark_udf']:.2f}  "
          "(goal >= 1.0)")
    print(f"written to {path}")


def generic(spec, generator, files: list[str], columns: list[str], df, rows: int, cores: int) -> dict:
    """(a), (b), (c) for a scikit-learn pipeline built from the spec, on the same files."""
    import io
    import tarfile

    import mlflow.sklearn
    from pyspark.sql import types as T

    sk = spec.model_copy(update={"trainer": spec.trainer.model_copy(update={
        "name": "sklearn", "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
        "params": {"max_iter": 200, "max_leaf_nodes": 31, "learning_rate": 0.05, "random_state": 7}})})
    day = generate.generate_day(generator, sk, TRAIN_DAY, 300_000, generator.seed)
    train = day.features.merge(day.labels[[sk.key, sk.label.column]], on=sk.key)
    fitted = flavors.fit(sk, train)
    pipeline = fitted.original
    with tempfile.TemporaryDirectory(prefix="batchloop-bench-generic-") as tmp:
        model_dir = f"{tmp}/model"
        example = flavors.raw_features(train.head(100), sk)
        mlflow.sklearn.save_model(pipeline, model_dir, input_example=example, pyfunc_predict_fn="predict_proba",
                                  serialization_format=flavors.SERIALIZATION,
                                  signature=mlflow.models.infer_signature(example, pipeline.predict_proba(example)))
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(model_dir, arcname=".")
        model = registry.ResolvedModel("bench_generic", "1", "champion", "bench-run",
                                       reference="models:/bench_generic@champion")
        scorer = score.Scorer(model, buffer.getvalue(), list(sk.features.all), {}, {}, {}, flavors.PYFUNC, "binary")

        def in_process() -> np.ndarray:
            frame = pq.ParquetDataset(files).read(columns=columns).to_pandas()
            return pipeline.predict_proba(flavors.raw_features(frame, sk))[:, 1]

        typed = df.select(sk.key, *[F.col(c).cast("string" if c in sk.features.categorical else "double").alias(c)
                                    for c in sk.features.all])
        udf = mlflow.pyfunc.spark_udf(df.sparkSession, model_dir, result_type=T.ArrayType(T.DoubleType()),
                                      env_manager="local")
        via_udf = typed.select(sk.key, udf(*[F.col(c) for c in sk.features.all])[1].alias("score"))
        via_job = score.predict_frame(df, sk.key, [scorer], 0, sk.scoring.arrow_batch_rows,
                                      sk.features.categorical).select(F.col("score_0").alias("score"))
        expected = in_process()
        for name, out in (("spark_udf", via_udf), ("job", via_job)):
            got = out.agg(F.count("score").alias("n"), F.sum("score").alias("s")).first()
            assert got["n"] == rows and abs(got["s"] - expected.sum()) < 1e-6 * rows, (name, got, expected.sum())
        figures: dict = {"model": f"scikit-learn Pipeline (impute, scale, one-hot) + HistGradientBoostingClassifier "
                                  f"200 x 31, trained on 300,000 rows; {rows:,} rows scored"}
        for name, run in (("limit", in_process),
                          ("spark_udf", lambda: via_udf.write.format("noop").mode("overwrite").save()),
                          ("job", lambda: via_job.write.format("noop").mode("overwrite").save())):
            with PeakMemory() as peak:
                median, runs = timed(run)
            figures[name] = {"median_s": round(median, 3), "runs_s": [round(x, 3) for x in runs],
                             "rows_per_s": round(rows / median), "peak_rss_gib": peak.gib}
    a, b, c = (figures[k]["rows_per_s"] for k in ("limit", "spark_udf", "job"))
    return {**figures, "job_vs_limit": round(c / a, 3), "goal_job_vs_limit_at_least": 0.85,
            "job_vs_spark_udf": round(c / b, 3), "goal_job_vs_spark_udf_at_least": 1.0}


if __name__ == "__main__":
    main()
