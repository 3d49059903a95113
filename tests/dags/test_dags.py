"""Every DAG run with dag.test() on small data, against the real S3 and MLflow servers and spark-submit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.dags.conftest import MODEL

pytestmark = pytest.mark.dags

RUN = """
import json, sys
from datetime import datetime, timezone
sys.path.insert(0, "{dags}")
import {module} as m
logical = {logical!r}
run = m.{module}_dag.test(run_conf={conf!r},
                          logical_date=datetime.fromisoformat(logical).replace(tzinfo=timezone.utc) if logical else None)
states = {{ti.task_id: ti.state for ti in run.get_task_instances()}}
print("RESULT " + json.dumps({{"state": str(run.state), "tasks": {{k: str(v) for k, v in states.items()}}}}))
"""


def dag_test(world, module: str, conf: dict | None = None, logical: str | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", RUN.format(dags=ROOT / "dags", module=module, conf=conf or {},
                                                            logical=logical)],
                          env=world.env, capture_output=True, text=True, timeout=1800, cwd=world.root)
    log = world.root / f"dag_test_{module}.log"
    log.write_text(done.stdout + done.stderr)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, f"no result; see {log}: " + (done.stdout + done.stderr)[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def trained(dag_world):
    """The retrain DAG, forced on 2026-02-09: the first champion."""
    return dag_test(dag_world, "retrain", {"as_of": "2026-02-09", "force": True})


def test_retrain_trains_gates_and_promotes_the_first_champion(trained, dag_world, services):
    from jobs import registry

    assert trained["state"] == "success", trained
    assert all(state == "success" for state in trained["tasks"].values()), trained["tasks"]
    client = registry.client(services.config["MLFLOW_TRACKING_URI"])
    champion = registry.holder(client, MODEL, registry.CHAMPION)
    assert champion.version == "1" and champion.tags["airflow_run_id"].startswith("manual__")
    assert champion.tags["dvc_record"] == "snapshots/2026-02-09.dvc"


def test_retrain_stops_after_the_policy_when_it_says_no(trained, dag_world):
    # the champion is one day old and nothing drifted: no retraining, and the reason is logged
    result = dag_test(dag_world, "retrain", {"as_of": "2026-02-10", "force": False})
    assert result["state"] == "success"
    assert result["tasks"]["policy"] == "success" and result["tasks"]["should_retrain"] == "success"
    assert result["tasks"]["snapshot"] == "skipped" and result["tasks"]["promote"] == "skipped"


def test_score_daily_scores_the_interval_day_and_measures_drift(trained, dag_world):
    result = dag_test(dag_world, "score_daily", {}, logical="2026-02-11T00:00:00")
    assert result["state"] == "success", result
    day = result_day(dag_world)
    rows = dag_world.sql(f"SELECT count(*) AS n, min(model_version) AS v FROM scores WHERE dt = DATE'{day}'")
    assert rows == [{"n": 1500, "v": "1"}]
    assert result["tasks"]["raise_drift_alarm"] in ("success", "skipped")
    assert dag_world.sql(f"SELECT count(*) AS n FROM drift_metrics WHERE dt = DATE'{day}'")[0]["n"] > 60


def result_day(world) -> str:
    days = [r["dt"] for r in world.sql("SELECT DISTINCT dt FROM scores ORDER BY dt")]
    assert days, "nothing was scored"
    return days[-1]


def test_monitor_performance_skips_a_day_with_nothing_to_measure(trained, dag_world):
    result = dag_test(dag_world, "monitor_performance", {}, logical="2026-02-12T00:00:00")
    assert result["state"] == "success", result


def test_retro_test_writes_only_to_its_namespace(trained, dag_world):
    before = dag_world.sql("SELECT dt, count(*) AS n, max(run_id) AS r FROM scores GROUP BY dt ORDER BY dt")
    result = dag_test(dag_world, "retro_test", {"model_name": MODEL, "version": 1, "champion_as_of": None,
                                                 "start": "2026-02-10", "end": "2026-02-11",
                                                 "namespace": "retro_dagtest", "compare_to_production": True})
    assert result["state"] == "success", result
    assert dag_world.sql("SELECT dt, count(*) AS n, max(run_id) AS r FROM scores GROUP BY dt ORDER BY dt") == before
    retro = dag_world.sql("SELECT dt, count(*) AS n FROM retro_dagtest.scores GROUP BY dt ORDER BY dt")
    assert [r["n"] for r in retro] == [1500, 1500]


def test_promote_refuses_a_rollback_without_a_previous_champion(trained, dag_world):
    result = dag_test(dag_world, "promote", {"action": "rollback", "model_name": MODEL, "version": None,
                                              "reason": "dag test", "effective_from": None, "force": False})
    assert result["state"] == "failed" and result["tasks"]["move_alias"] == "failed"


def test_an_invalid_parameter_is_refused_before_any_task_runs(dag_world):
    result = subprocess.run([sys.executable, "-c", RUN.format(
        dags=ROOT / "dags", module="retro_test", logical=None,
        conf={"model_name": MODEL, "version": 1, "start": "2026-02-30", "end": "2026-02-11",
              "namespace": "retro_x"})], env=dag_world.env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "Invalid input for param start" in result.stderr and "2026-02-30" in result.stderr
