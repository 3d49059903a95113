"""Experiments between model versions (canary, A/B, bandit): start, change, stop, analyse.

The history of every experiment of a model is a list of events kept with the registered
model in MLflow (as the alias history is); the allocation of a day is replayed from it
(jobs/core/experiment.py), so scoring a past day again serves exactly the arms that day
had. Scoring (jobs/steps/score.py) scores every arm on every row in one pass and serves
each row the score of its arm; `scores` keeps the arm, the version and the experiment per
row and every arm's score beside it (`arm_scores`, version -> score).

The analysis runs daily in the model's monitoring DAG on the rows whose labels matured:
per-arm metrics with intervals, paired and unpaired differences, the always-valid test,
guardrail stops, bandit shares and the conclusion, which promotes a winning challenger
through the alias history (gate.mode auto) or waits for `batchloop promote` (manual).
Decisions take effect from the day after the look.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F

from jobs.config import Env, ModelSpec
from jobs.core import experiment as xp
from jobs.errors import InvalidParameter, ModelNotFound
from jobs.io import alerts, lineage, objectstore, registry
from jobs.io.lake import Lake

log = logging.getLogger(__name__)

MLFLOW_EXPERIMENT = "batchloop-experiments"


# -- history -----------------------------------------------------------------------------------
def history(client, name: str) -> tuple[dict[str, xp.Design], list[xp.Event]]:
    """The model's experiments (their designs, by id) and all their events."""
    raw = registry.experiment_events(client, name)
    designs = {e["experiment"]: xp.Design.from_dict(e["details"]["design"]) for e in raw if e["event"] == "start"}
    return designs, xp.ordered([xp.Event.from_dict(e) for e in raw])


def state_on(client, name: str, day: date) -> xp.State | None:
    """The experiment that serves the model's rows on `day`, if one does."""
    return _running_on(*history(client, name), day)


def _running_on(designs: dict[str, xp.Design], events: list[xp.Event], day: date) -> xp.State | None:
    for d in designs.values():
        state = xp.state_on(d, events, day)
        if state is not None and state.active:
            return state
    return None


def _record(client, name: str, d: xp.Design, event: str, shares, effective_from: date, reason: str,
            **details: Any) -> dict[str, Any]:
    e = xp.Event(d.id, event, tuple(shares), effective_from, datetime.now(UTC).isoformat(timespec="microseconds"),
                 reason[:1500], {**details, "run_id": lineage.run_id()})
    registry.record_experiment_event(client, name, e.as_dict())
    return e.as_dict()


def _arm_versions(client, spec: ModelSpec, versions: list[str]) -> list[registry.ResolvedModel]:
    out = []
    for v in versions:
        try:
            out.append(registry.resolve(client, f"models:/{spec.name}/{v}"))
        except ModelNotFound as exc:
            raise InvalidParameter(f"version {v}: {exc}") from None
    return out


# -- start, change, stop -----------------------------------------------------------------------
def plan(spec: ModelSpec, env: Env, kind: str, versions: list[str], shares: list[float] | None, metric: str | None,
         mde: float, max_days: int, effective_from: date, experiment_id: str | None = None, alpha: float = 0.05,
         floor: float = 0.05) -> xp.Design:
    """A new experiment's design, checked against the registry and the model's history: nothing is recorded."""
    client = registry.client(env.mlflow_tracking_uri)
    exp_id = experiment_id or f"{spec.name}-{kind}-{effective_from:%Y%m%d}"
    d = xp.design(exp_id, spec.name, kind, versions, shares, metric or spec.primary_metric, mde, max_days,
                  effective_from, spec.task, alpha, floor)
    _arm_versions(client, spec, list(d.versions))
    designs, events = history(client, spec.name)
    if exp_id in designs:
        raise InvalidParameter(f"experiment {exp_id!r} exists already: give another --id")
    for other in designs.values():
        ends = [e.effective_from for e in events if e.experiment == other.id and e.event in xp.ENDING]
        if not ends or max(ends) > effective_from:
            raise InvalidParameter(f"experiment {other.id!r} of {spec.name} is still running on "
                                   f"{effective_from.isoformat()}: stop it first (batchloop experiment stop)")
    return d


