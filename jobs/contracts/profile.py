"""Bring your own table: profile an existing table over a range of days and write a starting contract and spec.

`batchloop models add NAME --table T --key K ...` measures every column of T (its type,
missing share, quantiles, the values of a text column, whether the key is unique within
each day) in one Spark aggregation per table, and writes, for a person to review:

- expectations/T.json: the columns and their types, the key not null and unique per
  day, a range for each number (the 0.1% and 99.9% quantiles widened by half their
  distance, never below 0 for a column that never was), the value set of each text
  column with at most 50 values, and a not-null rule (`mostly`) for each feature;
- expectations/L.json for the label table, the same way, and expectations/NAME_scores.json
  for what the model will write;
- the model's entry under `models` in params.yaml.

An existing contract is never overwritten: a table that already has one keeps it (two
models reading one table share its contract); the model's own scores contract and its
spec entry must not exist yet.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from jobs.errors import ConfigError

MARGIN = 0.5  # of the distance between the low and high quantile, added on each side
MAX_VALUES = 50  # a text column with more distinct values gets no value set
NOT_NULL_MOSTLY = 0.95
NUMERIC = ("tinyint", "smallint", "int", "bigint", "float", "double")
GE_TYPES = {"tinyint": "ByteType", "smallint": "ShortType", "int": "IntegerType", "bigint": "LongType",
            "float": "FloatType", "double": "DoubleType", "string": "StringType", "date": "DateType",
            "timestamp": "TimestampType", "boolean": "BooleanType"}


@dataclass
class ColumnProfile:
    name: str
    type: str  # Spark's simple type name: bigint, double, string, ...
    rows: int
    nulls: int
    low: float | None = None  # the 0.1% quantile (numbers)
    high: float | None = None  # the 99.9% quantile
    minimum: float | None = None
    values: list[str] | None = None  # distinct values of a text column (None: more than MAX_VALUES)

    @property
    def numeric(self) -> bool:
        return self.type in NUMERIC


@dataclass
class TableProfile:
    table: str
    days: list[date]
    rows: int
    columns: list[ColumnProfile] = field(default_factory=list)
    key_duplicates: int = 0  # rows beyond the first of a key within a day, over all days

    def column(self, name: str) -> ColumnProfile:
        for c in self.columns:
            if c.name == name:
                return c
        raise ConfigError(f"{self.table} has no column {name!r} (it has {', '.join(c.name for c in self.columns)})")


def collect(df, table: str, key: str, days: list[date]) -> TableProfile:
    """One aggregation over the days' rows: per column its missing count and quantiles or values."""
    from pyspark.sql import functions as F

    types = {f.name: f.dataType.simpleString() for f in df.schema.fields if f.name != "dt"}
    if key not in types:
        raise ConfigError(f"{table} has no key column {key!r} (it has {', '.join(types)})")
    aggs = [F.count(F.lit(1)).alias("__rows")]
    for name, kind in types.items():
        aggs.append(F.sum(F.col(name).isNull().cast("long")).alias(f"{name}__nulls"))
        if kind in NUMERIC:
            aggs.append(F.percentile_approx(F.col(name).cast("double"), [0.001, 0.999], 10_000).alias(f"{name}__q"))
            aggs.append(F.min(F.col(name).cast("double")).alias(f"{name}__min"))
        elif kind == "string":
            aggs.append(F.approx_count_distinct(name, 0.01).alias(f"{name}__distinct"))
    row = df.agg(*aggs).first()
    # the values of the text columns with few of them (a set of an id column would not fit in memory)
    few = [n for n, k in types.items() if k == "string" and (row[f"{n}__distinct"] or 0) <= 2 * MAX_VALUES]
    sets = df.agg(*[F.array_sort(F.collect_set(n)).alias(n) for n in few]).first() if few else {}
    duplicates = df.groupBy("dt").agg((F.count(F.lit(1)) - F.countDistinct(key)).alias("d")).agg(
        F.sum("d").alias("d")).first()["d"]
    profile = TableProfile(table, days, int(row["__rows"]), key_duplicates=int(duplicates or 0))
    for name, kind in types.items():
        q = row[f"{name}__q"] if kind in NUMERIC else None
        values = sets[name] if name in few else None
        profile.columns.append(ColumnProfile(
            name, kind, profile.rows, int(row[f"{name}__nulls"] or 0),
            low=float(q[0]) if q else None, high=float(q[1]) if q else None,
            minimum=row[f"{name}__min"] if kind in NUMERIC else None,
            values=list(values) if values is not None and len(values) <= MAX_VALUES else None))
    return profile


def _round(value: float, up: bool) -> float | int:
    """A bound with three significant digits, rounded outwards; whole numbers stay whole."""
    if value == 0 or not math.isfinite(value):
        return 0
    digits = 2 - int(math.floor(math.log10(abs(value))))
    scale = 10 ** digits
    rounded = (math.ceil if up else math.floor)(value * scale) / scale
    return int(rounded) if float(rounded).is_integer() else rounded


