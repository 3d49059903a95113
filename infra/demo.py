"""`make demo`: the whole story through the real Airflow scheduler on the local stack, for every declared model.

1. The upstream load (here: the generator) publishes 60 days of every table the declared
   models read; from 2026-02-10 (day 41) monthly charges are 30% higher and a new tariff
   appears.
2. Each model's `retrain__NAME` is triggered through the REST API as of 2026-02-09: its
   first champion.
3. Each model's `score_daily__NAME` is backfilled for 2026-02-10..2026-02-17, one day
   after the other. Drift breaches emit the model's Asset event; its `retrain__NAME`
   runs on each, and its policy decides (cooldown first, then yes); the challenger is
   gated and promoted from the next day.
4. `retro_test` re-scores the days after the first model's promotion with its first
   champion, into its own namespace, and compares with what production served.
5. The labels of the scored days mature: the upstream publishes the days up to
   2026-03-19 (labels come 30 days late), and each model's `monitor_performance__NAME` is
   backfilled for 2026-03-12..2026-03-19: what was served on each scored day, judged by
   its labels, per model version (champion and shadow).
6. The story of each model, from the lake, the registry and MLflow, with links.
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
LABEL_DELAY = 30  # both demo models' label.delay_days: the scored days' labels are known this much later


def dag(kind: str, model: str) -> str:
    """A model's own DAG (dags/ makes one score_daily, retrain and monitor_performance per declared model)."""
    return f"{kind}__{model}"


def declared() -> list[str]:
    from jobs.config import load_params

    return list(load_params().models)


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

    clock.say(f"  {dag_id} run {run_id}: {client.run_state(dag_id, run_id)}")
    return client.wait(dag_id, run_id, timeout=3600, on_change=progress)


def score_day(client: AirflowClient, clock: Clock, model: str, day: date) -> dict:
    """Backfill one day of the model's score_daily through the scheduler and wait for it; what it did."""
    dag_id = dag("score_daily", model)
    backfill = client.backfill(dag_id, day.isoformat(), day.isoformat(), max_active_runs=1)
    client.wait_backfill(backfill["id"], timeout=3600)  # closed once its run has ended; then the next may start
    run = [r for r in client.runs(dag_id) if r["run_type"] == "backfill"
           and (r.get("data_interval_start") or "")[:10] == day.isoformat()][-1]
    states = client.task_states(dag_id, run["dag_run_id"])
    scored = client.xcom(dag_id, run["dag_run_id"], "score") if states.get("score") == "success" else None
    drift = client.xcom(dag_id, run["dag_run_id"], "drift") if states.get("drift") == "success" else None
    if scored and drift:
        clock.say(f"{dag_id} {day}: {scored['scores_rows']:,} scored by {scored['model']} "
                  f"({scored['quarantined_rows']} quarantined); drift {drift['share_drifted']:.0%} of features"
                  f"{', prediction drifted' if drift['prediction_drifted'] else ''}"
                  f"{' -> BREACH, drift event' if drift['breached'] else ''}")
    else:
        failed = [t for t, s in states.items() if s == "failed"]
        clock.say(f"{dag_id} {day}: {run['state']} (failed: {', '.join(failed) or 'none'}; see the Airflow UI)")
    return {"run": run, "alarm": states.get("raise_drift_alarm") == "success", "ended": run.get("end_date")}


def follow_retraining(client: AirflowClient, clock: Clock, model: str, known: set[str]) -> None:
    """Wait for the retrain run the model's drift event starts (one not in `known`); what its policy decided."""
    dag_id = dag("retrain", model)
    while True:
        runs = [r for r in client.runs(dag_id) if r["run_type"] == "asset_triggered"
                and r["dag_run_id"] not in known]
        if runs and runs[-1]["state"] in ("success", "failed"):
            break
        time.sleep(3)
    run = runs[-1]
    decision = client.xcom(dag_id, run["dag_run_id"], "policy") or {}
    reasons = [r for r in decision.get("reasons", []) if r.startswith(("trigger", "blocked"))]
    verdict = "RETRAIN" if decision.get("retrain") else "no"
    clock.say(f"  {dag_id} (drift event): policy {verdict}: {'; '.join(reasons) or 'nothing fired'}")
    if decision.get("retrain"):
        promoted = client.xcom(dag_id, run["dag_run_id"], "promote") or {}
        trained = client.xcom(dag_id, run["dag_run_id"], "train") or {}
        holdout = {k.removeprefix("holdout_"): v for k, v in trained.items() if k.startswith("holdout_")
                   and k.removeprefix("holdout_") in ("auc", "rmse")}
        clock.say(f"  {dag_id}: {trained.get('model')} trained on {trained.get('window', {}).get('first')}.."
                  f"{trained.get('window', {}).get('last')}, holdout "
                  f"{', '.join(f'{k.upper()} {v:.3f}' for k, v in holdout.items())}; "
                  + (f"promoted to champion from {promoted.get('effective_from')}" if promoted.get("promoted")
                     else f"not promoted: {promoted.get('reason')}"))