def start(spec: ModelSpec, env: Env, d: xp.Design, lake: Lake | None = None) -> dict[str, Any]:
    """Record a planned experiment, with a sample-size estimate from the control's latest matured day."""
    client = registry.client(env.mlflow_tracking_uri)
    champion = registry.holder(client, spec.name, registry.CHAMPION)
    if champion is not None and champion.version != d.versions[0]:
        log.warning("the control, version %s, is not the champion (version %s)", d.versions[0], champion.version)
    estimate = sample_size_estimate(spec, lake, d, env) if lake is not None else None
    event = _record(client, spec.name, d, "start", d.shares, d.start, f"started: {d.kind} of versions "
                    f"{', '.join(d.versions)}", design=d.as_dict(), sample_size=estimate)
    for v in d.versions:
        client.set_model_version_tag(spec.name, v, f"experiment.{d.id}", "running")
    return {"experiment": d.id, "model": spec.name, "kind": d.kind, "versions": list(d.versions),
            "shares": list(d.shares), "primary_metric": d.primary_metric, "effective_from": d.start.isoformat(),
            "last_day": d.last_day.isoformat(), "sample_size": estimate, "event": event}


def sample_size_estimate(spec: ModelSpec, lake: Lake, d: xp.Design, env: Env | None = None) -> dict[str, Any] | None:
    """Matured rows per arm to detect the effect, from the per-row variance of the metric on the control's latest
    served day whose labels have matured, or else on the control's training holdout (its DVC snapshot)."""
    y = p = None
    if lake.exists(spec.label.table):
        # the latest day the control served whose labels had matured when the experiment starts
        labelled = set(lake.partitions(spec.label.table))
        days = [x for x in lake.partitions("scores", spec.partition)
                if x <= d.start - timedelta(days=spec.label.delay_days) and x in labelled]
        if days:
            day = days[-1]
            labels = lake.read_partition(spec.label.table, day).where(F.col("available_at") <= F.lit(d.start))
            rows: pd.DataFrame = (lake.read_partition("scores", day, spec.partition)
                                  .where(F.col("model_version") == d.versions[0])
                                  .join(labels.select(spec.key, spec.label.column), spec.key)
                                  .select("score", spec.label.column).toPandas())  # type: ignore[assignment]
            y, p = rows[spec.label.column].to_numpy(float), rows["score"].to_numpy(float)
            source = f"its rows of {day}"
    if (y is None or len(y) < 50) and env is not None:
        from jobs.models import flavors
        from jobs.steps.promotion import holdout_rows

        control = registry.resolve(registry.client(env.mlflow_tracking_uri), f"models:/{spec.name}/{d.versions[0]}")
        folder = env.dvc_root / control.tags.get("dvc_path", "")
        if control.tags.get("dvc_path") and folder.is_dir():
            holdout, window = holdout_rows(spec, lake.spark, folder)
            y = holdout[spec.label.column].to_numpy(float)
            p = np.asarray(flavors.predict_version(control, holdout, spec), float)
            source = f"its training holdout from {window.holdout_first}"
    if y is None or p is None or len(y) < 50:
        return None
    variance = xp.influence_variance(d.primary_metric, y, p)
    n = xp.sample_size(d.primary_metric, variance, d.mde, d.alpha, arms=len(d.versions))
    return {"rows_per_arm": n, "from": source, "from_rows": len(y),
            "text": f"about {n:,} matured rows per arm to detect a {d.primary_metric} difference of {d.mde:g} "
                    f"(power 0.8, alpha {d.alpha:g}; from version {d.versions[0]}'s {len(y):,} rows: {source})"}


def running(client, spec: ModelSpec, day: date) -> tuple[xp.Design, xp.State]:
    state = state_on(client, spec.name, day)
    if state is None:
        raise InvalidParameter(f"no experiment of {spec.name} is running on {day.isoformat()}: "
                               "start one with `batchloop experiment start`")
    return state.design, state


