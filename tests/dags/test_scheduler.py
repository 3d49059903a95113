"""The DAGs through the real scheduler: REST API runs, backfills, the trigger form in the UI, a scheduler restart.

The Airflow components run as `make up` starts them (api-server, scheduler,
dag-processor, triggerer; LocalExecutor, SQLite) on free ports, over the DAG world's
lake and registry.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
import requests

from infra.airflow_api import AirflowClient, AirflowError
from infra.stack import Stack, free_ports
from tests.conftest import MONITOR, RETRAIN, SCORE_DAILY, SPEND, SPEND_DAGS
from tests.dags.conftest import BIN, MODEL

pytestmark = pytest.mark.dags

DAYS = [f"2026-02-{d}" for d in range(11, 19)]  # eight days of the champion's, v1 (effective from 2026-02-10)
CHECKSUM = ("SELECT dt, count(*) AS n, max(model_version) AS v, "
            "sum(cast(hash(subscriber_id, score, model_version, ood_features) AS bigint)) AS h "
            f"FROM scores WHERE model = '{MODEL}' AND dt BETWEEN DATE'{DAYS[0]}' AND DATE'{DAYS[-1]}' "
            "GROUP BY dt ORDER BY dt")
SCORED_AT = "SELECT cast(max(scored_at) AS string) AS t FROM scores WHERE dt = DATE'2026-02-12'"
SCORED_BETWEEN = ("SELECT cast(min(scored_at) AS string) AS first, cast(max(scored_at) AS string) AS last FROM scores "
                  f"WHERE model = '{MODEL}' AND dt BETWEEN DATE'{DAYS[0]}' AND DATE'{DAYS[-1]}'")


@pytest.fixture(scope="module")
def airflow(services, dag_world, trained):
    """Airflow's components on free ports, over the DAG world (its champion trained by the retrain DAG)."""
    ports = free_ports(["BATCHLOOP_AIRFLOW_PORT"])
    url = f"http://127.0.0.1:{ports['BATCHLOOP_AIRFLOW_PORT']}"
    config = {**services.config, "BATCHLOOP_AIRFLOW_PORT": str(ports["BATCHLOOP_AIRFLOW_PORT"]),
              "BATCHLOOP_AIRFLOW_DB": "airflow_scheduler",
              "BATCHLOOP_AIRFLOW_URL": url, "BATCHLOOP_STATE_DIR": dag_world.env["BATCHLOOP_STATE_DIR"],
              **{k: dag_world.env[k] for k in ("BATCHLOOP_DVC_ROOT", "BATCHLOOP_PARAMS", "BATCHLOOP_SPARK_REMOTE",
                                              "BATCHLOOP_SPARK_CONNECT_PORT", "BATCHLOOP_LAKE_GC_GRACE_MINUTES",
                                              "BATCHLOOP_LAKE_ROOT", "BATCHLOOP_METASTORE_DB",
                                              "BATCHLOOP_LINEAGE")}}
    stack = Stack(config)
    stack.up({"airflow"})  # its Spark steps are clients of the world's Connect server
    client = AirflowClient.from_password_file(url, stack.password_file())
    client.wait_for_dags([SCORE_DAILY, RETRAIN, "retro_test", "promote", "experiment", MONITOR, *SPEND_DAGS])
    yield stack, client
    stack.down({"airflow"})


def spans(client: AirflowClient, dag_id: str, run_id: str, task_id: str) -> tuple[str, str]:
    """When a task of a run started and ended, as the scheduler recorded it."""
    [ti] = [t for t in client.task_instances(dag_id, run_id) if t["task_id"] == task_id]
    return ti["start_date"], ti["end_date"]


def most_at_once(intervals: list[tuple[str, str]]) -> int:
    """The largest number of the intervals open at one moment."""
    events = sorted([(datetime.fromisoformat(a), 1) for a, _ in intervals] +
                    [(datetime.fromisoformat(b), -1) for _, b in intervals])
    open_, most = 0, 0
    for _, step in events:
        open_ += step
        most = max(most, open_)
    return most


