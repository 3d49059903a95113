"""`make demo`: the whole story through the real Airflow scheduler on the local stack, for every declared model.

1. The upstream load (here: the generator) publishes 2026-01-01..2026-03-19 of every table
   the declared models read, while Airflow starts; from 2026-02-10 monthly charges are 30%
   higher and a new tariff appears. Labels become known 30 days after their day (each
   label row's `available_at`), and every step reads only what was known on its day.
2. Each model's `retrain__NAME` is triggered through the REST API as of 2026-02-09: its
   first champion. The models are independent, so their runs go side by side.
3. Each model's `score_daily__NAME` runs 2026-02-10..2026-02-17, one day after the other (a
   run per day of its data interval, as a backfill makes them), the models side by side.
   Drift breaches emit the model's Asset event; its `retrain__NAME` runs on each, and its
   policy decides (cooldown first, then yes); the challenger is gated and promoted from
   the next day, before the model's next day is scored. Once a day is scored, the model's
   `monitor_performance__NAME` runs for the day its labels mature (30 days later): what was
   served, judged by its labels, per model version (champion and shadow).
   The last model runs an A/B test from its first scored day: its champion against a
   linear candidate trained on the same snapshot (the `experiment` DAG starts it); every
   scored day serves each subscriber one of the two and keeps both scores; each
   monitor_performance run then judges the test on the labels matured so far, until it
   concludes (the always-valid test decides, or the 8 days have all matured).
4. `retro_test` re-scores the days after the first model's promotion with its first
   champion, into its own namespace, and compares with what production served.
5. The story of each model, from the lake, the registry and MLflow, with links.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import date, timedelta

from infra.airflow_api import AirflowClient, AirflowError
from infra.stack import VENV_BIN, Stack, StackError, configure_dvc_remote, load_or_create_env, print_status

START, ROWS = date(2026, 1, 1), 20000
FIRST_TRAINING = date(2026, 2, 9)
SCORE_FIRST, SCORE_LAST = date(2026, 2, 10), date(2026, 2, 17)
LABEL_DELAY = 30  # both demo models' label.delay_days: the scored days' labels are known this much later
DAYS = (SCORE_LAST + timedelta(days=LABEL_DELAY) - START).days + 1  # through the last scored day's labels
DAY = timedelta(days=1)
EXPERIMENT_MDE = {"binary": 0.01, "regression": 0.5}  # AUC; RMSE of the demo's spend (in its units)


def dag(kind: str, model: str) -> str:
    """A model's own DAG (dags/ makes one score_daily, retrain and monitor_performance per declared model)."""
    return f"{kind}__{model}"


def declared() -> list[str]:
    from jobs.config import load_params

    return list(load_params().models)


class Clock:
    def __init__(self):
        self.t0 = time.monotonic()
        self.lock = threading.Lock()

    def say(self, text: str) -> None:
        with self.lock:
            print(f"demo [{time.monotonic() - self.t0:5.0f}s] {text}", flush=True)


def batchloop(stack: Stack, *args: str) -> dict:
    """Run a `batchloop` command on the stack; its JSON result."""
    import json

    done = subprocess.run([str(VENV_BIN / "batchloop"), *args], env=stack.env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise AirflowError(f"batchloop {args[0]} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}


def side_by_side(work: Callable[[str], None], models: list[str]) -> None:
    """`work(model)` for every model at once (one thread each); the first failure is raised once all ended."""
    failures: list[BaseException] = []

    def run(model: str) -> None:
        try:
            work(model)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(m,), name=f"demo-{m}") for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]