def change(spec: ModelSpec, env: Env, shares: list[float], effective_from: date, reason: str) -> dict[str, Any]:
    """New shares for the running experiment, from a day on (an A/B's shares are fixed: refused)."""
    client = registry.client(env.mlflow_tracking_uri)
    d, state = running(client, spec, effective_from)
    values = xp.check_shares(shares, len(d.versions))
    if d.kind == "ab":
        raise InvalidParameter(f"{d.id} is an A/B test: its shares are fixed while it runs (stop it and start another)")
    if d.kind == "canary" and not 0 <= values[1] <= xp.CANARY_MAX_SHARE:
        raise InvalidParameter(f"a canary serves its challenger to at most {xp.CANARY_MAX_SHARE}: {values[1]}")
    moved = sum(a != b for a, b in zip(state.table, xp.reallocate(state.table, values), strict=True))
    event = _record(client, spec.name, d, "shares", values, effective_from, reason or "shares changed",
                    buckets_moved=moved)
    return {"experiment": d.id, "shares": list(values), "effective_from": effective_from.isoformat(),
            "keys_moved_share": moved / xp.BUCKETS, "event": event}


def stop(spec: ModelSpec, env: Env, effective_from: date, reason: str) -> dict[str, Any]:
    """End the running experiment: from the day on, the champion serves every row again."""
    client = registry.client(env.mlflow_tracking_uri)
    d, _ = running(client, spec, effective_from)
    shares = [1.0] + [0.0] * (len(d.versions) - 1)
    event = _record(client, spec.name, d, "stop", shares, effective_from, reason or "stopped by hand")
    for v in d.versions:
        client.set_model_version_tag(spec.name, v, f"experiment.{d.id}", f"stopped: {reason}"[:4900])
    return {"experiment": d.id, "stopped": True, "effective_from": effective_from.isoformat(), "event": event}


def show(spec: ModelSpec, env: Env) -> dict[str, Any]:
    client = registry.client(env.mlflow_tracking_uri)
    designs, events = history(client, spec.name)
    return {"model": spec.name, "experiments": [
        {"design": d.as_dict(), "events": [e.as_dict() for e in events if e.experiment == d.id]}
        for d in designs.values()]}


# -- scoring -----------------------------------------------------------------------------------
def bucket_column(salt: str, key: Column) -> Column:
    """md5("salt:key") -> first 32 bits -> modulo BUCKETS: jobs.core.experiment.bucket as a Spark expression."""
    digest = F.md5(F.concat(F.lit(f"{salt}:"), key.cast("string")))
    return F.pmod(F.conv(F.substring(digest, 1, 8), 16, 10).cast("long"), F.lit(xp.BUCKETS))


def arm_column(state: xp.State, bucket: Column) -> Column:
    """The arm that owns a bucket on the state's day (a CASE over the table's runs of buckets)."""
    runs = xp.ranges(state.table)
    expr = None
    for first, end, arm in runs:
        test = (bucket >= F.lit(first)) & (bucket < F.lit(end))
        expr = F.when(test, F.lit(arm)) if expr is None else expr.when(test, F.lit(arm))
    assert expr is not None  # a table has at least one run of buckets
    return expr.cast("int")


