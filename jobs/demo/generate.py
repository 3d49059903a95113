"""Synthetic upstream data: a telecom's daily subscriber snapshots and the outcomes that follow them.

Stands in for the upstream ETL in the demo, the tests and the benchmarks. It writes the
tables below (the ones the declared models read): `features` (the subscriber snapshot)
with `labels` (churned within 30 days: the churn model's), and `usage` (the usage part
of the same snapshot) with `spend_labels` (the next 30 days' spend: the spend model's).
A day's data depends only on (seed, day, rows): the same call always gives the same
rows, whatever range it is part of. Scheduled events (params.yaml `generator.events`)
are dated absolutely.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
from pyspark.sql.types import DateType, DoubleType, IntegerType, LongType, StringType, StructField, StructType

from jobs.config import GeneratorParams, ModelSpec
from jobs.errors import ConfigError

log = logging.getLogger(__name__)

CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "tariff_plan": (("basic", "standard", "premium", "family"), (0.35, 0.35, 0.15, 0.15)),
    "region": (("north", "south", "east", "west", "central"), (0.2, 0.25, 0.2, 0.2, 0.15)),
    "device_type": (("android", "ios", "feature_phone", "tablet"), (0.5, 0.35, 0.1, 0.05)),
    "contract_type": (("monthly", "annual", "two_year"), (0.55, 0.3, 0.15)),
    "payment_method": (("card", "bank_transfer", "cash", "e_wallet"), (0.4, 0.3, 0.15, 0.15)),
}
PLAN_PRICE = {"basic": 25.0, "standard": 45.0, "premium": 80.0, "family": 95.0, "unlimited_5g": 70.0}


@dataclass(frozen=True)
class Day:
    """One generated day: the feature snapshot and the labels that belong to it."""

    features: pd.DataFrame
    labels: pd.DataFrame


def _rng(seed: int, *parts: object) -> np.random.Generator:
    salt = zlib.crc32(":".join(str(p) for p in parts).encode())
    return np.random.default_rng([seed, salt])


CHUNK_ROWS = 50_000
INTEGER_FEATURES = frozenset({"sms_count", "dropped_calls", "support_calls", "late_payments",
                              "days_since_topup", "num_lines", "app_sessions"})
KEY = "subscriber_id"
# the tables the generator writes: feature tables (numeric, categorical columns), label tables (column, type)
FEATURE_TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "features": (("tenure_months", "monthly_charges", "total_charges", "data_usage_gb", "voice_minutes", "sms_count",
                  "dropped_calls", "support_calls", "late_payments", "days_since_topup", "roaming_minutes",
                  "num_lines", "download_mbps", "app_sessions", "complaint_score"),
                 ("tariff_plan", "region", "device_type", "contract_type", "payment_method")),
    "usage": (("tenure_months", "data_usage_gb", "voice_minutes", "sms_count", "roaming_minutes", "num_lines",
               "download_mbps", "app_sessions"),
              ("tariff_plan", "region", "device_type")),
}
LABEL_TABLES: dict[str, tuple[str, str]] = {"labels": ("churned_30d", "int"), "spend_labels": ("spend_next_30d", "double")}
ALL_NUMERIC = tuple(dict.fromkeys(c for numeric, _ in FEATURE_TABLES.values() for c in numeric))
ALL_CATEGORICAL = tuple(dict.fromkeys(c for _, categorical in FEATURE_TABLES.values() for c in categorical))


def _population(seed: int, chunk: int, rows: int) -> pd.DataFrame:
    """Traits that stay with a subscriber across days (subscribers of one id chunk)."""
    rng = _rng(seed, "population", chunk)
    first = chunk * CHUNK_ROWS + 1
    pop = pd.DataFrame({"subscriber_id": np.arange(first, first + rows, dtype=np.int64)})
    for name, (values, probs) in CATEGORIES.items():
        pop[name] = rng.choice(np.array(values, dtype=object), size=rows, p=probs)
    pop["tenure0"] = rng.uniform(0, 72, rows)
    pop["usage_level"] = rng.gamma(2.0, 1.0, rows)
    pop["patience"] = rng.normal(0, 1, rows)
    pop["lines"] = 1 + rng.poisson(0.4, rows)
    # a stable per-subscriber draw, so an event picks the same subscribers every day
    pop["event_draw"] = rng.uniform(0, 1, rows)
    return pop


def _features(pop: pd.DataFrame, day: date, first_day: date, rng: np.random.Generator,
              events) -> pd.DataFrame:
    n = len(pop)
    months = (day - first_day).days / 30.0
    f = pd.DataFrame({"subscriber_id": pop["subscriber_id"].to_numpy()})
    for name in CATEGORIES:
        f[name] = pop[name].to_numpy()
    new_cat = events.new_category
    if new_cat and day >= new_cat.start:
        switched = pop["event_draw"].to_numpy() < new_cat.share
        f.loc[switched, new_cat.feature] = new_cat.value
    usage = pop["usage_level"].to_numpy()
    f["tenure_months"] = np.round(pop["tenure0"].to_numpy() + months, 2)
    price = f["tariff_plan"].map(PLAN_PRICE).to_numpy(dtype=float)
    f["monthly_charges"] = np.round(price * rng.lognormal(0, 0.12, n) + 5 * pop["lines"], 2)
    shift = events.covariate_shift
    if shift and day >= shift.start:
        f[shift.feature] = np.round(f[shift.feature].to_numpy() * shift.factor, 2)
    f["total_charges"] = np.round(f["monthly_charges"] * np.maximum(f["tenure_months"], 1), 2)
    f["data_usage_gb"] = np.round(usage * rng.gamma(2.0, 1.5, n), 3)
    f["voice_minutes"] = np.round(rng.gamma(2.0, 60.0, n) * (0.5 + usage / 4), 1)
    f["sms_count"] = rng.poisson(8 + 4 * usage)
    f["dropped_calls"] = rng.poisson(np.where(f["region"] == "central", 0.6, 1.4))
    f["support_calls"] = rng.poisson(np.exp(-0.6 + 0.5 * np.tanh(-pop["patience"].to_numpy())))
    f["late_payments"] = rng.poisson(np.where(f["payment_method"] == "cash", 0.8, 0.25))
    f["days_since_topup"] = rng.exponential(12.0, n).astype(np.int64)
    f["roaming_minutes"] = np.round(np.where(rng.uniform(0, 1, n) < 0.15, rng.gamma(1.5, 30, n), 0), 1)
    f["num_lines"] = pop["lines"].to_numpy().astype(np.int64)
    speed = np.where(f["device_type"] == "feature_phone", 2.0, 25.0)
    f["download_mbps"] = np.round(speed * rng.lognormal(0, 0.5, n), 2)
    f["app_sessions"] = rng.poisson(3 + 6 * usage * (f["device_type"] != "feature_phone"))
    f["complaint_score"] = np.round(10 * rng.beta(1.5, 6 - np.tanh(-pop["patience"].to_numpy()), n), 2)
    return f


def _churn_probability(f: pd.DataFrame, day: date, events) -> np.ndarray:
    """The true churn probability: what a good model can learn, short of the noise."""
    logit = (
        -2.4
        + 0.45 * f["support_calls"]
        + 0.22 * f["dropped_calls"]
        + 0.35 * f["late_payments"]
        - 0.035 * f["tenure_months"].fillna(24)
        + 1.1 * (f["contract_type"] == "monthly")
        - 0.6 * (f["contract_type"] == "two_year")
        + 0.02 * (f["monthly_charges"] - 55)
        + 0.18 * f["complaint_score"]
        - 0.05 * f["app_sessions"]
        - 0.012 * f["download_mbps"]
    )
    change = events.concept_change
    if change and day >= change.start:
        s = change.strength
        logit = logit + s * (0.25 * f["data_usage_gb"] - 1.0 * (f["contract_type"] == "monthly")
                             + 0.8 * (f["device_type"] == "ios") - 0.5)
    return (1.0 / (1.0 + np.exp(-logit.to_numpy(dtype=float)))).astype(float)


def chunks(rows: int) -> list[tuple[int, int]]:
    """(chunk index, rows in chunk) covering `rows` subscribers."""
    return [(i, min(CHUNK_ROWS, rows - i * CHUNK_ROWS)) for i in range((rows + CHUNK_ROWS - 1) // CHUNK_ROWS)]


def check_tables(spec: ModelSpec) -> None:
    """The model reads tables this generator writes, and only their columns: else one clear error."""
    if spec.table not in FEATURE_TABLES or spec.label.table not in LABEL_TABLES:
        raise ConfigError(f"model {spec.name}: the demo generator writes the feature tables "
                          f"{', '.join(FEATURE_TABLES)} and the label tables {', '.join(LABEL_TABLES)}, not "
                          f"{spec.table} / {spec.label.table}")
    numeric, categorical = FEATURE_TABLES[spec.table]
    unknown = sorted(set(spec.features.all) - set(numeric) - set(categorical))
    if unknown or spec.key != KEY or spec.label.column != LABEL_TABLES[spec.label.table][0]:
        raise ConfigError(f"model {spec.name}: the generated {spec.table} has the key {KEY} and the columns "
                          f"{', '.join(numeric + categorical)}, and {spec.label.table} the label "
                          f"{LABEL_TABLES[spec.label.table][0]}" + (f" (not {', '.join(unknown)})" if unknown else ""))


def generate_day(gen: GeneratorParams, spec: ModelSpec, day: date, rows: int, seed: int) -> Day:
    """The model's feature table and label table of one day, as pandas frames (pure, deterministic)."""
    parts = [generate_chunk(gen, spec.table, spec.label.table, day, c, n, seed, spec.label.delay_days)
             for c, n in chunks(rows)]
    return Day(features=pd.concat([p.features for p in parts], ignore_index=True),
               labels=pd.concat([p.labels for p in parts], ignore_index=True))


