"""Our Spark predicates and Great Expectations' own validator agree on every expectation of the contracts."""

from __future__ import annotations

import json
import logging
from datetime import date

import numpy as np
import pytest
from pyspark.sql import functions as F

from jobs.contracts.contract import CONTRACTS_DIR, FAILED, load_contract
from jobs.contracts.validate import validate_frame
from jobs.demo.generate import feature_schema, generate_day

pytestmark = pytest.mark.integration


def great_expectations_counts(df, suite_name: str) -> dict[str, tuple[bool, int | None]]:
    """Run the suite with GE's own Spark engine: (success, unexpected count) per expectation name."""
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    batch = context.data_sources.add_spark("frames").add_dataframe_asset(suite_name) \
        .add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(gx.ExpectationSuite(**json.loads((CONTRACTS_DIR / f"{suite_name}.json").read_text())))
    run = context.validation_definitions.add(gx.ValidationDefinition(name=f"{suite_name}-check", data=batch,
                                                                     suite=suite))
    result = run.run(batch_parameters={"dataframe": df}, result_format="SUMMARY")
    out = {}
    for r in result.results:
        kwargs = r.expectation_config.kwargs
        name = f"{r.expectation_config.type}({kwargs['column']})" if "column" in kwargs else r.expectation_config.type
        out[name] = (bool(r.success), r.result.get("unexpected_count"))
    return out


def test_every_rule_counts_the_same_failing_rows_as_great_expectations(spark, spec, generator):
    # given a day with a handful of bad values of every kind the contract knows
    pdf = generate_day(generator, spec, date(2026, 1, 20), 2000, seed=5).features
    pdf.loc[3, "support_calls"] = -2                       # negative count
    pdf.loc[4, "complaint_score"] = 12.5                   # out of range
    pdf.loc[5, "tariff_plan"] = "platinum"                 # unseen category
    pdf.loc[7, "data_usage_gb"] = np.inf                   # infinity
    pdf.loc[8, "region"] = None                            # missing category
    pdf.loc[9:60, "tenure_months"] = np.nan                # 2.6% missing (null in Spark): within its `mostly`
    pdf.loc[10, "subscriber_id"] = pdf.loc[11, "subscriber_id"]  # duplicate key
    contract = load_contract("features")
    df = spark.createDataFrame(pdf, feature_schema(spec.table))
    # when both validate it
    ours = validate_frame(df, contract, spec.validation, "agreement", spec.key)
    theirs = great_expectations_counts(df, "features")
    # then every column rule has the same failing-row count and the same verdict
    counted = {f.expectation: f.failed_rows for f in ours.report.findings}
    checked = 0
    for e in contract.expectations:
        if e.name not in counted or e.type == "expect_table_row_count_to_be_between":
            continue  # schema and row-count rules: no per-row count
        success, unexpected = theirs[e.name]
        assert counted[e.name] == unexpected, (e.name, counted[e.name], unexpected)
        mostly = float(e.kwargs.get("mostly", 1.0))
        assert success == (counted[e.name] <= (1 - mostly) * ours.report.rows), e.name
        checked += 1
    assert checked >= 40
    flagged = ours.annotated.where(F.size(FAILED) > 0).count()
    assert flagged == ours.report.quarantined == 6  # five bad values and both copies of the duplicate key


def test_a_nan_breaks_the_range_rule_as_in_great_expectations_spark_engine(spark, spec, generator):
    # a NaN in a float column is not a null: it is outside every range (Great Expectations' pandas
    # engine would count it as missing; its Spark engine, like batchloop, does not)
    pdf = generate_day(generator, spec, date(2026, 1, 20), 500, seed=5).features
    df = spark.createDataFrame(pdf, feature_schema(spec.table)).withColumn(
        "download_mbps", F.when(F.col("subscriber_id") == 7, F.lit(float("nan"))).otherwise(F.col("download_mbps")))
    ours = validate_frame(df, load_contract("features"), spec.validation, "nan", spec.key)
    theirs = great_expectations_counts(df, "features")
    counted = {f.expectation: f.failed_rows for f in ours.report.findings}
    for rule, expected in (("expect_column_values_to_be_between(download_mbps)", 1),
                           ("expect_column_values_to_not_be_null(download_mbps)", 0)):
        assert counted.get(rule, 0) == theirs[rule][1] == expected
    assert ours.report.quarantined == 1
