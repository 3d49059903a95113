"""The one place that loads data contracts (Great Expectations suites in expectations/).

A suite's expectations fall in two kinds:
- row rules: column-map expectations without `mostly` (not null, between, in set,
  unique). Each becomes a Spark predicate; a row failing any of them is quarantined
  with the names of the rules it failed, and the other rows go on.
- batch rules: the schema (columns, types), the row count, and column-map expectations
  with `mostly`. They are decided from counts taken in the same pass, and together with
  the share of quarantined rows they pass, warn or fail the batch by the policy in
  params.yaml (`validation`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, FloatType

from jobs.config import CONTRACTS_DIR, ValidationParams
from jobs.errors import ContractViolation

log = logging.getLogger(__name__)

FAILED = "failed_expectations"
COLUMN_MAP = {
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_be_unique",
}
SUPPORTED = COLUMN_MAP | {
    "expect_table_columns_to_match_set",
    "expect_table_row_count_to_be_between",
    "expect_column_values_to_be_of_type",
}
# a table whose rows carry their own date names it in its suite's meta (`"date_column": "snapshot_date"`):
# a row whose date is not its partition's day (an upstream file of another day) is quarantined
DAY_RULE = "batchloop_row_date_is_partition_day"


@dataclass(frozen=True)
class Expectation:
    type: str
    kwargs: dict[str, Any]

    @property
    def name(self) -> str:
        """A readable identity: the type and its column, e.g. expect_column_values_to_be_between(tenure_months)."""
        column = self.kwargs.get("column")
        return f"{self.type}({column})" if column else self.type

    @property
    def is_row_rule(self) -> bool:
        if self.type == "expect_column_values_to_be_unique":
            return True  # a duplicate is always a row to set aside
        return self.type in COLUMN_MAP and self.kwargs.get("mostly", 1.0) >= 1.0


@dataclass(frozen=True)
class Contract:
    name: str
    expectations: tuple[Expectation, ...]
    document: dict[str, Any] = field(repr=False, compare=False)

    @property
    def date_column(self) -> str | None:
        return (self.document.get("meta") or {}).get("date_column")

    @property
    def fingerprint(self) -> str:
        """A hash of the rules (not of descriptions or formatting)."""
        rules = sorted(json.dumps({"type": e.type, "kwargs": e.kwargs}, sort_keys=True)
                       for e in (*self.expectations, *self._day_rule()))
        return hashlib.sha256("\n".join(rules).encode()).hexdigest()[:16]

    def _day_rule(self) -> tuple[Expectation, ...]:
        return (Expectation(DAY_RULE, {"column": self.date_column}),) if self.date_column else ()

    @property
    def row_rules(self) -> tuple[Expectation, ...]:
        return tuple(e for e in self.expectations if e.is_row_rule) + self._day_rule()

    def of_type(self, type_: str) -> list[Expectation]:
        return [e for e in self.expectations if e.type == type_]


def load_contract(name: str, directory: Path | None = None) -> Contract:
    """Read expectations/<name>.json, check it is a valid Great Expectations suite, and parse it."""
    path = (directory or CONTRACTS_DIR) / f"{name}.json"
    if not path.exists():
        raise ContractViolation(f"no contract {name!r}: {path} does not exist")
    text = path.read_bytes()
    document = json.loads(text)
    check_suite(path, text, document)
    expectations = tuple(Expectation(e["type"], dict(e.get("kwargs", {}))) for e in document["expectations"])
    unsupported = sorted({e.type for e in expectations} - SUPPORTED)
    if unsupported:
        raise ContractViolation(f"{path}: expectation types batchloop does not enforce: {', '.join(unsupported)}")
    return Contract(name=document["name"], expectations=expectations, document=document)


def verified_marker(text: bytes) -> Path:
    """Where the host records that GE accepted exactly this suite text (keyed by its hash and GE's version)."""
    from importlib.metadata import version

    digest = hashlib.sha256(text + b"\0great_expectations==" + version("great_expectations").encode()).hexdigest()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "batchloop" / "verified-suites" / digest[:32]


def check_suite(path: Path, text: bytes, document: dict[str, Any]) -> None:
    """GE parses the suite; a text it accepted once (same GE version) is not parsed again.

    Importing GE takes seconds, and every step loads one to three suites: the check runs
    once per suite text and host, and a changed or malformed suite is always checked.
    """
    marker = verified_marker(text)
    if marker.exists():
        return
    import great_expectations as gx

    try:
        gx.ExpectationSuite(**document)
    except Exception as exc:  # GE raises several types for a malformed suite
        raise ContractViolation(f"{path} is not a valid Great Expectations suite: {exc}") from None
    marker.parent.mkdir(parents=True, exist_ok=True)
    partial = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
    partial.write_text(f"{path}\n")
    partial.replace(marker)


def combine(name: str, *contracts: Contract) -> Contract:
    """One contract for a frame that joins several datasets (a training snapshot: features and labels).

    Column-set rules merge into one over the union of columns; identical rules appear once.
    """
    merged: list[Expectation] = []
    columns: list[str] = []
    for contract in contracts:
        for e in contract.expectations:
            if e.type == "expect_table_columns_to_match_set":
                columns += [c for c in e.kwargs["column_set"] if c not in columns]
            elif e not in merged:
                merged.append(e)
    if columns:
        merged.insert(0, Expectation("expect_table_columns_to_match_set", {"column_set": columns, "exact_match": True}))
    document = {"name": name, "expectations": [{"type": e.type, "kwargs": e.kwargs} for e in merged]}
    dates = [c.date_column for c in contracts if c.date_column]
    if dates:
        document["meta"] = {"date_column": dates[0]}
    return Contract(name=name, expectations=tuple(merged), document=document)


def changed_expectations(old: dict[str, Any], new: Contract) -> list[str]:
    """Names of the expectations added, removed or changed between a stored suite and the current one."""
    before = {Expectation(e["type"], e.get("kwargs", {})).name: e.get("kwargs", {}) for e in old["expectations"]}
    after = {e.name: e.kwargs for e in new.expectations}
    return sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n))


