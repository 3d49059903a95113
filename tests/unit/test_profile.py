"""`batchloop models add`: the starting contract and spec entry written from a table's profile."""

from datetime import date
from pathlib import Path

import pytest

from jobs.config import parse_params
from jobs.contracts import profile
from jobs.contracts.contract import load_contract
from jobs.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DAYS = [date(2026, 1, 1), date(2026, 1, 2)]


def usage_profile(duplicates: int = 0) -> profile.TableProfile:
    p = profile.TableProfile("usage", DAYS, 4000, key_duplicates=duplicates)
    p.columns = [
        profile.ColumnProfile("subscriber_id", "bigint", 4000, 0, 1.0, 1999.0, 1.0),
        profile.ColumnProfile("data_usage_gb", "double", 4000, 12, 0.05, 14.2, 0.0),
        profile.ColumnProfile("delta", "double", 4000, 0, -3.0, 5.0, -4.0),
        profile.ColumnProfile("region", "string", 4000, 400, values=["east", "north"]),
        profile.ColumnProfile("device_id", "string", 4000, 0, values=None),
    ]
    return p


def rules(document: dict) -> dict[tuple[str, str | None], dict]:
    return {(e["type"], e["kwargs"].get("column")): e["kwargs"] for e in document["expectations"]}


def test_a_profile_becomes_a_starting_contract_with_widened_ranges_and_value_sets():
    got = rules(profile.table_contract(usage_profile(), "subscriber_id"))
    assert got[("expect_table_columns_to_match_set", None)]["column_set"] == [
        "subscriber_id", "data_usage_gb", "delta", "region", "device_id", "dt"]
    assert got[("expect_column_values_to_be_unique", "subscriber_id")] == {"column": "subscriber_id"}
    # 0.05..14.2 widened by half its span, never below 0 for a column that never was
    assert got[("expect_column_values_to_be_between", "data_usage_gb")] == {
        "column": "data_usage_gb", "min_value": 0, "max_value": 21.3}
    assert got[("expect_column_values_to_be_between", "delta")] == {"column": "delta", "min_value": -7,
                                                                     "max_value": 9}
    assert got[("expect_column_values_to_be_in_set", "region")]["value_set"] == ["east", "north"]
    assert ("expect_column_values_to_be_in_set", "device_id") not in got  # too many values for a set
    # a feature missing on 10% of rows gets no not-null rule; the others a batch rule
    assert ("expect_column_values_to_not_be_null", "region") not in got
    assert got[("expect_column_values_to_not_be_null", "data_usage_gb")]["mostly"] == 0.95
    assert got[("expect_column_values_to_be_of_type", "subscriber_id")]["type_"] == "LongType"


def test_a_key_repeated_within_a_day_gets_no_uniqueness_rule():
    got = rules(profile.table_contract(usage_profile(duplicates=3), "subscriber_id"))
    assert ("expect_column_values_to_be_unique", "subscriber_id") not in got


def test_the_written_contracts_are_suites_great_expectations_and_batchloop_accept(tmp_path):
    for document in (profile.table_contract(usage_profile(), "subscriber_id"),
                     profile.scores_contract("spend", "subscriber_id", "regression")):
        assert profile.write_new(tmp_path / f"{document['name']}.json", document)
        assert load_contract(document["name"], tmp_path).name == document["name"]
    # an existing contract is kept, never overwritten
    assert not profile.write_new(tmp_path / "usage.json", {"name": "usage", "expectations": []})
    assert load_contract("usage", tmp_path).expectations


def test_the_spec_entry_lands_under_models_and_parses_with_the_defaults(tmp_path):
    entry = profile.spec_entry("arpu", usage_profile(), "subscriber_id", "spend_labels", "spend_next_30d", 30,
                               "regression", exclude=("device_id",))
    text = profile.add_entry((ROOT / "params.yaml").read_text(), entry)
    import yaml

    params = parse_params(yaml.safe_load(text), tmp_path / "params.yaml")
    arpu = params.model("arpu")
    assert (arpu.task, arpu.table, arpu.label.column) == ("regression", "usage", "spend_next_30d")
    assert arpu.features.numeric == ("data_usage_gb", "delta") and arpu.features.categorical == ("region",)
    assert arpu.trainer.params["objective"] == "regression" and arpu.primary_metric == "rmse"
    declared = parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()), tmp_path / "params.yaml")
    assert all(params.model(name) == declared.model(name) for name in declared.models)  # the others are kept
    assert "# the demo's synthetic upstream" in text.split("  arpu:")[1]  # the rest of the file is kept


def test_a_params_file_without_a_block_models_mapping_is_refused():
    with pytest.raises(ConfigError, match="no block-style `models:`"):
        profile.add_entry("defaults: {}\nmodels: {churn: {}}\n", "  spend:\n    table: usage\n")
