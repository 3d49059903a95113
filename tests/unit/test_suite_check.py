"""A suite is checked by Great Expectations once per text and host; a changed or broken one always is."""

import json
import shutil

import pytest

from jobs.contracts.contract import CONTRACTS_DIR, load_contract, verified_marker
from jobs.errors import ContractViolation


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_suite_ge_accepted_is_marked_and_then_read_without_ge(tmp_path, cache):
    shutil.copy(CONTRACTS_DIR / "features.json", tmp_path / "features.json")
    text = (tmp_path / "features.json").read_bytes()
    assert not verified_marker(text).exists()
    first = load_contract("features", tmp_path)
    marker = verified_marker(text)
    assert marker.exists() and marker.is_relative_to(cache)
    assert load_contract("features", tmp_path) == first


def test_a_changed_suite_is_checked_again_and_a_broken_one_is_refused_every_time(tmp_path, cache):
    document = json.loads((CONTRACTS_DIR / "features.json").read_text())
    (tmp_path / "features.json").write_bytes(json.dumps(document).encode())
    load_contract("features", tmp_path)
    document["expectations"][0]["meta"] = "not a mapping"  # GE refuses a meta that is not a dict
    broken = json.dumps(document).encode()
    (tmp_path / "features.json").write_bytes(broken)
    for _ in range(2):
        with pytest.raises(ContractViolation, match="is not a valid Great Expectations suite"):
            load_contract("features", tmp_path)
    assert not verified_marker(broken).exists()