class Demo:
    def __init__(self, stack: Stack, clock: Clock, models: list[str]):
        self.stack, self.clock, self.models = stack, clock, models
        self.monitoring: dict[str, list[tuple[date, str]]] = {}  # model -> (matured day, its monitor run)
        self.experiments: dict[str, str] = {}  # model -> the experiment it runs
        self.champions: dict[str, str] = {}  # model -> the version its first training made champion

    def client(self) -> AirflowClient:
        """A client of its own for each thread (a requests session is not shared between threads)."""
        return AirflowClient.from_password_file(self.stack.config["BATCHLOOP_AIRFLOW_URL"], self.stack.password_file())

    def first_champion(self, model: str) -> None:
        client, dag_id = self.client(), dag("retrain", model)
        self.clock.say(f"{dag_id}: first model, trained on the labels known on {FIRST_TRAINING}")
        run_id = client.trigger(dag_id, {"as_of": FIRST_TRAINING.isoformat(), "force": True})

        def progress(task: str, state: str | None) -> None:
            if state in ("success", "failed", "skipped", "up_for_retry"):
                self.clock.say(f"  {dag_id} {task:18} {state}")

        if client.wait(dag_id, run_id, timeout=3600, on_change=progress) != "success":
            raise AirflowError(f"the first training of {model} failed: see the retrain run {run_id}")
        self.report_training(client, dag_id, run_id)
        self.champions[model] = str((client.xcom(dag_id, run_id, "train") or {}).get("version"))

    def start_experiment(self, model: str) -> None:
        """An A/B test of the model's champion against a candidate of another kind, from the first scored day.

        The candidate is trained on the champion's snapshot with the params of a variant file (here a
        linear model: Ridge for a regression model, logistic regression for a classifier), then the
        `experiment` DAG starts the test; the model's monitor_performance runs judge it as labels mature."""
        import yaml

        from jobs.config import load_params, params_path

        client = self.client()
        spec = load_params().model(model)
        experiment_id = f"{model}-ab-{SCORE_FIRST:%Y%m%d}"
        shown = batchloop(self.stack, "experiment", "show", "--model-name", model)
        if any(x["design"]["id"] == experiment_id for x in shown.get("experiments", [])):
            # a history is never rewritten: the days are scored with the arms it recorded
            self.experiments[model] = experiment_id
            self.clock.say(f"experiment {experiment_id} was started by an earlier run of the demo on this state; "
                           "its recorded history serves the days again")
            return
        estimator = ("sklearn.linear_model.Ridge", {"alpha": 1.0}) if spec.task == "regression" else (
            "sklearn.linear_model.LogisticRegression", {"C": 1.0, "max_iter": 500})
        raw = yaml.safe_load(params_path().read_text())
        raw["models"][model]["trainer"] = {"name": "sklearn", "estimator": estimator[0], "params": estimator[1]}
        variant = self.stack.state / "demo" / "candidate-params.yaml"
        variant.parent.mkdir(parents=True, exist_ok=True)
        variant.write_text(yaml.safe_dump(raw, sort_keys=False))
        self.clock.say(f"experiment: a candidate for {model}, {estimator[0].rsplit('.', 1)[1]}, trained on the "
                       f"champion's snapshot (params {variant})")
        candidate = batchloop(self.stack, "--params", str(variant), "train", "--model-name", model, "--snapshot",
                              f"snapshots/{model}/{FIRST_TRAINING}")["version"]
        conf = {"action": "start", "model_name": model, "kind": "ab",
                "versions": f"{self.champions[model]},{candidate}", "shares": "0.5,0.5",
                "primary_metric": spec.primary_metric, "mde": EXPERIMENT_MDE[spec.task], "max_days":
                (SCORE_LAST - SCORE_FIRST).days + 1, "effective_from": SCORE_FIRST.isoformat(),
                "reason": "is a linear model as good as the champion?"}
        run_id = client.trigger("experiment", conf)
        if client.wait("experiment", run_id, timeout=900) != "success":
            raise AirflowError(f"the experiment of {model} did not start: see the experiment run {run_id}")
        started = client.xcom("experiment", run_id, "start") or {}
        self.experiments[model] = started.get("experiment", "")
        self.clock.say(f"  experiment {started.get('experiment')}: A/B of versions "
                       f"{' and '.join(started.get('versions', []))} at {started.get('shares')} from "
                       f"{started.get('effective_from')} to {started.get('last_day')}, decided on "
                       f"{started.get('primary_metric')}; "
                       + ((started.get("sample_size") or {}).get("text") or "no sample-size estimate"))

    def daily_scoring(self, model: str) -> None:
        """Score the model's days one after the other; a drift breach's retraining ends before the next day.

        Each scored day's monitoring (on the day its labels mature) is started at once and runs
        beside the next days; `report_monitoring` shows what it found."""
        client = self.client()
        day = SCORE_FIRST
        while day <= SCORE_LAST:
            known = {r["dag_run_id"] for r in client.runs(dag("retrain", model))}
            if self.score_day(client, model, day):
                self.follow_retraining(client, model, known)
            matured = day + timedelta(days=LABEL_DELAY)
            self.monitoring.setdefault(model, []).append(
                (matured, client.run_interval(dag("monitor_performance", model), matured, matured + DAY)))
            day += DAY

    def score_day(self, client: AirflowClient, model: str, day: date) -> bool:
        """One day of the model's score_daily through the scheduler; whether it raised the drift alarm."""
        dag_id = dag("score_daily", model)
        run_id = client.run_interval(dag_id, day, day + DAY)
        state = client.wait_run(dag_id, run_id)
        states = client.task_states(dag_id, run_id)
        scored = client.xcom(dag_id, run_id, "score") if states.get("score") == "success" else None
        drift = client.xcom(dag_id, run_id, "drift") if states.get("drift") == "success" else None
        if scored and drift:
            by = scored["model"] if not scored.get("experiment") else (
                f"experiment {scored['experiment']} ({' and '.join(scored['arms'])}, shares {scored['shares']})")
            self.clock.say(f"{dag_id} {day}: {scored['scores_rows']:,} scored by {by} "
                           f"({scored['quarantined_rows']} quarantined); drift {drift['share_drifted']:.0%} of "
                           f"features{', prediction drifted' if drift['prediction_drifted'] else ''}"
                           f"{' -> BREACH, drift event' if drift['breached'] else ''}")
        else:
            failed = [t for t, s in states.items() if s == "failed"]
            self.clock.say(f"{dag_id} {day}: {state} (failed: {', '.join(failed) or 'none'}; see the Airflow UI)")
        return states.get("raise_drift_alarm") == "success"

    def follow_retraining(self, client: AirflowClient, model: str, known: set[str]) -> None:
        """Wait for the retrain run the model's drift event starts (one not in `known`); what its policy decided."""
        dag_id = dag("retrain", model)
        while True:
            runs = [r for r in client.runs(dag_id) if r["run_type"] == "asset_triggered"
                    and r["dag_run_id"] not in known]
            if runs and runs[-1]["state"] in ("success", "failed"):
                break
            time.sleep(1)
        run = runs[-1]
        decision = client.xcom(dag_id, run["dag_run_id"], "policy") or {}
        reasons = [r for r in decision.get("reasons", []) if r.startswith(("trigger", "blocked"))]
        verdict = "RETRAIN" if decision.get("retrain") else "no"
        self.clock.say(f"  {dag_id} (drift event): policy {verdict}: {'; '.join(reasons) or 'nothing fired'}")
        if decision.get("retrain"):
            self.report_training(client, dag_id, run["dag_run_id"])

    def report_training(self, client: AirflowClient, dag_id: str, run_id: str) -> None:
        promoted = client.xcom(dag_id, run_id, "promote") or {}
        trained = client.xcom(dag_id, run_id, "train") or {}
        holdout = {k.removeprefix("holdout_"): v for k, v in trained.items() if k.startswith("holdout_")
                   and k.removeprefix("holdout_") in ("auc", "rmse")}
        self.clock.say(f"  {dag_id}: {trained.get('model')} trained on {trained.get('window', {}).get('first')}.."
                       f"{trained.get('window', {}).get('last')}, holdout "
                       f"{', '.join(f'{k.upper()} {v:.3f}' for k, v in holdout.items())}; "
                       + (f"promoted to champion from {promoted.get('effective_from')}" if promoted.get("promoted")
                          else f"not promoted: {promoted.get('reason')}"))

    def report_monitoring(self, model: str) -> None:
        """What the model's monitor_performance runs found, day by day."""
        client, dag_id = self.client(), dag("monitor_performance", model)
        for day, run_id in self.monitoring.get(model, []):
            state = client.wait_run(dag_id, run_id)
            measured = client.xcom(dag_id, run_id, "monitor") if state == "success" else None
            if not measured:
                self.clock.say(f"  {dag_id} {day}: {state} (see the Airflow UI)")
                continue
            cells = [f"{r['source'].replace('scores_shadow', 'shadow').replace('scores', 'served')} "
                     f"v{r['model_version']} " + ", ".join(
                         f"{m.upper()} {r[m]:.3f}" for m in ("auc", "rmse", "mae") if r.get(m) is not None)
                     for r in measured["results"]]
            self.clock.say(f"  {dag_id}: {measured['scored_day']} (labels known {measured['labels_matured_on']}): "
                           + ("; ".join(cells) or measured.get("skipped", "nothing to measure")))
            looked = client.xcom(dag_id, run_id, "analyze_experiment") if model in self.experiments else None
            if looked and "skipped" not in looked:
                self.clock.say(f"    experiment {looked['experiment']} on {looked['matured_rows']:,} matured rows: "
                               + ("CONCLUDED: " if looked["concluded"] else "") + looked["reason"]
                               + f"; report {looked['report']}")

    def retro_test(self, model: str) -> None:
        """The model's first champion over the days after its first promotion, against what production served."""
        client = self.client()
        promoted = promotion_day(self.stack, model)
        first = promoted or SCORE_LAST
        self.clock.say(f"retro_test: the first champion of {model} over {first}..{SCORE_LAST}, against production")
        run_id = client.trigger("retro_test", {"model_name": model, "version": 1, "champion_as_of": None,
                                               "start": first.isoformat(), "end": SCORE_LAST.isoformat(),
                                               "namespace": "retro_first_champion", "compare_to_production": True})
        self.clock.say(f"  retro_test: {client.wait_run('retro_test', run_id)}")