# -- schema -------------------------------------------------------------------------------
def check_schema(df: DataFrame, contract: Contract, what: str) -> None:
    """Columns and types, from the DataFrame's schema alone (no Spark job)."""
    present = set(df.columns)
    for e in contract.of_type("expect_table_columns_to_match_set"):
        wanted = set(e.kwargs["column_set"])
        missing, extra = sorted(wanted - present), sorted(present - wanted)
        if missing or (extra and e.kwargs.get("exact_match", True)):
            parts = ([f"missing column(s) {', '.join(missing)}"] if missing else []) + \
                    ([f"unexpected column(s) {', '.join(extra)}"] if extra else [])
            raise ContractViolation(f"{what}: {'; '.join(parts)} ({e.name} in expectations/{contract.name}.json)")
    types = {f.name: type(f.dataType).__name__ for f in df.schema.fields}
    wrong = [f"{e.kwargs['column']} is {types[e.kwargs['column']]}, expected {e.kwargs['type_']}"
             for e in contract.of_type("expect_column_values_to_be_of_type")
             if e.kwargs["column"] in types and types[e.kwargs["column"]] != e.kwargs["type_"]]
    if wrong:
        raise ContractViolation(f"{what}: wrong column type(s): {'; '.join(wrong)} "
                                f"(expect_column_values_to_be_of_type in expectations/{contract.name}.json)")


