"""Benchmark: one day's `score_daily` DAG run through the scheduler, spark-submit against the warm server.

    make bench            (BENCH_LATENCY_ROWS=20000, BENCH_LATENCY_REPEATS=2 by default)

A whole local stack of its own (S3, MLflow, Airflow, and in connect mode the Spark Connect
server) on free ports under a temp folder. The data is generated and the first champion
trained through the `retrain` DAG once; then single-day backfills of `score_daily` are run
in turns, with `spark_default` pointing at the warm server (connect) and at spark-submit
`local[2]` (submit), switching the stack's Spark mode in between. A run's latency is the
scheduler's own start to end of the run (sensor to publish). Resident memory of every
server of the stack (their process trees) is sampled: idle after start, peak during the runs.
Written to results/latency.json.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))

from measure import PeakMemory, write  # noqa: E402

from infra.airflow_api import AirflowClient  # noqa: E402
from infra.stack import DEFAULT_PORTS, VENV_BIN, Stack, free_ports, generate_config  # noqa: E402
from tests.conftest import make_dvc_repo  # noqa: E402

FIRST_DAY, DAYS = date(2026, 1, 1), 48
AS_OF = date(2026, 2, 9)
SCORED = date(2026, 2, 10)
SCORE_DAILY, RETRAIN = "score_daily__churn", "retrain__churn"  # the project params.yaml's model's DAGs


def stack_memory(stack: Stack) -> PeakMemory:
    """Resident memory of every process of the stack's servers (their process trees)."""
    return PeakMemory(interval=0.5, roots=lambda: [pid for s in stack.services() if (pid := stack.pid(s))])


def gib(value: int) -> float:
    return round(value / 2**30, 2)


def run_cli(stack: Stack, *args: str) -> None:
    import subprocess

    done = subprocess.run([str(VENV_BIN / "batchloop"), *args], env=stack.env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"batchloop {args[0]} failed: {done.stderr[-2000:]}")


def client_for(stack: Stack) -> AirflowClient:
    return AirflowClient.from_password_file(stack.config["BATCHLOOP_AIRFLOW_URL"], stack.password_file())


def switch(stack: Stack, mode: str) -> AirflowClient:
    """Restart the stack's Spark side and Airflow (whose tasks read `spark_default` at start) in `mode`."""
    stack.down()
    stack.config["BATCHLOOP_SPARK_MODE"] = mode
    stack.up()
    client = client_for(stack)
    client.wait_for_dags([SCORE_DAILY, RETRAIN])
    return client


def score_one_day(client: AirflowClient, day: date) -> dict:
    """A single-day backfill of score_daily; the scheduler's start and end of its run."""
    t0 = time.monotonic()
    backfill = client.backfill(SCORE_DAILY, day.isoformat(), day.isoformat(), max_active_runs=1)
    client.wait_backfill(backfill["id"], timeout=3600)
    wall = time.monotonic() - t0
    run = [r for r in client.runs(SCORE_DAILY) if r["run_type"] == "backfill"
           and (r.get("data_interval_start") or "")[:10] == day.isoformat()][-1]
    tasks = client.task_instances(SCORE_DAILY, run["dag_run_id"])
    states = {ti["task_id"]: ti["state"] for ti in tasks}
    if run["state"] != "success" or states.get("publish") != "success":
        raise SystemExit(f"score_daily {day} did not succeed: {run['state']} {states}")
    start, end = (at(run[k]) for k in ("start_date", "end_date"))
    return {"day": day.isoformat(), "run_seconds": round((end - start).total_seconds(), 1),
            "wall_seconds": round(wall, 1), "scored_rows": client.xcom(SCORE_DAILY, run["dag_run_id"],
                                                                      "score")["scores_rows"],
            "tasks": task_timings(tasks, start)}


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def task_timings(tasks: list[dict], run_start: datetime) -> dict[str, dict]:
    """Per task: when it was queued and started, and how long it ran, in seconds from the run's start."""
    timings = {}
    for ti in sorted(tasks, key=lambda t: t.get("start_date") or "~"):
        if not ti.get("start_date"):
            continue
        started = at(ti["start_date"])
        row = {"started": round((started - run_start).total_seconds(), 1), "state": ti["state"],
               "seconds": round((at(ti["end_date"]) - started).total_seconds(), 1) if ti.get("end_date") else None}
        for key in ("scheduled_when", "queued_when"):
            if ti.get(key):
                row[key.removesuffix("_when")] = round((at(ti[key]) - run_start).total_seconds(), 1)
        timings[ti["task_id"]] = row
    return timings