# -- analysis ----------------------------------------------------------------------------------
def matured_rows(spec: ModelSpec, lake: Lake, d: xp.Design, day: date):
    """(y, scores per arm, served arm, scored day) of every experiment row whose label matured by `day`."""
    last = min(day - timedelta(days=spec.label.delay_days), d.last_day)
    days = [x for x in lake.partitions("scores", spec.partition) if d.start <= x <= last]
    if not days:
        return None
    scores = lake.read_range("scores", days[0], days[-1], spec.partition).where(F.col("experiment_id") == d.id)
    labels = lake.read_range(spec.label.table, days[0], days[-1]).where(F.col("available_at") <= F.lit(day))
    joined = scores.join(labels.select(spec.key, "dt", spec.label.column), [spec.key, "dt"])
    pdf: pd.DataFrame = joined.select(  # type: ignore[assignment]
        "dt", "arm", spec.label.column, *[F.col("arm_scores")[v].alias(f"s{i}") for i, v in enumerate(d.versions)]
    ).toPandas()
    if pdf.empty:
        return None
    ordinals = np.array([x.toordinal() for x in pdf["dt"]])
    return (pdf[spec.label.column].to_numpy(float), np.vstack([pdf[f"s{i}"].to_numpy(float)
                                                               for i in range(len(d.versions))]),
            pdf["arm"].to_numpy(int), ordinals, len(days))


def analyse(spec: ModelSpec, lake: Lake | Callable[[], Lake], env: Env, day: date) -> dict[str, Any]:
    """The daily look at the running experiment on the labels matured by `day`; decisions apply from day + 1.

    `lake` may be a function that opens it: without a running experiment no Spark session is opened."""
    import mlflow

    from jobs.core.experiment_report import render

    client = registry.client(env.mlflow_tracking_uri)
    designs, events = history(client, spec.name)
    state = _running_on(designs, events, day)
    if state is None:
        return {"model": spec.name, "date": day.isoformat(), "skipped": "no experiment is running"}
    if callable(lake):
        lake = lake()
    d = state.design
    data = matured_rows(spec, lake, d, day)
    if data is None:
        return {"experiment": d.id, "date": day.isoformat(),
                "skipped": f"no experiment day has matured labels yet (label delay {spec.label.delay_days} days)"}
    y, scores, served, ordinals, days_matured = data
    matured_through = day - timedelta(days=spec.label.delay_days)
    decision = xp.analyse(d, state, y, scores, served, ordinals, day, matured_through)
    looks = looks_over_time(d, state, y, scores, served, ordinals, day)
    recorded = _apply(client, spec, env, d, state, decision, day, events)
    _, events = history(client, spec.name)
    summary = {"experiment": d.as_dict(), "date": day.isoformat(), "matured_rows": len(y),
               "matured_days": days_matured, "decision": decision.as_dict(), "looks": looks,
               "events": [e.as_dict() for e in events if e.experiment == d.id], "recorded": recorded,
               "sample_size": next((e.details.get("sample_size") for e in events
                                    if e.experiment == d.id and e.event == "start"), None)}
    prefix = f"experiments/{spec.name}/{d.id}/{day.isoformat()}"
    report_uri = f"s3://{env.bucket_reports}/{prefix}/report.html"
    mlflow.set_experiment(MLFLOW_EXPERIMENT)
    with mlflow.start_run(run_name=f"{d.id}-{day}") as run, tempfile.TemporaryDirectory() as tmp:
        run_url = registry.run_url(client, env.mlflow_tracking_uri, run.info.run_id)
        summary["links"] = {"report": report_uri, "mlflow_run": run_url}
        html = render(summary)
        text = json.dumps(summary, indent=1, default=str)
        objectstore.upload(env, env.bucket_reports, f"{prefix}/report.html", html, "text/html; charset=utf-8")
        objectstore.upload(env, env.bucket_reports, f"{prefix}/analysis.json", text, "application/json")
        mlflow.set_tags({"experiment": d.id, "model": spec.name, "kind": d.kind, "date": day.isoformat(),
                         "decision": "concluded" if decision.conclude else "running", "report": report_uri,
                         "run_id": lineage.run_id()})
        mlflow.log_metrics({f"arm{a['arm']}_{k}": float(v) for a in decision.arms for k, v in a.items()
                            if k not in ("arm", "version") and isinstance(v, int | float) and np.isfinite(v)})
        for name, content in (("experiment_report.html", html), ("experiment_analysis.json", text)):
            (Path(tmp) / name).write_text(content)
            mlflow.log_artifact(str(Path(tmp) / name))
    log.info("experiment %s on %s: %s; report %s", d.id, day, decision.reason, report_uri)
    return {"experiment": d.id, "date": day.isoformat(), "matured_rows": len(y), "concluded": decision.conclude,
            "winner": d.versions[decision.winner] if decision.winner is not None else None,
            "reason": decision.reason, "shares_from_next_day": list(decision.shares),
            "stopped": [d.versions[a] for a in decision.stop_arms], "report": report_uri, "mlflow_run": run_url,
            "recorded": recorded}