# -- row rules as Spark predicates ---------------------------------------------------------
def failing(e: Expectation, df: DataFrame) -> Column:
    """True where a row breaks the expectation (nulls only break not_be_null, as in GE)."""
    column = e.kwargs["column"]
    col = F.col(column)
    if e.type == "expect_column_values_to_not_be_null":
        return col.isNull()
    if e.type == "expect_column_values_to_be_in_set":
        return col.isNotNull() & ~col.isin(list(e.kwargs["value_set"]))
    if e.type == "expect_column_values_to_be_between":
        inside = F.lit(True)
        if e.kwargs.get("min_value") is not None:
            inside = inside & (col >= F.lit(e.kwargs["min_value"]))
        if e.kwargs.get("max_value") is not None:
            inside = inside & (col <= F.lit(e.kwargs["max_value"]))
        if isinstance(df.schema[column].dataType, (DoubleType, FloatType)):
            # Spark orders NaN above every number; a NaN is outside any range
            inside = inside & ~F.isnan(col)
        return col.isNotNull() & ~inside
    if e.type == "expect_column_values_to_be_unique":
        return F.col(_duplicate_flag(column)).isNotNull()
    if e.type == DAY_RULE:
        if "dt" not in df.columns:
            return F.lit(False)  # no partition day to compare with
        return col.isNull() | (F.to_date(col) != F.col("dt"))
    raise ValueError(e.type)


def _duplicate_flag(column: str) -> str:
    return f"__duplicate_{column}"


def _flag_duplicates(df: DataFrame, column: str) -> DataFrame:
    """Mark rows whose key occurs more than once in its day: one key-only aggregation and a join."""
    scope = [column, "dt"] if "dt" in df.columns and column != "dt" else [column]
    duplicates = (df.where(F.col(column).isNotNull()).groupBy(*scope).count().where(F.col("count") > 1)
                  .select(*scope, F.lit(True).alias(_duplicate_flag(column))))
    return df.join(duplicates, scope, "left")


def annotate(df: DataFrame, contract: Contract) -> DataFrame:
    """Add `failed_expectations`: the row rules each row breaks (empty when it passes)."""
    unique = [e.kwargs["column"] for e in contract.row_rules if e.type == "expect_column_values_to_be_unique"]
    columns = df.columns
    for column in unique:
        df = _flag_duplicates(df, column)
    checks = [F.when(failing(e, df), F.lit(e.name)) for e in contract.row_rules]
    failed = F.filter(F.array(*checks), lambda x: x.isNotNull()) if checks else F.array().cast("array<string>")
    return df.select(*columns, failed.alias(FAILED))


# -- batch rules from one aggregation ------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    expectation: str
    failed_rows: int
    share: float
    verdict: str  # pass | warn | fail
    detail: str = ""


@dataclass(frozen=True)
class Report:
    """What a validation found: counts that reconcile, and a verdict per rule."""

    dataset: str
    rows: int
    passed: int
    quarantined: int
    findings: tuple[Finding, ...]
    fingerprint: str

    @property
    def verdict(self) -> str:
        verdicts = {f.verdict for f in self.findings}
        return "fail" if "fail" in verdicts else "warn" if "warn" in verdicts else "pass"

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "rows": self.rows, "passed": self.passed,
                "quarantined": self.quarantined, "verdict": self.verdict, "contract": self.fingerprint,
                "findings": [f.__dict__ for f in self.findings if f.verdict != "pass" or f.failed_rows]}


