"""What a run records about itself (code version, run id), and what the OpenLineage events of a day's DAG runs
say each step read and wrote."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from functools import lru_cache
from pathlib import Path

from jobs import __version__
from jobs.config import PROJECT_ROOT


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the code that runs, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def code_version() -> str:
    return f"{__version__}+{git_commit()[:12]}"


def orchestrator_run_id() -> str | None:
    """The Airflow run id when a DAG task runs this process."""
    return os.environ.get("BATCHLOOP_RUN_ID") or None


@lru_cache(maxsize=1)
def run_id() -> str:
    """The orchestrator's run id when there is one (Airflow passes it), else one id per process."""
    return os.environ.get("BATCHLOOP_RUN_ID") or f"manual__{uuid.uuid4().hex[:12]}"


# -- OpenLineage events: which datasets each step of a day's DAG runs read and wrote -----------------------
# Airflow's OpenLineage provider writes an event when each task starts and ends (airflow.ndjson); Spark's
# OpenLineage listener one or more per query, with the datasets it read and wrote (spark.ndjson). A Spark
# event names its task through the parent run (a classic driver, given spark.openlineage.parent* by the task)
# or through the session's captured settings (a Connect client: jobs.io.spark.lineage_parent).
PARENT_RUN = "spark.openlineage.parentRunId"
STATES = {"COMPLETE": "success", "FAIL": "failed", "ABORT": "aborted", "START": "running", "RUNNING": "running"}


def read_events(path) -> tuple[list[dict], int]:
    """The events of one ndjson file, and how many of its lines were not an event (counted, never dropped
    silently: a line cut short by a process killed while writing it)."""
    events, unreadable = [], 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            unreadable += 1
            continue
        if isinstance(event, dict) and "run" in event and "job" in event:
            events.append(event)
        else:
            unreadable += 1
    return events, unreadable


def _datasets(event: dict, side: str) -> list[str]:
    out = []
    for dataset in event.get(side) or []:
        name = f"{dataset.get('namespace', '')}/{dataset.get('name', '')}".replace(":///", "://").rstrip("/")
        tables = [f"{s.get('name')}" for s in
                  ((dataset.get("facets") or {}).get("symlinks") or {}).get("identifiers") or []
                  if s.get("type") == "TABLE"]
        out.append(f"{name} (table {', '.join(tables)})" if tables else name)
    return out


def _utc(stamp: str) -> str:
    """An event time as an ISO string in UTC that sorts with the others (Spark writes `Z`, Airflow `+00:00`)."""
    return stamp.replace("Z", "+00:00") if stamp.endswith("Z") else stamp


def _task_runs(events: list[dict], day: str, model: str | None) -> dict[str, dict]:
    """The Airflow task runs of the day's DAG runs (of one model's DAGs, or all), by their OpenLineage run id."""
    tasks: dict[str, dict] = {}
    for event in sorted(events, key=lambda e: e.get("eventTime", "")):
        facets = event["run"].get("facets") or {}
        airflow = facets.get("airflow") or {}
        dag_run, task = airflow.get("dagRun") or {}, airflow.get("task") or {}
        if not dag_run or not task:
            continue  # a DAG-level event
        dag_id = dag_run.get("dag_id", "")
        conf = dag_run.get("conf") or {}
        if model and not (dag_id.endswith(f"__{model}") or conf.get("model_name") == model):
            continue
        # the day a run is for: its data interval (score_daily, monitor_performance), its `as_of` (retrain) or the
        # days from `start` to `end` (retro_test)
        started = str(dag_run.get("data_interval_start") or "")[:10]
        if not (day in (started, str(conf.get("as_of", ""))) or
                str(conf.get("start", "~")) <= day <= str(conf.get("end", ""))):
            continue
        run_id = event["run"]["runId"]
        entry = tasks.setdefault(run_id, {
            "dag_id": dag_id, "run_id": dag_run.get("run_id"), "task_id": task.get("task_id"),
            "state": None, "started": None, "ended": None, "spark_queries": 0, "inputs": [], "outputs": []})
        kind = event.get("eventType", "")
        entry["state"] = STATES.get(kind, kind.lower())
        if kind == "START":
            entry["started"] = _utc(event.get("eventTime", ""))
        elif kind in ("COMPLETE", "FAIL", "ABORT"):
            entry["ended"] = _utc(event.get("eventTime", ""))
    return tasks


def day_lineage(folder, day: str, model: str | None = None) -> dict:
    """Each step of the day's DAG runs with the datasets its Spark queries read and wrote, from the event files
    in `folder`; and what the files held that could not be read."""
    folder = Path(folder)
    airflow, bad_airflow = read_events(folder / "airflow.ndjson")
    spark, bad_spark = read_events(folder / "spark.ndjson")
    tasks = _task_runs(airflow, day, model)
    # which task each Spark run belongs to: the task its session states (a Connect client's captured setting), or
    # its parent run: the task itself (a classic driver's application), or that application (its queries). An
    # event counts only within its task's time: a task's run id is made from its logical date, so a DAG run of the
    # same date in another Airflow database (dag.test) has the same one.
    windows = {run_id: (t["started"] or "", t["ended"] or "9999") for run_id, t in tasks.items()}
    stated: dict[str, str] = {}
    parents: dict[str, str] = {}
    for event in spark:
        facets = event["run"].get("facets") or {}
        run_id = event["run"]["runId"]
        named = ((facets.get("spark_properties") or {}).get("properties") or {}).get(PARENT_RUN)
        parent = ((facets.get("parent") or {}).get("run") or {}).get("runId")
        if named in tasks:
            stated[run_id] = named
        if parent:
            parents[run_id] = parent
    applications = {run_id: parent for run_id, parent in parents.items() if parent in tasks}
    owner = {**{run_id: applications[parent] for run_id, parent in parents.items() if parent in applications},
             **applications, **stated}
    queries: dict[str, set[str]] = {}
    for event in spark:
        task = owner.get(event["run"]["runId"])
        if task is None or not windows[task][0] <= _utc(event.get("eventTime", "")) <= windows[task][1]:
            continue
        inputs, outputs = _datasets(event, "inputs"), _datasets(event, "outputs")
        entry = tasks[task]
        entry["inputs"] += [d for d in inputs if d not in entry["inputs"]]
        entry["outputs"] += [d for d in outputs if d not in entry["outputs"]]
        if inputs or outputs:
            queries.setdefault(task, set()).add(event["run"]["runId"])
    runs: dict[tuple[str, str], list[dict]] = {}
    for task_run, entry in tasks.items():
        entry["spark_queries"] = len(queries.get(task_run, ()))
        runs.setdefault((entry.pop("dag_id"), entry.pop("run_id")), []).append(entry)
    return {"day": day, "events": {"airflow": len(airflow), "spark": len(spark),
                                   "unreadable_lines": bad_airflow + bad_spark},
            "runs": [{"dag_id": d, "run_id": r, "steps": sorted(steps, key=lambda s: s["started"] or "")}
                     for (d, r), steps in sorted(runs.items(), key=lambda kv: kv[0])]}