def main() -> None:
    rows = int(os.environ.get("BENCH_LATENCY_ROWS", "20000"))
    repeats = int(os.environ.get("BENCH_LATENCY_REPEATS", "2"))
    tmp = tempfile.mkdtemp(prefix="batchloop-bench-latency-")  # kept (with the servers' logs) if a run fails
    config = generate_config(Path(tmp) / "state", free_ports(list(DEFAULT_PORTS)))
    stack = Stack(config)
    repo = make_dvc_repo(Path(tmp) / "repo", stack)
    config.update({"BATCHLOOP_DVC_ROOT": str(repo), "BATCHLOOP_SPARK_MODE": "connect"})
    results: dict = {"rows": rows, "modes": {}}
    try:
        stack.up()
        idle = {"connect": gib(stack_memory(stack).now())}
        client = client_for(stack)
        client.wait_for_dags([SCORE_DAILY, RETRAIN])
        for dag_id in (SCORE_DAILY, RETRAIN):
            client.unpause(dag_id)
        t0 = time.monotonic()
        run_cli(stack, "generate", "--start", FIRST_DAY.isoformat(), "--days", str(DAYS), "--rows", str(rows))
        print(f"generated {DAYS} days of {rows:,} rows in {time.monotonic() - t0:.0f} s")
        run_id = client.trigger(RETRAIN, {"as_of": AS_OF.isoformat(), "force": True})
        t0 = time.monotonic()
        if client.wait(RETRAIN, run_id, timeout=3600) != "success":
            raise SystemExit(f"the first training failed: retrain run {run_id}")
        results["first_retrain_seconds_connect"] = round(time.monotonic() - t0, 1)
        # only the measured score_daily runs from here: a drift breach's Asset event would start `retrain`
        # beside them, and the scheduled run of the latest interval (today) would poke for a partition the
        # generator never writes
        client.pause(RETRAIN)
        for run in client.runs(SCORE_DAILY):
            if run["run_type"] == "scheduled" and run["state"] in ("queued", "running"):
                client.set_run_state(SCORE_DAILY, run["dag_run_id"], "failed")
        runs: dict[str, list[dict]] = {"connect": [], "submit": []}
        peaks: dict[str, int] = {"connect": 0, "submit": 0}
        day = SCORED
        for mode in ("connect", "submit"):
            if mode == "submit":
                client = switch(stack, mode)
                idle[mode] = gib(stack_memory(stack).now())
            for _ in range(repeats):
                with stack_memory(stack) as memory:
                    outcome = score_one_day(client, day)
                peaks[mode] = max(peaks[mode], memory.peak)
                runs[mode].append(outcome)
                print(f"score_daily {day} ({mode}): {outcome['run_seconds']} s run, {outcome['wall_seconds']} s "
                      f"from the backfill request, {outcome['scored_rows']:,} rows; stack peak "
                      f"{gib(memory.peak)} GiB")
                print("   " + ", ".join(f"{task} +{t['started']} s: {t['seconds']} s"
                                        for task, t in outcome["tasks"].items()))
                day += timedelta(days=1)
        for mode in ("connect", "submit"):
            results["modes"][mode] = {
                "median_run_seconds": statistics.median(r["run_seconds"] for r in runs[mode]),
                "runs": runs[mode], "idle_stack_rss_gib": idle[mode], "peak_stack_rss_gib": gib(peaks[mode])}
    finally:
        stack.down()
    shutil.rmtree(tmp)
    warm, cold = (results["modes"][m]["median_run_seconds"] for m in ("connect", "submit"))
    results["warm_over_submit"] = round(warm / cold, 3)
    print()
    print(f"one day's score_daily run, {rows:,} rows, sensor to publish through the scheduler (median of {repeats}):")
    print(f"  {'':34} {'seconds':>8} {'idle stack':>11} {'peak stack':>11}")
    for mode, label in (("submit", "spark-submit per step (baseline)"), ("connect", "warm Spark Connect server")):
        m = results["modes"][mode]
        print(f"  {label:34} {m['median_run_seconds']:8.1f} {m['idle_stack_rss_gib']:9.2f} G "
              f"{m['peak_stack_rss_gib']:9.2f} G")
    print(f"  warm / spark-submit = {results['warm_over_submit']:.2f} (goal at most 0.33)")
    print(f"written to {write('latency', results)}")


if __name__ == "__main__":
    main()