def generate_chunk(gen: GeneratorParams, table: str, label_table: str, day: date, chunk: int, rows: int,
                   seed: int, delay_days: int) -> Day:
    """One id chunk of one day of a feature table and a label table."""
    wide = generate_wide(gen, day, chunk, rows, seed)
    numeric, categorical = FEATURE_TABLES[table]
    return Day(features=wide[[KEY, *numeric, *categorical, "dt"]].copy(), labels=labels_of(wide, label_table, delay_days))


def labels_of(wide: pd.DataFrame, label_table: str, delay_days: int) -> pd.DataFrame:
    """A label table's rows from generated rows: the outcome, known `delay_days` after the day."""
    column = LABEL_TABLES[label_table][0]
    return pd.DataFrame({KEY: wide[KEY].to_numpy(), column: wide[column].to_numpy(),
                         "available_at": wide["dt"] + timedelta(days=delay_days), "dt": wide["dt"]})


def generate_wide(gen: GeneratorParams, day: date, chunk: int, rows: int, seed: int) -> pd.DataFrame:
    """One id chunk of one day, every generated column: the unit of parallel generation.

    Every feature table is a choice of these columns (`usage` is part of the same snapshot as
    `features`), every label table one of the outcomes."""
    pop = _population(seed, chunk, rows)
    rng = _rng(seed, "day", day.isoformat(), chunk)
    f = _features(pop, day, gen.first_day, rng, gen.events)
    prob = _churn_probability(f, day, gen.events)
    churned = (rng.uniform(0, 1, rows) < prob).astype(np.int32)
    incident = gen.events.quality_incident
    if incident and day == incident.date:
        hit = rng.uniform(0, 1, rows) < incident.null_share
        f[incident.feature] = f[incident.feature].astype(float).where(~hit)
    wide = f[[KEY, *ALL_NUMERIC, *ALL_CATEGORICAL]].copy()
    wide["churned_30d"] = churned
    wide["spend_next_30d"] = _spend(f, day, gen.events, _rng(seed, "spend", day.isoformat(), chunk))
    wide["dt"] = day
    return wide


