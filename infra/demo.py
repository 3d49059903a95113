"""`make demo`: the whole story through the real Airflow scheduler on the local stack.

1. The upstream load (here: the generator) publishes 60 days of subscriber snapshots;
   from 2026-02-10 (day 41) monthly charges are 30% higher and a new tariff appears.
2. `retrain` is triggered through the REST API as of 2026-02-09: the first champion.
3. `score_daily` is backfilled for 2026-02-10..2026-02-17, one day after the other.
   Drift breaches emit the Asset event; `retrain` runs on each, and its policy decides
   (cooldown first, then yes); the challenger is gated and promoted from the next day.
4. `retro_test` re-scores the days after the promotion with the first champion, into
   its own namespace, and compares with what production served.
5. The story, from the lake, the registry and MLflow, with links.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date, timedelta

from infra.airflow_api import AirflowClient, AirflowError
from infra.stack import VENV_BIN, Stack, StackError, load_or_create_env

START, DAYS, ROWS = date(2026, 1, 1), 60, 20000
FIRST_TRAINING = date(2026, 2, 9)
SCORE_FIRST, SCORE_LAST = date(2026, 2, 10), date(2026, 2, 17)
DAGS = ["score_daily", "retrain", "retro_test", "promote", "monitor_performance"]


class Clock:
    def __init__(self):
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"demo [{time.monotonic() - self.t0:5.0f}s] {text}", flush=True)


def batchloop(stack: Stack, *args: str) -> None:
    done = subprocess.run([str(VENV_BIN / "batchloop"), *args], env=stack.env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise AirflowError(f"batchloop {args[0]} failed: {done.stderr.strip().splitlines()[-1:]}")


def follow(client: AirflowClient, clock: Clock, dag_id: str, run_id: str) -> str:
    def progress(task: str, state: str | None) -> None:
        if state in ("running", "success", "failed", "skipped", "up_for_retry"):
            clock.say(f"  {dag_id} {task:18} {state}")

    return client.wait(dag_id, run_id, timeout=3600, on_change=progress)


def follow_backfill(client: AirflowClient, clock: Clock, days: list[date]) -> None:
    """Report each scored day and every retrain run the drift events start, until all are done."""
    reported: set[tuple[str, str, str]] = set()
    wanted = {d.isoformat() for d in days}
    while True:
        runs = {r["dag_run_id"]: r for r in client.runs("score_daily") if r.get("run_type") == "backfill"}
        retrains = [r for r in client.runs("retrain") if r.get("run_type") == "asset_triggered"]
        for r in sorted(runs.values(), key=lambda r: r["logical_date"] or ""):
            day = (r.get("data_interval_start") or r["logical_date"])[:10]
            if (r["dag_run_id"], "run", r["state"]) not in reported and r["state"] in ("running", "success",
                                                                                         "failed"):
                reported.add((r["dag_run_id"], "run", r["state"]))
                clock.say(f"score_daily {day}: {r['state']}")
        for r in retrains:
            if (r["dag_run_id"], "run", r["state"]) not in reported and r["state"] in ("running", "success",
                                                                                         "failed"):
                reported.add((r["dag_run_id"], "run", r["state"]))
                clock.say(f"retrain (drift event) {r['dag_run_id'][-32:]}: {r['state']}")
        done_days = {(r.get("data_interval_start") or r["logical_date"])[:10] for r in runs.values()
                     if r["state"] in ("success", "failed")}
        busy = [r for r in retrains if r["state"] in ("queued", "running")]
        if wanted <= done_days and not busy:
            return
        time.sleep(5)


def main() -> int:
    clock = Clock()
    stack = Stack(load_or_create_env())
    try:
        client = AirflowClient.from_password_file(stack.config["BATCHLOOP_AIRFLOW_URL"], stack.password_file())
        client.wait_for_dags(DAGS)
        clock.say(f"upstream load: {DAYS} days of {ROWS:,} subscribers from {START} (features, and labels "
                  "30 days late)")
        batchloop(stack, "generate", "--start", START.isoformat(), "--days", str(DAYS), "--rows", str(ROWS))
        for dag_id in ("retrain", "score_daily", "retro_test", "promote"):
            client.unpause(dag_id)
        clock.say(f"retrain: first model, trained on the labels known on {FIRST_TRAINING}")
        run_id = client.trigger("retrain", {"as_of": FIRST_TRAINING.isoformat(), "force": True})
        if follow(client, clock, "retrain", run_id) != "success":
            raise AirflowError(f"the first training failed: see the retrain run {run_id}")
        days = [SCORE_FIRST + timedelta(days=i) for i in range((SCORE_LAST - SCORE_FIRST).days + 1)]
        clock.say(f"backfill: score_daily {SCORE_FIRST}..{SCORE_LAST}, one day after the other")
        client.backfill("score_daily", SCORE_FIRST.isoformat(), SCORE_LAST.isoformat(), max_active_runs=1)
        follow_backfill(client, clock, days)
        promoted = promotion_day(stack)
        retro_first = promoted or SCORE_LAST
        clock.say(f"retro_test: the first champion over {retro_first}..{SCORE_LAST}, against production")
        run_id = client.trigger("retro_test", {"model_name": "churn", "version": 1, "champion_as_of": None,
                                               "start": retro_first.isoformat(), "end": SCORE_LAST.isoformat(),
                                               "namespace": "retro_first_champion", "compare_to_production": True})
        follow(client, clock, "retro_test", run_id)
    except (AirflowError, StackError, OSError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    clock.say("the story so far:")
    done = subprocess.run([sys.executable, "-m", "infra.story", SCORE_FIRST.isoformat(), SCORE_LAST.isoformat()],
                          env=stack.env())
    return done.returncode


def promotion_day(stack: Stack) -> date | None:
    """The first day a champion other than version 1 applied, from the alias history."""
    from jobs import registry

    client = registry.client(stack.config["MLFLOW_TRACKING_URI"])
    later = [e.effective_from for e in registry.alias_history(client, "churn")
             if e.alias == registry.CHAMPION and e.version not in (None, "1")]
    return min(later) if later else None


if __name__ == "__main__":
    sys.exit(main())
