"""One contract for training and scoring: bad inputs end in a clear error or a quarantine, nothing lost."""

from __future__ import annotations

import json
from datetime import date

import pytest
from pyspark.sql import functions as F

from jobs.contracts import contract as contract_module
from jobs.contracts.contract import FAILED, load_contract
from jobs.contracts.validate import validate_frame
from jobs.demo.generate import feature_schema, generate_day
from jobs.errors import ContractViolation, PartitionNotFound
from jobs.io.lake import Lake

pytestmark = pytest.mark.integration

DAY = date(2026, 1, 20)
ROWS = 400


@pytest.fixture(scope="module")
def contract():
    return load_contract("features")


@pytest.fixture(scope="module")
def clean(spark, spec, generator):
    pdf = generate_day(generator, spec, DAY, ROWS, seed=11).features
    return spark.createDataFrame(pdf, feature_schema(spec.table)).cache()


def check(df, contract, spec):
    result = validate_frame(df, contract, spec.validation, "features test", spec.key)
    r = result.report
    assert r.rows == r.passed + r.quarantined == df.count()  # nothing lost
    assert result.passed.count() == r.passed
    return result


def failed_by(result, name):
    return {row[0] for row in result.annotated.where(F.array_contains(FAILED, name)).select("subscriber_id").collect()}


def with_value(df, key, column, value):
    return df.withColumn(column, F.when(F.col("subscriber_id") == key, F.lit(value)).otherwise(F.col(column)))


def test_clean_data_passes(clean, contract, spec):
    result = check(clean, contract, spec)
    assert result.report.verdict == "pass" and result.report.quarantined == 0


def test_missing_column_is_a_clear_error(clean, contract, spec):
    with pytest.raises(ContractViolation, match="missing column\\(s\\) support_calls"):
        check(clean.drop("support_calls"), contract, spec)


def test_extra_column_is_a_clear_error(clean, contract, spec):
    with pytest.raises(ContractViolation, match="unexpected column\\(s\\) surprise"):
        check(clean.withColumn("surprise", F.lit(1)), contract, spec)


def test_wrong_column_type_is_a_clear_error(clean, contract, spec):
    with pytest.raises(ContractViolation, match="tenure_months is StringType, expected DoubleType"):
        check(clean.withColumn("tenure_months", F.col("tenure_months").cast("string")), contract, spec)


@pytest.mark.parametrize("column", ["tenure_months", "region"])
def test_all_null_column_fails_the_batch(clean, contract, spec, column):
    dtype = clean.schema[column].dataType
    result = check(clean.withColumn(column, F.lit(None).cast(dtype)), contract, spec)
    assert result.report.verdict == "fail"
    assert any(f.expectation == f"expect_column_values_to_not_be_null({column})" and f.verdict == "fail"
               for f in result.report.findings)
    with pytest.raises(ContractViolation, match=f"not_be_null\\({column}\\)"):
        contract_module.raise_on_failure(result.report, result.text)


def test_null_share_above_its_bound_fails_and_below_passes(clean, contract, spec):
    some = clean.withColumn("data_usage_gb", F.when(F.col("subscriber_id") % 10 == 0, None)
                            .otherwise(F.col("data_usage_gb")))  # 10% > 5% allowed
    assert check(some, contract, spec).report.verdict == "fail"
    few = clean.withColumn("data_usage_gb", F.when(F.col("subscriber_id") % 50 == 0, None)
                           .otherwise(F.col("data_usage_gb")))  # 2%
    assert check(few, contract, spec).report.verdict == "pass"


@pytest.mark.parametrize("column,value,rule", [
    ("complaint_score", 11.0, "expect_column_values_to_be_between(complaint_score)"),      # out of range
    ("support_calls", -3, "expect_column_values_to_be_between(support_calls)"),            # negative count
    ("tariff_plan", "platinum_x", "expect_column_values_to_be_in_set(tariff_plan)"),       # unseen category
    ("download_mbps", float("nan"), "expect_column_values_to_be_between(download_mbps)"),  # NaN
    ("data_usage_gb", float("inf"), "expect_column_values_to_be_between(data_usage_gb)"),  # Infinity
    ("voice_minutes", float("-inf"), "expect_column_values_to_be_between(voice_minutes)"),
])
def test_a_bad_value_quarantines_exactly_its_row(clean, contract, spec, column, value, rule):
    result = check(with_value(clean, 7, column, value), contract, spec)
    assert failed_by(result, rule) == {7}
    assert result.report.quarantined == 1 and result.report.passed == ROWS - 1
    assert result.passed.where(F.col("subscriber_id") == 7).count() == 0