def _spend(f: pd.DataFrame, day: date, events, rng: np.random.Generator) -> np.ndarray:
    """What a subscriber spends over the next 30 days: the plan, data and roaming, and noise."""
    spend = (f["monthly_charges"].to_numpy(dtype=float) + 1.8 * f["data_usage_gb"].to_numpy(dtype=float)
             + 0.45 * f["roaming_minutes"].to_numpy(dtype=float) + 3.0 * (f["device_type"] == "ios").to_numpy())
    change = events.concept_change
    if change and day >= change.start:  # heavy data users start paying for a data add-on
        spend = spend + change.strength * 6.0 * np.maximum(f["data_usage_gb"].to_numpy(dtype=float) - 3, 0)
    return np.round(spend * rng.lognormal(0, 0.08, len(f)), 2)


def days_between(start: date, count: int) -> list[date]:
    return [start + timedelta(days=i) for i in range(count)]


def label_days(gen: GeneratorParams, spec: ModelSpec, published: list[date]) -> list[date]:
    """Days whose labels become known on the published days (D + delay), from first_day on."""
    delay = timedelta(days=spec.label.delay_days)
    return [d - delay for d in published if d - delay >= gen.first_day]


def feature_schema(table: str) -> StructType:
    numeric, categorical = FEATURE_TABLES[table]
    fields = [StructField(c, LongType() if c in INTEGER_FEATURES else DoubleType()) for c in numeric]
    return StructType([StructField(KEY, LongType(), False), *fields,
                       *[StructField(c, StringType()) for c in categorical], StructField("dt", DateType(), False)])


