"""Every DAG run with dag.test() on small data, against the real S3 and MLflow servers and spark-submit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import MONITOR, RETRAIN, ROOT, SCORE_DAILY
from tests.dags.conftest import MODEL, RUN, dag_test

pytestmark = pytest.mark.dags


def test_retrain_trains_gates_and_promotes_the_first_champion(trained, dag_world, services):
    from jobs.io import registry

    assert trained["state"] == "success", trained
    assert all(state == "success" for state in trained["tasks"].values()), trained["tasks"]
    client = registry.client(services.config["MLFLOW_TRACKING_URI"])
    champion = registry.holder(client, MODEL, registry.CHAMPION)
    assert champion.version == "1" and champion.tags["airflow_run_id"].startswith("manual__")
    assert champion.tags["dvc_record"] == f"snapshots/{MODEL}/2026-02-09.dvc"  # each model's snapshots apart


def test_retrain_stops_after_the_policy_when_it_says_no(trained, dag_world):
    # the champion is one day old and nothing drifted: no retraining, and the reason is logged
    result = dag_test(dag_world, RETRAIN, {"as_of": "2026-02-10", "force": False})
    assert result["state"] == "success"
    assert result["tasks"]["policy"] == "success" and result["tasks"]["should_retrain"] == "success"
    assert result["tasks"]["snapshot"] == "skipped" and result["tasks"]["promote"] == "skipped"


def test_score_daily_scores_the_interval_day_and_measures_drift(trained, dag_world):
    # a run dated 2026-02-11 covers the data interval [2026-02-10, 2026-02-11): it scores 2026-02-10
    result = dag_test(dag_world, SCORE_DAILY, {}, logical="2026-02-11T00:00:00")
    assert result["state"] == "success", result
    assert result["tasks"]["raise_drift_alarm"] in ("success", "skipped")
    rows = dag_world.sql("SELECT (SELECT count(*) FROM scores WHERE dt = DATE'2026-02-10') AS n, "
                         "(SELECT min(model_version) FROM scores WHERE dt = DATE'2026-02-10') AS v, "
                         "(SELECT count(*) FROM drift_metrics WHERE dt = DATE'2026-02-10') AS drift_rows")
    assert rows[0]["n"] == 1500 and rows[0]["v"] == "1" and rows[0]["drift_rows"] > 60


def test_monitor_performance_skips_a_day_with_nothing_to_measure(trained, dag_world):
    result = dag_test(dag_world, MONITOR, {}, logical="2026-02-12T00:00:00")
    assert result["state"] == "success", result


def test_retro_test_writes_only_to_its_namespace(trained, dag_world):
    production = "SELECT dt, count(*) AS n, max(run_id) AS r FROM scores GROUP BY dt ORDER BY dt"
    before = dag_world.sql(production)
    result = dag_test(dag_world, "retro_test", {"model_name": MODEL, "version": 1, "champion_as_of": None,
                                                 "start": "2026-02-10", "end": "2026-02-11",
                                                 "namespace": "retro_dagtest", "compare_to_production": True})
    assert result["state"] == "success", result
    after = dag_world.sql(f"SELECT * FROM ({production}) UNION ALL SELECT dt, count(*) AS n, 'retro' AS r "
                          "FROM retro_dagtest.scores GROUP BY dt ORDER BY r, dt")
    assert sorted((r["dt"], r["n"], r["r"]) for r in after if r["r"] != "retro") == \
        sorted((r["dt"], r["n"], r["r"]) for r in before)  # production untouched
    assert sorted((r["dt"], r["n"]) for r in after if r["r"] == "retro") == [("2026-02-10", 1500), ("2026-02-11", 1500)]


def test_promote_refuses_a_rollback_without_a_previous_champion(trained, dag_world):
    result = dag_test(dag_world, "promote", {"action": "rollback", "model_name": MODEL, "version": None,
                                              "reason": "dag test", "effective_from": None, "force": False})
    assert result["state"] == "failed" and result["tasks"]["move_alias"] == "failed"


def test_an_invalid_parameter_is_refused_before_any_task_runs(dag_world):
    result = subprocess.run([sys.executable, "-c", RUN.format(
        dags=ROOT / "dags", module="retro_test", dag_id="retro_test", logical=None,
        conf={"model_name": MODEL, "version": 1, "start": "2026-02-30", "end": "2026-02-11",
              "namespace": "retro_x"})], env=dag_world.env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "Invalid input for param start" in result.stderr and "2026-02-30" in result.stderr
