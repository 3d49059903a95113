from datetime import date
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from jobs.config import load_model, load_params
from jobs.errors import ConfigError, InvalidParameter
from jobs.io.lake import check_identifier
from jobs.io.registry import parse_model_ref
from jobs.steps.snapshot import choose_window

ROOT = Path(__file__).resolve().parents[2]


def test_a_spec_is_frozen_and_hashable(spec):
    with pytest.raises(ValidationError):
        spec.name = "other"
    assert len(spec.digest()) == 16 and spec.digest() == load_model("churn", ROOT / "params.yaml").digest()


def project() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def write(tmp_path, raw: dict) -> Path:
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return tmp_path / "p.yaml"


def second_model(raw: dict, name: str = "upsell", **overrides) -> dict:
    raw["models"][name] = {**raw["models"]["churn"], "label": {"table": "upsell_labels", "column": "upsold",
                                                                "delay_days": 14}, **overrides}
    return raw


def test_every_key_a_model_sets_overrides_the_default_and_the_rest_is_inherited(tmp_path):
    raw = second_model(project(), gate={"max_degradation": 0.03}, schedule="0 6 * * *")
    params = load_params(write(tmp_path, raw))
    churn, upsell = params.model("churn"), params.model("upsell")
    assert upsell.gate.max_degradation == 0.03 and churn.gate.max_degradation == 0.01
    assert upsell.gate.bootstrap_samples == churn.gate.bootstrap_samples == 500  # merged key by key
    assert (upsell.schedule, churn.schedule) == ("0 6 * * *", "@daily")
    assert upsell.label.table == "upsell_labels" and upsell.digest() != churn.digest()


@pytest.mark.parametrize("change,expected", [
    (lambda r: r["models"]["churn"]["train"].update(window_dayz=3) if "train" in r["models"]["churn"]
     else r["models"]["churn"].update(train={"window_dayz": 3}), "model churn: train.window_dayz: unknown key"),
    (lambda r: r["models"]["churn"].pop("key"), "model churn: key: required key missing"),
    (lambda r: r["defaults"]["gate"].pop("confidence"), "model churn: gate.confidence: required key missing"),
    (lambda r: r["models"]["churn"].update(task="ranking"), "model churn: task: "),
    (lambda r: r["models"]["churn"]["trainer"].update(name="catboost"), "model churn: trainer: .*'catboost' is not a trainer"),
    (lambda r: r["models"]["churn"]["features"].update(categorical=["region", "region"]),
     "model churn: features: .*listed twice: region"),
    (lambda r: r["models"]["churn"].update(table="Features; DROP"), "model churn: table: "),
    (lambda r: r.update(modles={}), "modles: unknown key"),
    (lambda r: r.pop("models"), "models: declare at least one model"),
])
def test_a_bad_spec_is_one_error_naming_the_file_the_model_and_the_key(tmp_path, change, expected):
    raw = project()
    change(raw)
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError, match=f"^{path}: {expected}"):
        load_params(path)


def test_two_models_with_the_same_name_are_refused(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    entry = text[text.index("  churn:\n"):text.index("# the demo's synthetic upstream")]
    (tmp_path / "p.yaml").write_text(text.replace(entry, entry + entry))
    with pytest.raises(ConfigError, match="two models are named churn"):
        load_params(tmp_path / "p.yaml")


def test_a_model_whose_table_has_no_contract_is_refused_naming_the_key(tmp_path):
    params = load_params(write(tmp_path, second_model(project(), table="upsell_features")))
    params.check_contracts(params.model("churn"))
    with pytest.raises(ConfigError, match="model upsell: table: there is no contract .*upsell_features.json"):
        params.check_contracts(params.model("upsell"))
    with pytest.raises(ConfigError, match="model upsell: label.table: there is no contract .*upsell_labels.json"):
        params.check_contracts(params.model("upsell").model_copy(update={"table": "features"}))


def test_a_command_names_its_model_when_several_are_declared(tmp_path):
    params = load_params(write(tmp_path, second_model(project())))
    with pytest.raises(ConfigError, match="declares the models churn, spend, upsell: name one with --model-name"):
        params.model()
    with pytest.raises(ConfigError, match="no model 'fraud' is declared"):
        params.model("fraud")
    alone = project()
    alone["models"] = {"churn": alone["models"]["churn"]}
    assert load_params(write(tmp_path, alone)).model().name == "churn"  # one declared: the default


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
