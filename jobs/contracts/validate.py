"""Validation of one partition against its contract: the same code for training and scoring."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

from pyspark.sql import DataFrame

from jobs.config import ModelSpec, ValidationParams
from jobs.contracts import contract as c
from jobs.errors import ConfigError
from jobs.io.lake import READ_ERRORS, unreadable
from jobs.io.spark import keep

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Validated:
    """Rows that passed, the annotated frame (for quarantine), and the report."""

    passed: DataFrame
    annotated: DataFrame
    report: c.Report
    text: str
    contract: c.Contract
    samples: dict

    def record(self, run_id: str) -> dict:
        """What the validation found, JSON-ready: rendered as Data Docs and kept beside the data."""
        return {**self.report.as_dict(), "all_findings": [f.__dict__ for f in self.report.findings],
                "samples": self.samples, "contract_name": self.contract.name,
                "contract_document": self.contract.document, "run_id": run_id}


def validate_frame(df: DataFrame, contract: c.Contract, policy: ValidationParams, what: str,
                   key: str | None, persist: bool = False) -> Validated:
    """Schema first (no job), then row rules and batch rules in one aggregation over the data.

    `persist` keeps the annotated rows for callers that go on to use them (scoring,
    training); a check alone reads the data once and keeps nothing.
    """
    c.check_schema(df, contract, what)
    annotated = c.annotate(df, contract)
    try:
        if persist:
            annotated = keep(annotated)
        report = c.measure(annotated, contract, policy, what)
    except READ_ERRORS as exc:
        annotated.unpersist()
        raise unreadable(exc, what) from None
    sample = c.sample_failures(annotated, key, contract) if key and report.quarantined else {}
    text = c.summary(report, sample)
    log.info("validation\n%s", text)
    return Validated(c.passed_rows(annotated), annotated, report, text, contract, sample)


def validate_partition(lake, table: str, day: date, policy: ValidationParams, key: str | None,
                       contract_name: str | None = None) -> Validated:
    """Read one day of a lake table and validate it against expectations/<table>.json."""
    contract = c.load_contract(contract_name or table)
    return validate_frame(lake.read_partition(table, day), contract, policy, f"{table} dt={day}", key)


def require_columns(spec: ModelSpec, df: DataFrame, table: str, columns: tuple[str, ...]) -> None:
    """The table has every column the model's spec names: else one error naming the model and what is missing."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ConfigError(f"model {spec.name}: {table} has no column(s) {', '.join(missing)} that its spec names "
                          f"(key, label or features); it has {', '.join(c for c in df.columns if c != 'dt')}")