def main() -> int:
    clock = Clock()
    stack = Stack(load_or_create_env())
    models = declared()
    demo = Demo(stack, clock, models)

    def upstream_load() -> None:
        last = START + timedelta(days=DAYS - 1)
        clock.say(f"upstream load: {START}..{last}, {ROWS:,} subscribers a day (the tables of {', '.join(models)}; "
                  f"labels known 30 days after their day), while Airflow starts")
        batchloop(stack, "generate", "--start", START.isoformat(), "--days", str(DAYS), "--rows", str(ROWS))

    def stream(model: str) -> None:
        demo.daily_scoring(model)
        if model == models[0]:  # its retro-test runs beside the other models' last days
            demo.retro_test(model)

    try:
        # the local stack (`make up`); the upstream needs only Spark, so it loads while Airflow comes up
        stack.up(while_airflow_starts=upstream_load)
        configure_dvc_remote(stack.config)
        print_status(stack)
        client = demo.client()
        client.wait_for_dags([dag(k, m) for m in models for k in ("score_daily", "retrain", "monitor_performance")]
                             + ["retro_test", "promote", "experiment"])
        for dag_id in [dag(k, m) for m in models for k in ("retrain", "score_daily", "monitor_performance")] \
                + ["retro_test", "promote", "experiment"]:
            client.unpause(dag_id)
        side_by_side(demo.first_champion, models)
        demo.start_experiment(models[-1])
        clock.say(f"daily scoring {SCORE_FIRST}..{SCORE_LAST}, a run per model and day (the models side by side); "
                  "a drift breach starts the model's retrain through its Asset; each scored day is monitored on "
                  f"the day its labels mature ({LABEL_DELAY} days later)")
        side_by_side(stream, models)
        clock.say("monitoring on matured labels:")
        for model in models:
            demo.report_monitoring(model)
    except (AirflowError, StackError, OSError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    clock.say("the story so far:")
    done = subprocess.run([sys.executable, "-m", "infra.story", SCORE_FIRST.isoformat(), SCORE_LAST.isoformat()],
                          env=stack.env())
    return done.returncode


def promotion_day(stack: Stack, model: str) -> date | None:
    """The first day a champion other than version 1 of the model applied, from the alias history."""
    from jobs.io import registry

    client = registry.client(stack.config["MLFLOW_TRACKING_URI"])
    later = [e.effective_from for e in registry.alias_history(client, model)
             if e.alias == registry.CHAMPION and e.version not in (None, "1")]
    return min(later) if later else None


if __name__ == "__main__":
    sys.exit(main())