def looks_over_time(d: xp.Design, state: xp.State, y, scores, served, ordinals, day: date) -> list[dict[str, Any]]:
    """Each arm's metric, interval and test statistic on the rows matured by each scored day so far."""
    out = []
    for last in sorted(set(ordinals.tolist())):
        rows = ordinals <= last
        look = xp.analyse(d, state, y[rows], scores[:, rows], served[rows], ordinals[rows], day,
                          date.fromordinal(last))
        out.append({"scored_through": date.fromordinal(last).isoformat(), "arms": look.arms, "tests": look.tests})
    return out


def _apply(client, spec: ModelSpec, env: Env, d: xp.Design, state: xp.State, decision: xp.Decision, day: date,
           events: list[xp.Event]) -> list[dict[str, Any]]:
    """Record what the look decided, once per look day, effective from the next day."""
    if any(e.experiment == d.id and e.details.get("look") == day.isoformat() for e in events):
        return []
    effective = day + timedelta(days=1)
    recorded = []
    if decision.stop_arms:
        shares = decision.shares if not decision.conclude else xp.without(state.shares, decision.stop_arms)
        recorded.append(_guardrail(client, spec, env, d, shares, decision.stop_arms, effective,
                                   f"worse than the control on {d.primary_metric} with the test's confidence",
                                   look=day.isoformat()))
    if decision.conclude and decision.winner is not None:
        recorded += _conclude(client, spec, env, d, decision.winner, decision.reason, effective,
                              look=day.isoformat())
    elif not decision.stop_arms and decision.shares != state.shares:
        recorded.append(_record(client, spec.name, d, "shares", decision.shares, effective,
                                "bandit: Thompson sampling on matured rewards", look=day.isoformat()))
    return recorded


def stop_arms(spec: ModelSpec, env: Env, state: xp.State, arms: list[int], day: date, check: str,
              why: str) -> list[dict[str, Any]]:
    """A guardrail outside the daily look (a broken scores contract at scoring, prediction drift): the arms get
    share zero from the next day; with no challenger left, the control wins. What the history already holds for
    the next day (an arm stopped before, an experiment that ended) is not recorded again, so a re-run of the day
    records nothing twice."""
    d = state.design
    client = registry.client(env.mlflow_tracking_uri)
    effective = day + timedelta(days=1)
    after = xp.state_on(d, history(client, spec.name)[1], effective)
    if after is None or not after.active:
        return []
    arms = [a for a in arms if after.shares[a] > 0]
    if not arms:
        return []
    shares = xp.without(after.shares, arms)
    recorded = [_guardrail(client, spec, env, d, shares, arms, effective, f"{why} on {day} ({check})", check=check,
                           day=day.isoformat())]
    if all(x == 0 for x in shares[1:]):
        recorded += _conclude(client, spec, env, d, 0, f"every challenger was stopped by a guardrail ({check})",
                              effective, check=check, day=day.isoformat())
    return recorded


def _guardrail(client, spec: ModelSpec, env: Env, d: xp.Design, shares, arms: list[int], effective: date, why: str,
               **details: Any) -> dict[str, Any]:
    """Record arms stopped by a guardrail (share zero from `effective`) and send the alert."""
    stopped = [d.versions[a] for a in arms]
    reason = f"guardrail: version(s) {', '.join(stopped)} {why}"
    alerts.notify(env, f"batchloop: experiment {d.id} stopped version(s) {', '.join(stopped)}",
                  {"experiment": d.id, "model": spec.name, "from": effective.isoformat(), "reason": reason})
    return _record(client, spec.name, d, "guardrail", shares, effective, reason, stopped=stopped, **details)