def bounds(c: ColumnProfile) -> tuple[float | int, float | int] | None:
    """The starting range of a number: the quantiles widened by MARGIN of their distance."""
    if c.low is None or c.high is None:
        return None
    span = max(c.high - c.low, abs(c.high) * 0.1, 1e-9)
    low, high = c.low - MARGIN * span, c.high + MARGIN * span
    if c.minimum is not None and c.minimum >= 0:
        low = max(low, 0.0)
    return _round(low, up=False), _round(high, up=True)


def expectation(kind: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": f"expect_{kind}", "kwargs": kwargs}


def table_contract(p: TableProfile, key: str, strict: tuple[str, ...] = (), description: str = "") -> dict[str, Any]:
    """A starting Great Expectations suite for a profiled table (`strict` columns: not null on every row)."""
    names = [c.name for c in p.columns]
    out = [expectation("table_columns_to_match_set", column_set=[*names, "dt"], exact_match=True),
           expectation("table_row_count_to_be_between", min_value=1)]
    out += [expectation("column_values_to_be_of_type", column=c.name, type_=GE_TYPES.get(c.type, c.type))
            for c in p.columns]
    out.append(expectation("column_values_to_not_be_null", column=key))
    if p.key_duplicates == 0:
        out.append(expectation("column_values_to_be_unique", column=key))
    for c in p.columns:
        if c.name == key:
            continue
        if c.numeric and (b := bounds(c)):
            out.append(expectation("column_values_to_be_between", column=c.name, min_value=b[0], max_value=b[1]))
        if c.type == "string" and c.values is not None:
            out.append(expectation("column_values_to_be_in_set", column=c.name, value_set=c.values))
        if c.name in strict:
            out.append(expectation("column_values_to_not_be_null", column=c.name))
        elif c.nulls / max(c.rows, 1) < 1 - NOT_NULL_MOSTLY:
            out.append(expectation("column_values_to_not_be_null", column=c.name, mostly=NOT_NULL_MOSTLY))
    days = f"{p.days[0]}..{p.days[-1]}" if p.days else "no days"
    return {"name": p.table, "meta": {"description": description or (
        f"Starting contract of {p.table}, profiled from {p.rows:,} rows of {days} by `batchloop models add`: "
        "review every range and value set before relying on it.")}, "expectations": out}


def scores_contract(name: str, key: str, task: str) -> dict[str, Any]:
    """What the model writes: a score per key (a probability for a binary model) and its lineage."""
    out = [expectation("column_values_to_not_be_null", column=key), expectation("column_values_to_be_unique", column=key),
           expectation("column_values_to_not_be_null", column="score")]
    if task == "binary":
        out.append(expectation("column_values_to_be_between", column="score", min_value=0, max_value=1))
    out += [expectation("column_values_to_not_be_null", column=c)
            for c in ("model_name", "model_version", "model_run_id", "run_id", "scored_at", "code_version")]
    what = "a probability" if task == "binary" else "a prediction"
    return {"name": f"{name}_scores", "meta": {"description": f"The {name} model's scoring output: {what} per "
                                                                f"{key}, with lineage on every row."},
            "expectations": out}


def spec_entry(name: str, features: TableProfile, key: str, label_table: str, label: str, delay_days: int,
               task: str, exclude: tuple[str, ...] = ()) -> str:
    """The model's entry under `models` in params.yaml, as YAML text with comments for the reviewer."""
    numeric = [c.name for c in features.columns if c.numeric and c.name not in (key, *exclude)]
    categorical = [c.name for c in features.columns if c.type == "string" and c.name not in (key, *exclude)]
    objective = "binary" if task == "binary" else "regression"

    def items(values: list[str]) -> str:
        return "".join(f"\n        - {v}" for v in values) if values else " []"

    return (f"  {name}:  # added by `batchloop models add` from {features.table} "
            f"{features.days[0]}..{features.days[-1]}: review it\n"
            f"    table: {features.table}\n"
            f"    key: {key}\n"
            f"    scores_contract: {name}_scores\n"
            f"    label: {{table: {label_table}, column: {label}, delay_days: {delay_days}}}\n"
            f"    task: {task}\n"
            f"    features:\n"
            f"      numeric:{items(numeric)}\n"
            f"      categorical:{items(categorical)}\n"
            f"    trainer:\n"
            f"      name: lightgbm\n"
            f"      params: {{objective: {objective}, num_leaves: 15, learning_rate: 0.05, num_boost_round: 200, "
            f"min_data_in_leaf: 100, seed: 7, num_threads: 2}}\n")


def add_entry(params_text: str, entry: str) -> str:
    """params.yaml with the entry appended to its `models` mapping (block style), comments kept."""
    lines = params_text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"^models:\s*(#.*)?$", line)), None)
    if start is None:
        raise ConfigError("params.yaml has no block-style `models:` mapping to add the entry to: add it by hand")
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith((" ", "\t"))):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():  # the entry goes before the blank lines ending the block
        end -= 1
    return "".join(lines[:end]) + entry + "".join(lines[end:])


def write_new(path: Path, document: dict[str, Any]) -> bool:
    """Write a contract that does not exist yet; an existing one is kept (False)."""
    if path.exists():
        return False
    path.write_text(json.dumps(document, indent=2) + "\n")
    return True
