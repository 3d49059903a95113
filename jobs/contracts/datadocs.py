"""Great Expectations Data Docs for our validations, rendered by GE's own page renderer.

Validation runs as Spark predicates (jobs.contracts.contract); its counts are turned into GE's
validation-result objects here and rendered with `ValidationResultsPageRenderer`, so a
user reads the same Data Docs page GE would show. Each record (JSON) and page (HTML)
goes to the reports bucket under validations/<dataset>/<day>/ and datadocs/<dataset>/<day>/.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from jobs.config import Env
from jobs.io import objectstore

log = logging.getLogger(__name__)

# The page links Bootstrap and friends from CDNs; offline they do not load, so a few
# rules of our own keep it readable without them.
OFFLINE_CSS = """<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;vertical-align:top}
.text-danger{color:#b00020}.text-success{color:#1b5e20}.collapse{display:block}
img{max-height:2rem}</style>"""


def _slug(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", value)


def _result(expectation: dict[str, Any], finding: dict[str, Any] | None, rows: int,
            sample: dict[str, list[Any]] | None, columns: list[str]) -> tuple[bool, dict[str, Any]]:
    kind, kwargs = expectation["type"], expectation.get("kwargs", {})
    if kind == "expect_table_row_count_to_be_between":
        return (finding or {}).get("verdict", "pass") == "pass", {"observed_value": rows}
    if kind == "expect_table_columns_to_match_set":
        return True, {"observed_value": columns}
    if kind == "expect_column_values_to_be_of_type":
        return True, {"observed_value": kwargs.get("type_")}
    unexpected = int((finding or {}).get("failed_rows", 0))
    share = 100.0 * unexpected / rows if rows else 0.0
    mostly = float(kwargs.get("mostly", 1.0))
    values = (sample or {}).get("values", [])
    return (share <= 100.0 * (1.0 - mostly) + 1e-12, {
        "element_count": rows, "unexpected_count": unexpected, "unexpected_percent": share,
        "unexpected_percent_total": share, "unexpected_percent_nonmissing": share,
        "missing_count": 0, "missing_percent": 0.0, "partial_unexpected_list": values,
        "partial_unexpected_counts": [{"value": v, "count": values.count(v)} for v in dict.fromkeys(map(str, values))],
    })


def render(record: dict[str, Any], dataset: str, day: str) -> str:
    """The Data Docs page of one validation record (jobs.contracts.validate.Validated.record)."""
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    findings = {f["expectation"]: f for f in record["all_findings"]}
    columns = next((e["kwargs"]["column_set"] for e in record["contract_document"]["expectations"]
                    if e["type"] == "expect_table_columns_to_match_set"), [])
    results = []
    for e in record["contract_document"]["expectations"]:
        column = e.get("kwargs", {}).get("column")
        name = f"{e['type']}({column})" if column else e["type"]
        success, result = _result(e, findings.get(name), record["rows"], record["samples"].get(name), columns)
        results.append(ExpectationValidationResult(
            success=success, result=result,
            expectation_config=ExpectationConfiguration(type=e["type"], kwargs=e.get("kwargs", {}))))
    passed = sum(r.success for r in results)
    now = datetime.now(UTC)
    suite_result = ExpectationSuiteValidationResult(
        success=record["verdict"] != "fail", results=results, suite_name=record["contract_name"],
        statistics={"evaluated_expectations": len(results), "successful_expectations": passed,
                    "unsuccessful_expectations": len(results) - passed,
                    "success_percent": 100.0 * passed / max(len(results), 1)},
        meta={"great_expectations_version": gx.__version__,
              "run_id": {"run_name": record["run_id"], "run_time": now.isoformat()},
              "batch_spec": {"data_asset_name": f"{dataset} dt={day}"},
              "batch_markers": {"rows": record["rows"], "passed": record["passed"],
                                "quarantined": record["quarantined"], "verdict": record["verdict"],
                                "contract_fingerprint": record["contract"]}})
    page = ValidationResultsPageRenderer().render(suite_result)
    html = DefaultJinjaPageView().render(page)
    return html.replace("</head>", f"{OFFLINE_CSS}</head>", 1)


def publish(env: Env, record: dict[str, Any], dataset: str, day: str, step: str, html: bool = True) -> dict[str, str]:
    """Upload the record (and its rendered page) to the reports bucket; their addresses."""
    stem = f"{dataset}/{day}/{_slug(record['run_id'])}.{step}"
    out = {"record": objectstore.upload(env, env.bucket_reports, f"validations/{stem}.json",
                                        json.dumps(record, default=str), "application/json")}
    if html:
        out["data_docs"] = objectstore.upload(env, env.bucket_reports, f"datadocs/{stem}.html",
                                              render(record, dataset, day), "text/html; charset=utf-8")
    return out


def publish_pending(env: Env, dataset: str, day: str) -> list[str]:
    """Render the Data Docs of every stored record of one day that has no page yet."""
    s3 = objectstore.client(env)
    prefix = f"validations/{dataset}/{day}/"
    pages = []
    for item in s3.list_objects_v2(Bucket=env.bucket_reports, Prefix=prefix).get("Contents", []):
        page_key = "datadocs/" + item["Key"][len("validations/"):].removesuffix(".json") + ".html"
        if objectstore.read(env, env.bucket_reports, page_key) is not None:
            continue
        record = json.loads(objectstore.read(env, env.bucket_reports, item["Key"]))
        pages.append(objectstore.upload(env, env.bucket_reports, page_key, render(record, dataset, day),
                                        "text/html; charset=utf-8"))
    return pages