def test_a_backfill_of_eight_days_with_several_active_runs_gives_the_rows_of_the_days_scored_one_by_one(
        airflow, dag_world, artifacts):
    # given the scheduler, a champion from 2026-02-10, and eight days scored one by one (the CLI, one after another)
    stack, client = airflow
    started = time.monotonic()
    for day in DAYS:
        dag_world.cli("score", "--date", day, "--model", f"models:/{MODEL}/1", "--no-shadow")
    one_by_one_seconds = time.monotonic() - started
    one_by_one = dag_world.sql(CHECKSUM)
    assert [(r["dt"], r["n"], r["v"]) for r in one_by_one] == [(d, 1500, "1") for d in DAYS]
    before = dag_world.sql(SCORED_BETWEEN)[0]
    client.unpause(SCORE_DAILY)
    # when a backfill of the eight days is created through the REST API, three runs active at a time
    started = time.monotonic()
    backfill = client.backfill(SCORE_DAILY, DAYS[0], DAYS[-1], max_active_runs=3)
    client.wait_backfill(backfill["id"], timeout=1800)  # closed once every run of it has ended
    backfill_seconds = time.monotonic() - started
    runs = [r for r in client.runs(SCORE_DAILY) if r["run_type"] == "backfill"]
    # then every day ran every step, several runs (and their scoring drivers) at once on the shared metastore
    assert [r["state"] for r in runs] == ["success"] * len(DAYS), runs
    for run in runs:
        states = client.task_states(SCORE_DAILY, run["dag_run_id"])
        assert {k: v for k, v in states.items() if k != "raise_drift_alarm"} == {
            "wait_for_features": "success", "score": "success", "drift": "success", "publish": "success"}
    at_once = most_at_once([(r["start_date"], r["end_date"]) for r in runs])
    drivers = most_at_once([spans(client, SCORE_DAILY, r["dag_run_id"], "score") for r in runs])
    assert at_once >= 2 and drivers >= 2, (at_once, drivers)
    # and each day was scored again, into exactly the rows of the days scored one by one
    after = dag_world.sql(SCORED_BETWEEN)[0]
    assert after["first"] > before["last"], (before, after)
    rows = dag_world.sql(CHECKSUM)
    assert rows == one_by_one
    (artifacts / "backfill_eight_days.json").write_text(json.dumps({
        "days": len(DAYS), "rows_per_day": 1500, "most_runs_at_once": at_once, "most_scoring_steps_at_once": drivers,
        "backfill_seconds": round(backfill_seconds), "one_by_one_cli_score_seconds": round(one_by_one_seconds),
        "note": "the backfill runs every step (sensor, score, drift, publish); the one-by-one runs score only"},
        indent=1))
    (Path(dag_world.root) / "first_backfill.json").write_text(json.dumps(
        {"rows": rows, "scored_at": dag_world.sql(SCORED_AT)[0]["t"]}))


def test_the_lineage_events_show_what_each_step_of_a_days_run_read_and_wrote(airflow, dag_world):
    # given the backfill's runs: Airflow's OpenLineage provider wrote an event as each task started and ended, the
    # Connect server's OpenLineage listener one for each query, into the world's lineage folder
    day = DAYS[0]
    # when `batchloop lineage --events` is asked about the day
    found = dag_world.cli("lineage", "--events", "--date", day, "--model-name", MODEL)
    # then it shows the day's score_daily run, step by step, and what each step's queries read and wrote
    assert found["events"]["airflow"] > 0 and found["events"]["spark"] > 0 and found["events"]["unreadable_lines"] == 0
    [run] = [r for r in found["runs"] if r["dag_id"] == SCORE_DAILY]
    steps = {s["task_id"]: s for s in run["steps"]}
    assert {"wait_for_features", "score", "drift", "publish"} <= steps.keys()
    assert {s["state"] for t, s in steps.items() if t != "raise_drift_alarm"} == {"success"}
    with dag_world.session() as spark:  # where the metastore says the day's scores are
        scores = spark.sql(f"DESCRIBE FORMATTED batchloop.scores PARTITION (model='{MODEL}', dt='{day}')") \
            .where("col_name = 'Location'").first()["data_type"].split("://", 1)[1]
    score, drift = steps["score"], steps["drift"]
    assert score["spark_queries"] > 0 and drift["spark_queries"] > 0
    assert any("/batchloop.db/features" in d for d in score["inputs"]), score["inputs"]
    assert any(scores in d for d in score["outputs"]), (scores, score["outputs"])  # the very version it wrote
    assert any(scores in d for d in drift["inputs"]) and any("/batchloop.db/drift_metrics" in d
                                                             for d in drift["outputs"]), drift
    # and nothing of another day: the steps of the same DAG's other runs are not mixed in
    assert not any("dt=" in d and f"dt={day}" not in d for d in score["inputs"] + score["outputs"]), score
    assert steps["publish"]["spark_queries"] == 0  # no Spark in it