def label_schema(table: str) -> StructType:
    column, kind = LABEL_TABLES[table]
    return StructType([StructField(KEY, LongType(), False),
                       StructField(column, IntegerType() if kind == "int" else DoubleType()),
                       StructField("available_at", DateType()), StructField("dt", DateType(), False)])


def wide_schema() -> StructType:
    """Every generated column: the features of every feature table and every outcome."""
    return StructType([StructField(KEY, LongType(), False),
                       *[StructField(c, LongType() if c in INTEGER_FEATURES else DoubleType()) for c in ALL_NUMERIC],
                       *[StructField(c, StringType()) for c in ALL_CATEGORICAL],
                       StructField("churned_30d", IntegerType()), StructField("spend_next_30d", DoubleType()),
                       StructField("dt", DateType(), False)])


def _distributed(lake, gen: GeneratorParams, days: list[date], rows: int, seed: int):
    """Every generated column of the (day, chunk) units, generated in parallel Spark tasks."""
    units = [(d, c, n) for d in days for c, n in chunks(rows)]

    def make(frames):
        for frame in frames:
            for row in frame.itertuples(index=False):
                yield generate_wide(gen, row.day, row.chunk, row.rows, seed)

    seeds = lake.spark.createDataFrame(pd.DataFrame(units, columns=["day", "chunk", "rows"]))
    return seeds.repartition(max(1, len(units))).mapInPandas(make, wide_schema())


def run(gen: GeneratorParams, specs: ModelSpec | list[ModelSpec], lake, start: date, days: int, rows: int,
        seed: int) -> dict[str, int]:
    """Write the models' feature tables for start..start+days-1 and the labels that become known on those days.

    One generation pass: the rows of every day needed (published, or labelled on a published
    day) are generated once and kept, then each table is written from them; a table two
    models read is written once."""
    from pyspark.sql import functions as F

    from jobs.io.spark import keep

    specs = [specs] if isinstance(specs, ModelSpec) else list(specs)
    for spec in specs:
        check_tables(spec)
    published = days_between(start, days)
    feature_tables = list(dict.fromkeys(spec.table for spec in specs))
    label_tables = {}  # label table -> (its delay, the days whose labels become known on the published days)
    for spec in specs:
        label_tables.setdefault(spec.label.table, (spec.label.delay_days, label_days(gen, spec, published)))
    needed = sorted(set(published).union(*(d for _, d in label_tables.values())))
    wide = keep(_distributed(lake, gen, needed, rows, seed))
    source = {"source": f"batchloop generate (seed {seed})"}
    counts = {"feature_days": len(published), "features_rows": 0, "label_rows": 0}
    try:
        for table in feature_tables:
            columns = [f.name for f in feature_schema(table).fields]
            lake.write_partitions(wide.where(F.col("dt").isin(published)).select(*columns), table, source)
            counts["features_rows"] += len(published) * rows
        for table, (delay, labelled) in label_tables.items():
            if not labelled:
                continue
            column = LABEL_TABLES[table][0]
            frame = wide.where(F.col("dt").isin(labelled)).select(
                KEY, column, F.date_add("dt", delay).alias("available_at"), "dt")
            lake.write_partitions(frame, table, source)
            counts["label_rows"] += len(labelled) * rows
    finally:
        wide.unpersist()
    log.info("generated %s", counts)
    return counts
