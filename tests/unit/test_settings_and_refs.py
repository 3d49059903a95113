from datetime import date
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from jobs.errors import ConfigError, InvalidParameter
from jobs.lake import check_identifier
from jobs.registry import parse_model_ref
from jobs.settings import load_params
from jobs.snapshot import choose_window

ROOT = Path(__file__).resolve().parents[2]


def test_params_are_frozen_and_hashable(params):
    with pytest.raises(ValidationError):
        params.model.name = "other"
    assert len(params.digest()) == 16 and params.digest() == load_params(ROOT / "params.yaml").digest()


def test_an_unknown_or_bad_key_is_one_clear_error(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["window_dayz"] = 3
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="train.window_dayz"):
        load_params(tmp_path / "p.yaml")


@pytest.mark.parametrize("ref,expected", [
    ("models:/churn@champion", ("churn", None, "champion")),
    ("models:/churn/7", ("churn", "7", None)),
])
def test_model_references_parse(ref, expected):
    assert parse_model_ref(ref) == expected


@pytest.mark.parametrize("ref", ["/tmp/model.pkl", "models:/churn", "runs:/abc/model", "models:/x/1; rm -rf /"])
def test_only_registry_references_are_accepted(ref):
    with pytest.raises(InvalidParameter):
        parse_model_ref(ref)


@pytest.mark.parametrize("bad", ["Scores", "a-b", "x; DROP TABLE scores", "1abc", "", "a" * 64])
def test_identifiers_are_checked_before_they_reach_sql(bad):
    with pytest.raises(InvalidParameter):
        check_identifier(bad, "namespace")


def test_training_window_uses_only_labels_known_on_the_day():
    days = [date(2026, 1, d) for d in range(1, 31)]
    w = choose_window(days, as_of=date(2026, 2, 10), window_days=7, holdout_days=2, delay_days=30)
    assert (w.first, w.last, w.holdout_first) == (date(2026, 1, 5), date(2026, 1, 11), date(2026, 1, 10))
    assert w.as_of == date(2026, 2, 10)