def test_running_the_backfill_again_changes_nothing(airflow, dag_world):
    # given the days scored by the first backfill
    stack, client = airflow
    first = json.loads((Path(dag_world.root) / "first_backfill.json").read_text())
    # when `airflow backfill create` runs a day again, with the champion's version pinned in the run conf
    done = subprocess.run([str(BIN / "airflow"), "backfill", "create", "--dag-id", SCORE_DAILY,
                           "--from-date", "2026-02-12", "--to-date", "2026-02-12", "--reprocess-behavior",
                           "completed", "--dag-run-conf", json.dumps({"model": f"models:/{MODEL}/1"})],
                          env=stack.env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline:
        runs = [r for r in client.runs(SCORE_DAILY) if r["run_type"] == "backfill"
                and r["logical_date"].startswith("2026-02-12")]
        if runs and runs[-1]["state"] in ("success", "failed") and runs[-1]["conf"].get("model"):
            break
        time.sleep(5)
    assert runs[-1]["state"] == "success"
    # then the day was scored again, into the same rows and counts on both days, one partition per day
    assert dag_world.sql(SCORED_AT)[0]["t"] > first["scored_at"]
    assert dag_world.sql(CHECKSUM) == first["rows"]


def test_a_second_model_of_another_kind_is_trained_scored_drifted_and_monitored_through_the_scheduler(
        airflow, dag_world):
    # given churn's scored days and the spend model (a scikit-learn regression pipeline on the usage table)
    stack, client = airflow
    score, retrain, monitor = SPEND_DAGS
    churn_before = dag_world.sql(CHECKSUM)
    for dag_id in SPEND_DAGS:
        client.unpause(dag_id)
    # when its retrain DAG is triggered, its day 2026-01-15 scored (its first version pinned: the day precedes its
    # first champion) and the monitor runs on 2026-02-14, the day that day's labels matured
    run_id = client.trigger(retrain, {"as_of": "2026-02-09", "force": True})
    assert client.wait(retrain, run_id, timeout=1800) == "success", client.task_states(retrain, run_id)
    trained = client.xcom(retrain, run_id, "train")
    assert trained["model"] == f"models:/{SPEND}/1" and 0 < trained["holdout_rmse"] < 30 and trained["holdout_r2"] > 0.5
    assert client.xcom(retrain, run_id, "promote")["promoted"] is True
    for dag_id, day, conf in ((score, "2026-01-15", {"model": f"models:/{SPEND}/1"}), (monitor, "2026-02-14", None)):
        backfill = client.backfill(dag_id, day, day, conf=conf)
        client.wait_backfill(backfill["id"], timeout=1200)
        [run] = [r for r in client.runs(dag_id) if r["run_type"] == "backfill"]
        assert run["state"] == "success", client.task_states(dag_id, run["dag_run_id"])
    # then its rows are the model=spend_dags partitions, and churn's rows are untouched
    [scored] = dag_world.sql("SELECT model, count(*) AS n, min(model_version) AS v, min(score) AS lo FROM scores "
                             "WHERE dt = DATE'2026-01-15' GROUP BY model")
    assert (scored["model"], scored["n"], scored["v"]) == (SPEND, 1500, "1") and scored["lo"] > 0
    [drift] = dag_world.sql("SELECT count(*) AS n, count(DISTINCT feature) AS f FROM drift_metrics "
                            f"WHERE model = '{SPEND}' AND dt = DATE'2026-01-15'")
    assert drift["n"] > 0 and drift["f"] >= 12  # 11 features, the score and the dataset rows
    [measured] = dag_world.sql("SELECT task, source, model_version, rows, rmse, r2, auc FROM performance_metrics "
                               f"WHERE model = '{SPEND}' AND dt = DATE'2026-01-15'")
    assert (measured["task"], measured["source"], measured["model_version"], measured["rows"]) == (
        "regression", "scores", "1", 1500)
    assert 0 < measured["rmse"] < 30 and measured["r2"] > 0.5 and measured["auc"] is None
    assert dag_world.sql(CHECKSUM) == churn_before


def test_two_models_score_the_same_day_at_once_each_into_its_own_partition(airflow, dag_world):
    # given both models' champions (churn's v1, spend's v1 from the test before) and churn's scored days
    stack, client = airflow
    day = "2026-02-19"
    churn_before = dag_world.sql(CHECKSUM)
    # when both models' score_daily runs of one day are created together
    dags = (SCORE_DAILY, SPEND_DAGS[0])
    backfills = [client.backfill(dag_id, day, day) for dag_id in dags]
    for backfill in backfills:
        client.wait_backfill(backfill["id"], timeout=1200)
    runs = [next(r for r in client.runs(dag_id) if r["run_type"] == "backfill" and r["logical_date"].startswith(day))
            for dag_id in dags]
    # then both succeeded, their scoring steps at the same time (two drivers on the one metastore)
    assert [r["state"] for r in runs] == ["success", "success"], [
        client.task_states(d, r["dag_run_id"]) for d, r in zip(dags, runs, strict=True)]
    scoring = [spans(client, d, r["dag_run_id"], "score") for d, r in zip(dags, runs, strict=True)]
    assert most_at_once(scoring) == 2, scoring
    # and each model's day is its own partition with every row, churn's other days untouched
    rows = dag_world.sql("SELECT model, count(*) AS n, min(model_version) AS v, count(DISTINCT subscriber_id) AS k "
                         f"FROM scores WHERE dt = DATE'{day}' GROUP BY model ORDER BY model")
    assert [(r["model"], r["n"], r["v"], r["k"]) for r in rows] == [(MODEL, 1500, "1", 1500), (SPEND, 1500, "1", 1500)]
    assert dag_world.sql(CHECKSUM) == churn_before


def test_a_bad_parameter_is_refused_at_once_naming_it(airflow):
    stack, client = airflow
    with pytest.raises(AirflowError, match="HTTP 400.*param start.*'2026-02-30' is not a 'date'"):
        client.trigger("retro_test", {"model_name": MODEL, "version": 1, "start": "2026-02-30",
                                      "end": "2026-02-12", "namespace": "retro_bad"})
    with pytest.raises(AirflowError, match="HTTP 400.*param namespace"):
        client.trigger("retro_test", {"model_name": MODEL, "version": 1, "start": "2026-02-11",
                                      "end": "2026-02-12", "namespace": "batchloop"})


def test_the_api_requires_a_login(airflow):
    stack, _ = airflow
    url = stack.config["BATCHLOOP_AIRFLOW_URL"]
    assert requests.get(f"{url}/api/v2/dags", timeout=10).status_code == 401
    assert requests.post(f"{url}/api/v2/dags/retro_test/dagRuns", json={"logical_date": None},
                         timeout=10).status_code == 401
    assert requests.post(f"{url}/auth/token", json={"username": "admin", "password": "wrong"},
                         timeout=10).status_code in (401, 403)


SPARK_STEPS = ("score", "drift")


def test_the_run_completes_when_the_scheduler_is_killed_and_restarted(airflow, dag_world):
    # given a run whose Spark step is under way
    stack, client = airflow
    client.unpause(SCORE_DAILY)
    # (a manual run scores the last complete day before its date: 2026-02-13; at 06:00, as the backfill has
    # a run dated 2026-02-14 already)
    run_id = client.trigger(SCORE_DAILY, {}, logical_date="2026-02-14T06:00:00Z")
    deadline = time.monotonic() + 600
    # a warm step takes seconds: look often, for any of the run's Spark steps, and stop at once if the
    # run ended before one was seen running (then the test proved nothing and says so)
    while True:
        states = client.task_states(SCORE_DAILY, run_id)
        if any(states.get(t) == "running" for t in SPARK_STEPS):
            break
        assert states.get(SPARK_STEPS[-1]) not in ("success", "failed"), \
            f"the run's Spark steps ended between two looks: {states}"
        assert time.monotonic() < deadline, states
        time.sleep(0.3)
    scheduler = next(s for s in stack.airflow() if s.name == "airflow-scheduler")
    # when the scheduler process is killed outright and started again
    killed = stack.pid(scheduler)
    os.kill(killed, signal.SIGKILL)
    time.sleep(3)
    stack.start(scheduler)
    try:
        # then the run still ends in success with the whole day scored
        assert client.wait(SCORE_DAILY, run_id, timeout=1500) == "success", \
            client.task_states(SCORE_DAILY, run_id)
        rows = dag_world.sql("SELECT count(*) AS n FROM scores WHERE dt = DATE'2026-02-13'")
        assert rows == [{"n": 1500}]
    finally:
        # the killed scheduler's LocalExecutor workers outlive it in its process group: stop them too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(killed, signal.SIGKILL)


INJECTIONS = ["x'; DROP TABLE scores; --", "batchloop.scores", "../../etc/passwd", "$(touch /tmp/batchloop_pwned)",
              "`touch /tmp/batchloop_pwned`", "{{ 7 * 7 }}", "models:/churn/1; rm -rf /", "2026-02-10' OR '1'='1",
              "retro_x; DROP DATABASE batchloop", "retro_x`"]
STRING_PARAMS = {  # every string parameter the DAGs take, with a valid value for the others
    SCORE_DAILY: {"model": {}},
    RETRAIN: {"as_of": {}},
    "retro_test": {p: {"model_name": MODEL, "version": 1, "start": "2026-02-11", "end": "2026-02-11",
                       "namespace": "retro_inj"} for p in ("model_name", "champion_as_of", "start", "end", "namespace")},
    "promote": {p: {"action": "promote", "model_name": MODEL, "version": 1, "reason": "injection test"}
                for p in ("action", "model_name", "effective_from")},
    "experiment": {p: {"action": "start", "model_name": MODEL, "kind": "canary", "versions": "1,2", "shares": "0.9,0.1",
                       "effective_from": "2026-06-01"}
                   for p in ("action", "model_name", "kind", "versions", "shares", "primary_metric", "effective_from")},
}


def test_injection_strings_through_every_parameter_are_refused_before_any_work(airflow):
    stack, client = airflow
    refused = 0
    for dag_id, params in STRING_PARAMS.items():
        for name, others in params.items():
            for value in INJECTIONS:
                with pytest.raises(AirflowError, match=f"HTTP 400.*param {name}"):
                    client.trigger(dag_id, {**others, name: value})
                refused += 1
    assert refused == len(INJECTIONS) * sum(len(p) for p in STRING_PARAMS.values())


def test_free_text_reaches_the_command_as_one_literal_argument(airflow):
    # the promotion reason is free text: it is passed as one argument, never to a shell or re-rendered
    stack, client = airflow
    client.unpause("promote")
    reason = "{{ 7 * 7 }} $(touch /tmp/batchloop_pwned); DROP TABLE scores"
    run_id = client.trigger("promote", {"action": "promote", "model_name": MODEL, "version": 1, "reason": reason})
    assert client.wait("promote", run_id, timeout=600) == "success"
    ti = client.call("GET", f"/dags/promote/dagRuns/{run_id}/taskInstances/move_alias")
    assert reason in json.dumps(ti["rendered_fields"]) and "49" not in json.dumps(ti["rendered_fields"])
    assert not Path("/tmp/batchloop_pwned").exists()


def test_every_airflow_server_listens_on_loopback_only(airflow):
    from tests.integration.test_stack import LOOPBACK, listening_addresses

    stack, _ = airflow
    for service in stack.airflow():
        pid = stack.pid(service)
        assert pid, f"{service.name} is not running"
        assert listening_addresses(pid) <= LOOPBACK, service.name
    assert listening_addresses(stack.pid(stack.airflow()[0])) & LOOPBACK  # the API server does listen


@pytest.fixture
def browser(artifacts):
    """Headless Chromium (Debian's chromium and chromium-driver), screenshots kept in tests/artifacts."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--window-size=1400,1100", "--lang=en-US"):
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService("/usr/bin/chromedriver"))
    yield driver
    driver.quit()


def log_in(driver, stack) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    password = json.loads(stack.password_file().read_text())["admin"]
    driver.get(f"{stack.config['BATCHLOOP_AIRFLOW_URL']}/auth/login")
    WebDriverWait(driver, 60).until(ec.presence_of_element_located((By.NAME, "username"))).send_keys("admin")
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(driver, 60).until(lambda d: "/auth/login" not in d.current_url)


def open_trigger_form(driver, stack, dag_id: str, field: str = "element_namespace"):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{stack.config['BATCHLOOP_AIRFLOW_URL']}/dags/{dag_id}")
    WebDriverWait(driver, 60).until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, "[data-testid=trigger-dag-button]"))).click()
    return WebDriverWait(driver, 60).until(ec.presence_of_element_located((By.NAME, field)))


def fill(driver, name: str, keys: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element(By.NAME, name)
    field.click()
    if field.get_attribute("type") != "date":
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.DELETE)
    field.send_keys(keys)


def submit(driver, screenshot: Path) -> str:
    """Keep a screenshot of the filled-in trigger form, submit it, and return the run it created."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.save_screenshot(str(screenshot))
    driver.find_element(By.CSS_SELECTOR, "[data-testid=trigger-dag-submit]").click()
    WebDriverWait(driver, 60).until(lambda d: "/runs/" in d.current_url)
    return driver.current_url.rstrip("/").split("/runs/")[1].split("/")[0]


def test_a_retro_test_is_triggered_from_the_ui_form_and_succeeds(airflow, browser, dag_world, artifacts):

    stack, client = airflow
    production = dag_world.sql(CHECKSUM)
    # given a logged-in user on the retro_test trigger form
    log_in(browser, stack)
    open_trigger_form(browser, stack, "retro_test")
    # when they fill in a valid request and submit it
    # the model is a choice among the declared ones; the world's only model is preselected
    fill(browser, "element_version", "1")
    fill(browser, "element_start", "02112026")
    fill(browser, "element_end", "02112026")
    fill(browser, "element_namespace", "retro_browser")
    run_id = submit(browser, artifacts / "ui_retro_test_form.png")
    # then the run succeeds, writes to its namespace, and production is untouched
    assert client.wait("retro_test", run_id, timeout=900) == "success"
    browser.refresh()
    time.sleep(3)
    browser.save_screenshot(str(artifacts / "ui_retro_test_run.png"))
    assert dag_world.sql("SELECT count(*) AS n FROM retro_browser.scores") == [{"n": 1500}]
    assert dag_world.sql(CHECKSUM) == production


def test_an_invalid_date_or_namespace_in_the_ui_form_is_refused(airflow, browser, artifacts):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    stack, client = airflow
    before = len(client.runs("retro_test"))
    log_in(browser, stack)
    open_trigger_form(browser, stack, "retro_test")
    fill(browser, "element_version", "1")
    # when the first day is a date that does not exist, the form marks it and will not submit
    fill(browser, "element_start", "02302026")
    submit = browser.find_element(By.CSS_SELECTOR, "[data-testid=trigger-dag-submit]")
    WebDriverWait(browser, 30).until(lambda d: not submit.is_enabled())
    browser.save_screenshot(str(artifacts / "ui_retro_test_invalid_date.png"))
    assert not browser.execute_script("return arguments[0].validity.valid",
                                      browser.find_element(By.NAME, "element_start"))
    # when, in the form opened again, the date is right but the namespace is production's,
    # the API refuses it, naming the parameter
    open_trigger_form(browser, stack, "retro_test")
    fill(browser, "element_version", "1")
    fill(browser, "element_start", "02112026")
    fill(browser, "element_namespace", "batchloop")
    submit = browser.find_element(By.CSS_SELECTOR, "[data-testid=trigger-dag-submit]")
    WebDriverWait(browser, 30).until(lambda d: submit.is_enabled())
    submit.click()
    alert = WebDriverWait(browser, 60).until(ec.visibility_of_element_located(
        (By.CSS_SELECTOR, "[data-testid=error-alert]")))
    browser.save_screenshot(str(artifacts / "ui_retro_test_invalid_namespace.png"))
    assert "Invalid input for param namespace" in alert.text
    # and no run was created
    assert len(client.runs("retro_test")) == before


def experiment_events(dag_world) -> list[dict]:
    return [e for x in dag_world.cli("experiment", "show", "--model-name", MODEL)["experiments"] for e in x["events"]]


@pytest.fixture(scope="module")
def second_version(dag_world):
    """A second registered version of the world's model (v1's files again), so that an experiment has two arms;
    no alias moves."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=dag_world.env["MLFLOW_TRACKING_URI"])
    first = client.get_model_version(MODEL, "1")
    return client.create_model_version(MODEL, first.source, run_id=first.run_id, tags=first.tags,
                                       model_id=first.model_id or first.source.removeprefix("models:/")).version


def test_a_bad_experiment_parameter_is_refused_before_anything_is_recorded(airflow, dag_world, second_version):
    stack, client = airflow
    client.unpause("experiment")
    before = experiment_events(dag_world)
    start = {"action": "start", "model_name": MODEL, "kind": "canary", "effective_from": "2026-06-01"}
    # a metric that is not one: refused by the API when the run is asked for, naming the parameter
    with pytest.raises(AirflowError, match="HTTP 400.*param primary_metric"):
        client.trigger("experiment", {**start, "versions": "1,2", "shares": "0.9,0.1", "primary_metric": "accuracy"})
    # a metric the binary model does not have, shares that do not sum to one, an unknown version: the run's first
    # step refuses them before anything is recorded, without retries
    for conf, message in (({"versions": "1,2", "shares": "0.9,0.1", "primary_metric": "rmse"}, "for a binary model"),
                          ({"versions": "1,2", "shares": "0.9,0.2"}, "sum to 1.1"),
                          ({"versions": "1,99", "shares": "0.9,0.1"}, "version 99")):
        run_id = client.trigger("experiment", {**start, **conf})
        assert client.wait("experiment", run_id, timeout=600) == "failed"
        [ti] = [t for t in client.task_instances("experiment", run_id) if t["task_id"] == "start"]
        assert ti["state"] == "failed" and ti["try_number"] == 1
        log = client.call("GET", f"/dags/experiment/dagRuns/{run_id}/taskInstances/start/logs/1",
                          params={"full_content": True})
        assert message in json.dumps(log), (message, json.dumps(log)[-2000:])
    assert experiment_events(dag_world) == before


def test_an_experiment_is_started_from_the_ui_form_and_recorded(airflow, browser, dag_world, second_version,
                                                                 artifacts):

    stack, client = airflow
    client.unpause("experiment")
    # given a logged-in user on the experiment trigger form (action start, the world's model and canary preselected)
    log_in(browser, stack)
    open_trigger_form(browser, stack, "experiment", "element_versions")
    # when they ask for a canary of version 2 beside version 1 from 2026-06-01 (after every day the tests score)
    fill(browser, "element_versions", f"1,{second_version}")
    fill(browser, "element_shares", "0.9,0.1")
    fill(browser, "element_effective_from", "06012026")
    fill(browser, "element_reason", "canary of the retrained model")
    run_id = submit(browser, artifacts / "ui_experiment_form.png")
    # then the run succeeds and the experiment is recorded in the model's history from that day
    assert client.wait("experiment", run_id, timeout=900) == "success", client.task_states("experiment", run_id)
    assert client.task_states("experiment", run_id) == {"choose": "success", "start": "success", "change": "skipped",
                                                        "stop": "skipped"}
    browser.refresh()
    time.sleep(3)
    browser.save_screenshot(str(artifacts / "ui_experiment_run.png"))
    started = client.xcom("experiment", run_id, "start")
    assert started["kind"] == "canary" and started["versions"] == ["1", second_version]
    [event] = [e for e in experiment_events(dag_world) if e["experiment"] == started["experiment"]]
    assert (event["event"], event["effective_from"], event["shares"]) == ("start", "2026-06-01", [0.9, 0.1])
    # and a stop through the same DAG ends it from the same day: no day the other tests score is touched
    run_id = client.trigger("experiment", {"action": "stop", "model_name": MODEL, "effective_from": "2026-06-01",
                                           "reason": "scheduler test done"})
    assert client.wait("experiment", run_id, timeout=600) == "success", client.task_states("experiment", run_id)
    assert [e["event"] for e in experiment_events(dag_world) if e["experiment"] == started["experiment"]] == [
        "start", "stop"]