def test_duplicate_keys_quarantine_both_copies(clean, contract, spec):
    dup = clean.unionByName(clean.where(F.col("subscriber_id") == 9))
    result = check(dup, contract, spec)
    assert failed_by(result, "expect_column_values_to_be_unique(subscriber_id)") == {9}
    assert result.report.quarantined == 2 and result.report.passed == ROWS - 1


def test_more_quarantined_rows_than_the_policy_allows_fail_the_batch(clean, contract, spec):
    bad = clean.withColumn("support_calls", F.when(F.col("subscriber_id") <= 8, -1).otherwise(F.col("support_calls")))
    result = check(bad, contract, spec)  # 2% > 1%
    assert result.report.quarantined == 8 and result.report.verdict == "fail"


def test_an_empty_batch_fails_its_row_count_rule(clean, contract, spec):
    result = check(clean.limit(0), contract, spec)
    assert result.report.verdict == "fail" and result.report.rows == 0


def test_a_missing_partition_is_a_clear_error(spark, env, clean):
    lake = Lake(spark, env, namespace="contract_tests")
    with pytest.raises(PartitionNotFound, match="contract_tests.features does not exist"):
        lake.read_partition("features", DAY)
    lake.write_partitions(clean, "features")
    with pytest.raises(PartitionNotFound, match="no rows for dt=1999-01-01"):
        lake.read_partition("features", date(1999, 1, 1))


def test_a_corrupt_parquet_file_is_a_clear_error(spark, env, clean, contract, spec, tmp_path):
    parquet = Lake(spark, env.model_copy(update={"lake_format": "parquet", "lake_root": str(tmp_path)}))
    parquet.write_partitions(clean.repartition(2), "features")
    files = sorted((tmp_path / parquet.namespace / "features" / f"dt={DAY}").glob("*.parquet"))
    assert len(files) == 2
    files[0].write_bytes(b"this is not parquet" * 100)
    with pytest.raises(ContractViolation, match="could not be read"):
        check(parquet.read_partition("features", DAY), contract, spec)


def test_quarantine_rows_keep_the_whole_row_and_the_run(clean, contract, spec):
    result = check(with_value(clean, 5, "support_calls", -1), contract, spec)
    q = contract_module.quarantine_frame(result.annotated, "subscriber_id", "run-42").collect()
    assert len(q) == 1 and q[0].key == "5" and q[0].run_id == "run-42"
    assert json.loads(q[0].row)["support_calls"] == -1
    assert q[0][FAILED] == ["expect_column_values_to_be_between(support_calls)"]


def test_the_fingerprint_changes_with_a_rule_and_names_it(contract, tmp_path):
    doc = json.loads(json.dumps(contract.document))
    for e in doc["expectations"]:
        if e["kwargs"].get("column") == "monthly_charges" and e["type"].endswith("between"):
            e["kwargs"]["max_value"] = 100
    (tmp_path / "features.json").write_text(json.dumps(doc))
    tightened = load_contract("features", tmp_path)
    assert tightened.fingerprint != contract.fingerprint
    assert contract_module.changed_expectations(contract.document, tightened) == [
        "expect_column_values_to_be_between(monthly_charges)"]


def test_rows_of_another_day_are_quarantined_when_the_table_names_its_date_column(clean, spec, tmp_path):
    # given a table whose rows carry their own date, named in its contract's meta
    document = json.loads((contract_module.CONTRACTS_DIR / "features.json").read_text())
    document["meta"]["date_column"] = "snapshot_date"
    document["expectations"][0]["kwargs"]["column_set"].append("snapshot_date")
    (tmp_path / "features.json").write_text(json.dumps(document))
    dated = load_contract("features", tmp_path)
    # and an upstream file for the day that holds five rows of the day before
    stale = clean.withColumn("snapshot_date", F.when(F.col("subscriber_id") <= 5, F.lit(date(2026, 1, 19)))
                             .otherwise(F.lit(DAY)))
    # when it is validated
    result = check(stale, dated, spec)
    # then exactly those rows are quarantined, with the rule they broke; the rule is part of the fingerprint
    assert failed_by(result, contract_module.DAY_RULE + "(snapshot_date)") == {1, 2, 3, 4, 5}
    assert result.report.quarantined == 5
    assert dated.fingerprint != load_contract("features").fingerprint
