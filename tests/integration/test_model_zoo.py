"""Any model, declared in params alone: a third model with a custom trainer runs the whole loop with no change in jobs/."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import yaml

from jobs.config import load_params
from jobs.steps import drift, monitor
from jobs.steps import score as scoring
from tests.conftest import ROOT
from tests.integration.conftest import train_version

pytestmark = pytest.mark.integration

SCORED = date(2026, 1, 28)  # its labels are known by 2026-02-27, inside the world's 60 days


def test_a_third_model_from_a_temporary_params_file_runs_the_whole_loop(world, lake, env, tmp_path):
    # given a params file declaring a third model on the churn tables, trained by a team's own code
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["models"]["tenure_bands"] = {**raw["models"]["churn"],
                                     "trainer": {"name": "tests.custom_trainers:tenure_bands", "params": {"bands": 6}},
                                     "gate": {"max_overfit_gap": 0.2}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params(tmp_path / "params.yaml")
    third = params.check_contracts(params.model("tenure_bands"))
    assert third.trainer.kind == "custom" and third.gate.max_degradation == 0.01  # the rest from the defaults
    # when it goes through snapshot, train, evaluate and the gate, then scoring, drift and monitoring
    trained, verdict, outcome = train_version(third, lake, env, date(2026, 2, 10), env.dvc_root / "data" / "zoo")
    assert verdict.passed and outcome["promoted"], verdict.reasons
    scored = scoring.run(third, lake, lake, env, SCORED, model_ref=trained.model.uri)
    summary = drift.run(third, lake, env, SCORED)
    measured = monitor.run(third, lake, SCORED + timedelta(days=third.label.delay_days))
    # then every step worked on its own partitions, with the pyfunc model the trainer returned
    assert scored["input_rows"] == scored["scores_rows"] + scored["quarantined_rows"] == 4000
    day = lake.read_partition("scores", SCORED, third.partition)
    assert day.count() == 4000 and {r[0] for r in day.select("model_name").distinct().collect()} == {"tenure_bands"}
    assert summary["model"] == trained.model.uri and 0 <= summary["share_drifted"] <= 1
    [result] = measured["results"]
    assert (result["model_name"], result["task"]) == ("tenure_bands", "binary") and 0.5 < result["auc"] < 1
    assert lake.manifest("scores", SCORED, third.partition)["model_uri"] == trained.model.uri