def main() -> int:
    clock = Clock()
    stack = Stack(load_or_create_env())
    models = declared()
    try:
        client = AirflowClient.from_password_file(stack.config["BATCHLOOP_AIRFLOW_URL"], stack.password_file())
        client.wait_for_dags([dag(k, m) for m in models for k in ("score_daily", "retrain", "monitor_performance")]
                             + ["retro_test", "promote"])
        clock.say(f"upstream load: {DAYS} days of {ROWS:,} subscribers from {START} (the tables of "
                  f"{', '.join(models)}; labels 30 days late)")
        batchloop(stack, "generate", "--start", START.isoformat(), "--days", str(DAYS), "--rows", str(ROWS))
        for dag_id in [dag(k, m) for m in models for k in ("retrain", "score_daily")] + ["retro_test", "promote"]:
            client.unpause(dag_id)
        for model in models:
            clock.say(f"{dag('retrain', model)}: first model, trained on the labels known on {FIRST_TRAINING}")
            run_id = client.trigger(dag("retrain", model), {"as_of": FIRST_TRAINING.isoformat(), "force": True})
            if follow(client, clock, dag("retrain", model), run_id) != "success":
                raise AirflowError(f"the first training of {model} failed: see the retrain run {run_id}")
        days = [SCORE_FIRST + timedelta(days=i) for i in range((SCORE_LAST - SCORE_FIRST).days + 1)]
        clock.say(f"daily scoring {SCORE_FIRST}..{SCORE_LAST}, a backfill run per model and day; a drift breach "
                  "starts the model's retrain through its Asset")
        for day in days:
            for model in models:
                known = {r["dag_run_id"] for r in client.runs(dag("retrain", model))}
                if score_day(client, clock, model, day)["alarm"]:
                    follow_retraining(client, clock, model, known)
        first = models[0]
        promoted = promotion_day(stack, first)
        retro_first = promoted or SCORE_LAST
        clock.say(f"retro_test: the first champion of {first} over {retro_first}..{SCORE_LAST}, against production")
        run_id = client.trigger("retro_test", {"model_name": first, "version": 1, "champion_as_of": None,
                                               "start": retro_first.isoformat(), "end": SCORE_LAST.isoformat(),
                                               "namespace": "retro_first_champion", "compare_to_production": True})
        follow(client, clock, "retro_test", run_id)
        mature_labels(stack, client, clock, models)
    except (AirflowError, StackError, OSError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    clock.say("the story so far:")
    done = subprocess.run([sys.executable, "-m", "infra.story", SCORE_FIRST.isoformat(), SCORE_LAST.isoformat()],
                          env=stack.env())
    return done.returncode


def mature_labels(stack: Stack, client: AirflowClient, clock: Clock, models: list[str]) -> None:
    """Publish the days on which the scored days' labels become known; monitor each model on them."""
    first, last = SCORE_FIRST + timedelta(days=LABEL_DELAY), SCORE_LAST + timedelta(days=LABEL_DELAY)
    published = START + timedelta(days=DAYS)
    clock.say(f"upstream load: {published}..{last}, with the labels of {SCORE_FIRST}..{SCORE_LAST}")
    batchloop(stack, "generate", "--start", published.isoformat(), "--days", str((last - published).days + 1),
              "--rows", str(ROWS))
    for model in models:
        dag_id = dag("monitor_performance", model)
        client.unpause(dag_id)
        clock.say(f"{dag_id}: labels matured on {first}..{last}, a backfill run per day")
        backfill = client.backfill(dag_id, first.isoformat(), last.isoformat(), max_active_runs=1)
        client.wait_backfill(backfill["id"], timeout=3600)
        for run in sorted((r for r in client.runs(dag_id) if r["run_type"] == "backfill"),
                          key=lambda r: r.get("data_interval_start") or ""):
            measured = client.xcom(dag_id, run["dag_run_id"], "monitor") if run["state"] == "success" else None
            if not measured:
                clock.say(f"  {dag_id} {(run.get('data_interval_start') or '')[:10]}: {run['state']} (see the "
                          "Airflow UI)")
                continue
            cells = [f"{r['source'].replace('scores_shadow', 'shadow').replace('scores', 'served')} "
                     f"v{r['model_version']} " + ", ".join(
                         f"{m.upper()} {r[m]:.3f}" for m in ("auc", "rmse", "mae") if r.get(m) is not None)
                     for r in measured["results"]]
            clock.say(f"  {dag_id}: {measured['scored_day']} (labels known {measured['labels_matured_on']}): "
                      + ("; ".join(cells) or measured.get("skipped", "nothing to measure")))


def promotion_day(stack: Stack, model: str) -> date | None:
    """The first day a champion other than version 1 of the model applied, from the alias history."""
    from jobs.io import registry

    client = registry.client(stack.config["MLFLOW_TRACKING_URI"])
    later = [e.effective_from for e in registry.alias_history(client, model)
             if e.alias == registry.CHAMPION and e.version not in (None, "1")]
    return min(later) if later else None


if __name__ == "__main__":
    sys.exit(main())
