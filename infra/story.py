"""What happened over a range of scored days, from the lake, the registry and MLflow.

    python -m infra.story 2026-02-10 2026-02-17
"""

from __future__ import annotations

import json
import sys
from datetime import date

from pyspark.sql import functions as F

from infra.stack import Stack, describe, load_or_create_env
from jobs.config import load_env, load_params
from jobs.io import registry
from jobs.io.lake import Lake
from jobs.io.spark import build_session


def gate_text(tags: dict[str, str]) -> str:
    if "gate_passed" not in tags:
        return "not gated"
    return "gate passed" if tags["gate_passed"] == "true" else f"gate failed: {tags.get('gate_reasons', '?')}"


def versions(client, spec) -> list[str]:
    metric = spec.primary_metric
    lines = []
    for v in sorted(client.search_model_versions(f"name='{spec.name}'"), key=lambda v: int(v.version)):
        m = client.get_run(v.run_id).data.metrics
        lines.append(f"  v{v.version}: trained on {v.tags.get('training_window')} (labels known on "
                     f"{v.tags.get('as_of')}), holdout {metric.upper()} {m.get(f'holdout_{metric}', float('nan')):.3f}, "
                     f"snapshot {v.tags.get('dvc_md5', '?')[:12]}, " + gate_text(v.tags)
                     + "".join(f"; {k}: {t.split(':', 1)[0]}" for k, t in sorted(v.tags.items())
                               if k.startswith("experiment.")))
    return lines


def decisions(client, model: str) -> dict[str, str]:
    """The model's retraining policy decision per as-of day (the latest run of each day)."""
    experiment = client.get_experiment_by_name("batchloop-retraining")
    if experiment is None:
        return {}
    out = {}
    for run in sorted(client.search_runs([experiment.experiment_id], f"tags.model = '{model}'", max_results=200),
                      key=lambda r: r.info.start_time):
        decision = json.loads(open(client.download_artifacts(run.info.run_id, "decision.json")).read())
        if decision["retrain"]:
            text = "retrain: " + "; ".join(t for t in decision["triggers"])
        else:
            text = "no: " + ("; ".join(decision["blockers"]) or "nothing fired")
        out[run.data.tags["as_of"]] = text
    return out


def experiment_story(client, name: str) -> None:
    """The model's experiments: their events and the report of their latest look."""
    from jobs.steps.experiment import MLFLOW_EXPERIMENT, history

    designs, events = history(client, name)
    looks = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
    for d in designs.values():
        print(f"\nExperiment {d.id} ({d.kind} of versions {', '.join(d.versions)}, {d.primary_metric}, "
              f"{d.start}..{d.last_day}):")
        for e in events:
            if e.experiment == d.id:
                print(f"  {e.effective_from}  {e.event:9}  shares {', '.join(f'{x:g}' for x in e.shares)}  ({e.reason})")
        found = client.search_runs([looks.experiment_id], f"tags.experiment = '{d.id}'",
                                   order_by=["tags.date DESC"], max_results=1) if looks else []
        if found:
            print(f"  report of the look on {found[0].data.tags['date']}: {found[0].data.tags['report']}")