def _conclude(client, spec: ModelSpec, env: Env, d: xp.Design, winner: int, reason: str, effective: date,
              **details: Any) -> list[dict[str, Any]]:
    """Record the conclusion (the winner serves every row from `effective`), tag every arm's version with the
    result, and promote a winning challenger through the alias history (gate.mode auto) or leave it to
    `batchloop promote` (manual)."""
    from jobs.steps import promotion

    version = d.versions[winner]
    shares = [0.0] * len(d.versions)
    shares[winner] = 1.0
    recorded = [_record(client, spec.name, d, "conclude", shares, effective, reason, winner=version, **details)]
    for v in d.versions:
        result = "won" if v == version else "lost" if v != d.versions[0] else "control"
        client.set_model_version_tag(spec.name, v, f"experiment.{d.id}", f"{result}: {reason}"[:4800])
    if winner != 0:
        why = f"experiment {d.id}: {reason}"
        if spec.gate.mode == "auto":
            recorded.append({"promotion": promotion.promote(spec, env, f"models:/{spec.name}/{version}", why,
                                                            effective, force=True)})
        else:
            log.info("%s won %s; gate.mode is manual: `batchloop promote --model models:/%s/%s` applies it",
                     version, d.id, spec.name, version)
            recorded.append({"promotion": "awaiting manual promotion"})
    alerts.notify(env, f"batchloop: experiment {d.id} concluded for version {version}",
                  {"experiment": d.id, "model": spec.name, "reason": reason})
    return recorded


@dataclass(frozen=True)
class DriftArms:
    """A canary's or bandit's arms on a day, with each arm's reference profile (for its own prediction drift)."""

    state: xp.State
    profiles: dict[str, dict[str, Any]]  # version -> its training reference profile

    def edges(self) -> dict[str, list[float]]:
        return {v: p["score"]["edges"] for v, p in self.profiles.items()}


def drift_arms(client, spec: ModelSpec, day: date) -> DriftArms | None:
    """The arms whose own prediction drift the day's drift step measures: those of a running canary or bandit."""
    from jobs.io.registry import PROFILE_ARTIFACT

    state = state_on(client, spec.name, day)
    if state is None or state.design.kind not in ("canary", "bandit"):
        return None
    return DriftArms(state, {v: registry.load_json_artifact(registry.resolve(client, f"models:/{spec.name}/{v}"),
                                                            PROFILE_ARTIFACT) for v in state.design.versions})


def drift_guardrail(spec: ModelSpec, env: Env, day: date, arms: DriftArms,
                    folded: dict[str, Any]) -> dict[str, Any] | None:
    """Each arm's prediction drift (its scores on all the day's rows, folded by the drift step's job as
    `arm:<version>`) against its own reference; a challenger whose drift breaches while the control's does not
    is stopped from the next day."""
    from jobs.core.reference import numeric_from
    from jobs.steps.drift import judge_numeric

    d = arms.state.design
    if any(f"arm:{v}" not in folded for v in d.versions):  # the day was scored outside the experiment
        return None
    judged = [judge_numeric("score", numeric_from(arms.profiles[v]["score"]), folded[f"arm:{v}"].numeric["score"],
                            np.asarray(arms.profiles[v]["score"]["coarse"], int), "prediction", spec.drift, {},
                            decisive="wasserstein") for v in d.versions]
    drifted = [bool(j["drifted"]) for j in judged]
    stops = xp.guardrail_stops(arms.state, drifted, drifted[0])
    recorded = stop_arms(spec, env, arms.state, stops, day, "prediction drift",
                         "drifted in their predictions while the control did not")
    return {"experiment": d.id, "arms": [{"version": v, "wasserstein": j["statistic"], "drifted": x}
                                         for v, j, x in zip(d.versions, judged, drifted, strict=True)],
            "stopped": [d.versions[a] for a in stops], "recorded": recorded}