def measure(annotated: DataFrame, contract: Contract, policy: ValidationParams, dataset: str) -> Report:
    """Count everything the batch rules need in a single aggregation, and decide them."""
    batch_rules = [e for e in contract.expectations if e.type in COLUMN_MAP and not e.is_row_rule]
    aggs = [F.count(F.lit(1)).alias("rows"), F.sum((F.size(FAILED) > 0).cast("long")).alias("quarantined")]
    aggs += [F.sum(F.array_contains(FAILED, e.name).cast("long")).alias(f"r{i}")
             for i, e in enumerate(contract.row_rules)]
    aggs += [F.sum(failing(e, annotated).cast("long")).alias(f"b{i}") for i, e in enumerate(batch_rules)]
    row = annotated.agg(*aggs).first().asDict()
    rows, quarantined = int(row["rows"]), int(row["quarantined"] or 0)

    def share(n: int) -> float:
        return n / rows if rows else 0.0

    findings = []
    for e in contract.of_type("expect_table_row_count_to_be_between"):
        lo, hi = e.kwargs.get("min_value"), e.kwargs.get("max_value")
        ok = (lo is None or rows >= lo) and (hi is None or rows <= hi)
        findings.append(Finding(e.name, 0, 0.0, "pass" if ok else "fail", f"{rows} rows"))
    for i, e in enumerate(contract.row_rules):
        n = int(row[f"r{i}"] or 0)
        findings.append(Finding(e.name, n, share(n), "pass" if n == 0 else "quarantine"))
    for i, e in enumerate(batch_rules):
        n = int(row[f"b{i}"] or 0)
        ok = share(n) <= 1.0 - float(e.kwargs.get("mostly", 1.0))
        findings.append(Finding(e.name, n, share(n), "pass" if ok else policy.on_batch_rule_failure,
                                f"mostly={e.kwargs.get('mostly')}"))
    q_share = share(quarantined)
    findings.append(Finding("share of rows quarantined", quarantined, q_share,
                            "pass" if q_share <= policy.max_quarantine_share else policy.on_batch_rule_failure,
                            f"at most {policy.max_quarantine_share:.2%}"))
    report = Report(dataset, rows, rows - quarantined, quarantined, tuple(findings), contract.fingerprint)
    if report.passed + report.quarantined != report.rows:
        raise ContractViolation(f"{dataset}: counts do not reconcile: {report.as_dict()}")
    return report


def summary(report: Report, sample: dict[str, dict[str, list[Any]]] | None = None) -> str:
    """A readable table: expectation, failed rows, share, verdict, sample of failing keys."""
    lines = [f"{report.dataset}: {report.rows} rows = {report.passed} passed + {report.quarantined} quarantined; "
             f"verdict {report.verdict.upper()} (contract {report.fingerprint})"]
    for f in report.findings:
        if f.verdict == "pass" and not f.failed_rows:
            continue
        keys = (sample or {}).get(f.expectation, {}).get("keys")
        lines.append(f"  {f.verdict:10} {f.expectation:60} {f.failed_rows:>9} ({f.share:.2%}) {f.detail}"
                     + (f"  e.g. keys {keys}" if keys else ""))
    return "\n".join(lines)


def sample_failures(annotated: DataFrame, key: str, contract: Contract, n: int = 5,
                    bound: int = 5000) -> dict[str, dict[str, list[Any]]]:
    """A few failing keys and values per row rule, from at most `bound` quarantined rows."""
    columns = sorted({e.kwargs["column"] for e in contract.row_rules} - {key})
    rows = annotated.where(F.size(FAILED) > 0).select(key, FAILED, *columns).limit(bound).collect()
    by_rule = {e.name: e.kwargs["column"] for e in contract.row_rules}
    out: dict[str, dict[str, list[Any]]] = {}
    for row in sorted(rows, key=lambda r: str(r[key])):
        for rule in row[FAILED]:
            entry = out.setdefault(rule, {"keys": [], "values": []})
            if len(entry["keys"]) < n:
                entry["keys"].append(row[key])
                entry["values"].append(row[by_rule[rule]])
    return out


def raise_on_failure(report: Report, text: str) -> None:
    if report.verdict == "fail":
        raise ContractViolation(f"data contract failed:\n{text}")
    if report.verdict == "warn":
        log.warning("data contract warnings:\n%s", text)


def quarantine_frame(annotated: DataFrame, key: str, run_id: str, day_column: str = "dt") -> DataFrame:
    """The quarantined rows: key, the rules failed, the whole row as JSON (nothing is lost), run id."""
    payload = [c for c in annotated.columns if c not in (FAILED,)]
    return (annotated.where(F.size(FAILED) > 0)
            .select(F.col(key).cast("string").alias("key"), F.col(FAILED),
                    F.to_json(F.struct(*payload)).alias("row"), F.lit(run_id).alias("run_id"),
                    F.current_timestamp().alias("quarantined_at"), F.col(day_column).alias("dt")))


def passed_rows(annotated: DataFrame) -> DataFrame:
    return annotated.where(F.size(FAILED) == 0).drop(FAILED)
