"""DAG files only wire: they import cleanly, document themselves, and load no pyspark."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.dags

PROBE = """
import importlib.util, json, pathlib, sys
sys.path.insert(0, "{dags}")
found = {{}}
for path in sorted(pathlib.Path("{dags}").glob("*.py")):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from airflow.sdk import DAG
    for value in vars(module).values():
        if isinstance(value, DAG):
            found[value.dag_id] = {{"doc": bool(value.doc_md), "params": sorted(value.params.keys()),
                                   "tasks": sorted(value.task_ids)}}
print(json.dumps({{"dags": found, "heavy": [m for m in ("pyspark", "mlflow", "lightgbm", "great_expectations",
                                                      "jobs", "dvc") if m in sys.modules]}}))
"""


def test_dag_files_import_without_errors_or_heavy_modules(tmp_path):
    result = subprocess.run([sys.executable, "-c", PROBE.format(dags=ROOT / "dags")], capture_output=True,
                            text=True, timeout=300, env={"AIRFLOW_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    dags = report["dags"]
    # one score_daily, monitor_performance and retrain per declared model (params.yaml: churn, spend), three shared
    assert set(dags) == {f"{kind}__{model}" for kind in ("score_daily", "monitor_performance", "retrain")
                         for model in ("churn", "spend")} | {"retro_test", "promote", "experiment"}
    assert all(d["doc"] for d in dags.values())
    assert dags["score_daily__churn"]["tasks"] == ["drift", "publish", "raise_drift_alarm", "score",
                                                   "wait_for_features"]
    assert dags["retrain__churn"]["tasks"] == ["as_of_day", "evaluate", "gate", "policy", "promote",
                                               "should_retrain", "snapshot", "train"]
    assert dags["retro_test"]["params"] == ["champion_as_of", "compare_to_production", "end", "model_name",
                                            "namespace", "start", "version"]
    assert dags["monitor_performance__churn"]["tasks"] == ["analyze_experiment", "monitor"]
    assert dags["experiment"]["tasks"] == ["change", "choose", "start", "stop"]
    assert dags["experiment"]["params"] == ["action", "effective_from", "kind", "max_days", "mde", "model_name",
                                            "primary_metric", "reason", "shares", "versions"]


def test_the_experiment_dag_offers_the_metrics_an_experiment_can_be_decided_on():
    import ast

    from jobs.core.experiment import METRICS

    tree = ast.parse((ROOT / "dags" / "experiment.py").read_text())
    [offered] = [ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "METRICS" for t in node.targets)]
    assert offered == {task: list(metrics) for task, metrics in METRICS.items()}