def model_story(client, lake: Lake, spec, first: date, last: date) -> date:
    """One model's versions, champions and days; the last day drift was measured."""
    name = spec.name
    print(f"\n--- model {name!r} ({spec.task}, {spec.trainer.name} on {spec.table}) ---\n\nVersions:")
    print("\n".join(versions(client, spec)))
    print("\nWho was champion (alias history):")
    for e in registry.alias_history(client, name):
        print(f"  {e.effective_from}  @{e.alias:10} -> {'v' + e.version if e.version else 'removed'}  ({e.reason})")
    experiment_story(client, name)
    mine = spec.partition
    scored = {r["dt"]: r for r in lake.read_range("scores", first, last, mine).groupBy("dt").agg(
        F.count(F.lit(1)).alias("rows"), F.concat_ws("+", F.array_sort(F.collect_set("model_version"))).alias("v"))
        .collect()} if lake.exists("scores") else {}
    drift = {r["dt"]: r for r in lake.read_range("drift_metrics", first, last, mine)
             .where((F.col("kind") == "dataset") & (F.col("method") == "share_drifted"))
             .select("dt", "statistic", "drifted").collect()} if lake.exists("drift_metrics") else {}
    prediction = {r["dt"]: r["statistic"] for r in lake.read_range("drift_metrics", first, last, mine)
                  .where((F.col("feature") == "score") & F.col("decisive")).select("dt", "statistic").collect()} \
        if lake.exists("drift_metrics") else {}
    shadow = {r["dt"]: r["v"] for r in lake.read_range("scores_shadow", first, last, mine).groupBy("dt")
              .agg(F.max("model_version").alias("v")).collect()} if lake.exists("scores_shadow") else {}
    metric = spec.primary_metric
    matured: dict[date, str] = {}
    if lake.exists("performance_metrics"):
        for r in lake.read_range("performance_metrics", first, last, mine).orderBy("dt", "source").collect():
            if r[metric] is not None:
                matured[r["dt"]] = (matured.get(r["dt"], "") + (" / " if r["dt"] in matured else "")
                                    + f"{'shadow ' if r['source'] == 'scores_shadow' else ''}v{r['model_version']} "
                                    f"{r[metric]:.3f}")
    policy = decisions(client, name)
    print(f"\nDay by day (matured: {metric.upper()} of what was served, and of the shadow, on the day's labels):")
    print(f"  {'day':10}  {'model':5}  {'scored':>7}  {'quar.':>5}  {'drifted':>7}  {'pred.W':>6}  "
          f"{'breach':6}  {'shadow':6}  {'matured':22}  retraining policy")
    day = first
    while day <= last:
        s, d = scored.get(day), drift.get(day)
        manifest = lake.manifest("quarantine", day, {"source_table": spec.table}) or {}
        cells = [str(day), "v" + s["v"].replace("+", "+v") if s else "-", str(s["rows"]) if s else "0",
                 str(manifest.get("quarantined_rows", "-")), f"{d['statistic']:.0%}" if d else "-",
                 f"{prediction[day]:.2f}" if day in prediction else "-",
                 ("yes" if d["drifted"] else "no") if d else "-", f"v{shadow[day]}" if day in shadow else "-"]
        print(f"  {cells[0]:10}  {cells[1]:5}  {cells[2]:>7}  {cells[3]:>5}  {cells[4]:>7}  {cells[5]:>6}  "
              f"{cells[6]:6}  {cells[7]:6}  {matured.get(day, '-'):22}  {policy.get(day.isoformat(), '-')}")
        day = date.fromordinal(day.toordinal() + 1)
    retro = lake.with_namespace("retro_first_champion")
    if retro.exists("retro_diff"):
        rows = retro.read("retro_diff").where(F.col("model") == name).orderBy("dt").collect()
        if rows:
            print("\nRetro-test (the first champion on the days after the promotion, against production):")
        for r in rows:
            print(f"  {r['dt']}  {r['retro_model']} vs {r['production_models']}: {r['rows_compared']} rows, "
                  f"mean |diff| {r['mean_abs_diff']:.4f}, max {r['max_abs_diff']:.4f}, "
                  f"{r['share_diff_over_0_01']:.0%} differ by more than 0.01")
    return max(drift) if drift else last


def main(first: date, last: date) -> int:
    stack, env, params = Stack(load_or_create_env()), load_env(), load_params()
    client = registry.client(env.mlflow_tracking_uri)
    lake = Lake(build_session(env, "batchloop-story"), env)
    print(f"\n=== batchloop: {first} .. {last}, models {', '.join(params.models)} ===")
    latest = {name: model_story(client, lake, spec, first, last) for name, spec in params.models.items()}
    c = stack.config
    name = next(iter(params.models))
    lineage = env.lineage or "off"
    dags = ", ".join(f"score_daily__{m}, retrain__{m}, monitor_performance__{m}" for m in params.models)
    print(f"""
Where to look
  The stack     {describe(stack)}
  Airflow UI    {c['BATCHLOOP_AIRFLOW_URL']}   user admin, password in {stack.password_file()}
                DAGs {dags}, retro_test, promote, experiment
  MLflow UI     {c['MLFLOW_TRACKING_URI']}   models {', '.join(repr(m) for m in params.models)}; experiments
                batchloop-training, -evaluation, -drift (HTML reports as artifacts), -retraining (every policy
                decision with its reasons), -experiments (each look at an experiment, its report as an artifact)
  Drift reports {'; '.join(f"s3://{env.bucket_reports}/drift/{m}/{d}/report.html" for m, d in latest.items())}
  Data Docs     s3://{env.bucket_reports}/datadocs/{env.database}.<table>/<day>/
  The lake      .venv/bin/batchloop sql "SELECT model, dt, model_version, count(*) FROM scores GROUP BY 1, 2, 3 ORDER BY 1, 2"
  Lineage       .venv/bin/batchloop lineage --date {last} --model-name {name}
                .venv/bin/batchloop lineage --events --date {last} --model-name {name}   (OpenLineage: {lineage})
  Stop          make down
""")
    return 0


if __name__ == "__main__":
    sys.exit(main(date.fromisoformat(sys.argv[1]), date.fromisoformat(sys.argv[2])))
