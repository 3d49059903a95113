"""What happened over a range of scored days, from the lake, the registry and MLflow.

    python -m infra.story 2026-02-10 2026-02-17
"""

from __future__ import annotations

import json
import sys
from datetime import date

from pyspark.sql import functions as F

from infra.stack import Stack, load_or_create_env
from jobs import registry
from jobs.lake import Lake
from jobs.settings import load_env, load_model
from jobs.spark import build_session


def versions(client, name: str) -> list[str]:
    lines = []
    for v in sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version)):
        m = client.get_run(v.run_id).data.metrics
        lines.append(f"  v{v.version}: trained on {v.tags.get('training_window')} (labels known on "
                     f"{v.tags.get('as_of')}), holdout AUC {m.get('holdout_auc', float('nan')):.3f}, "
                     f"snapshot {v.tags.get('dvc_md5', '?')[:12]}, gate "
                     f"{'passed' if v.tags.get('gate_passed') == 'true' else 'failed: ' + v.tags.get('gate_reasons', '?')}")
    return lines


def decisions(client) -> dict[str, str]:
    """The retraining policy's decision per as-of day (the latest run of each day)."""
    experiment = client.get_experiment_by_name("batchloop-retraining")
    if experiment is None:
        return {}
    out = {}
    for run in sorted(client.search_runs([experiment.experiment_id], max_results=200),
                      key=lambda r: r.info.start_time):
        decision = json.loads(open(client.download_artifacts(run.info.run_id, "decision.json")).read())
        if decision["retrain"]:
            text = "retrain: " + "; ".join(t for t in decision["triggers"])
        else:
            text = "no: " + ("; ".join(decision["blockers"]) or "nothing fired")
        out[run.data.tags["as_of"]] = text
    return out


def main(first: date, last: date) -> int:
    stack, env, spec = Stack(load_or_create_env()), load_env(), load_model()
    name = spec.name
    client = registry.client(env.mlflow_tracking_uri)
    lake = Lake(build_session(env, "batchloop-story"), env)
    print(f"\n=== batchloop: {first} .. {last} ===\n\nModel versions of {name!r}:")
    print("\n".join(versions(client, name)))
    print("\nWho was champion (alias history):")
    for e in registry.alias_history(client, name):
        print(f"  {e.effective_from}  @{e.alias:10} -> {'v' + e.version if e.version else 'removed'}  ({e.reason})")
    scored = {r["dt"]: r for r in lake.read_range("scores", first, last, spec.partition).groupBy("dt").agg(
        F.count(F.lit(1)).alias("rows"), F.max("model_version").alias("v")).collect()}
    drift = {r["dt"]: r for r in lake.read_range("drift_metrics", first, last, spec.partition).where(F.col("kind") == "dataset")
             .where(F.col("method") == "share_drifted").select("dt", "statistic", "drifted").collect()} \
        if lake.exists("drift_metrics") else {}
    prediction = {r["dt"]: r["statistic"] for r in lake.read_range("drift_metrics", first, last, spec.partition)
                  .where((F.col("feature") == "score") & F.col("decisive")).select("dt", "statistic").collect()} \
        if lake.exists("drift_metrics") else {}
    shadow = {r["dt"]: r["v"] for r in lake.read_range("scores_shadow", first, last, spec.partition).groupBy("dt")
              .agg(F.max("model_version").alias("v")).collect()} if lake.exists("scores_shadow") else {}
    policy = decisions(client)
    print("\nDay by day:")
    print(f"  {'day':10}  {'model':5}  {'scored':>7}  {'quar.':>5}  {'drifted':>7}  {'pred.W':>6}  "
          f"{'breach':6}  {'shadow':6}  retraining policy")
    day = first
    while day <= last:
        s, d = scored.get(day), drift.get(day)
        manifest = lake.manifest("quarantine", day, {"source_table": spec.table}) or {}
        cells = [str(day), f"v{s['v']}" if s else "-", str(s["rows"]) if s else "0",
                 str(manifest.get("quarantined_rows", "-")), f"{d['statistic']:.0%}" if d else "-",
                 f"{prediction[day]:.2f}" if day in prediction else "-",
                 ("yes" if d["drifted"] else "no") if d else "-", f"v{shadow[day]}" if day in shadow else "-"]
        print(f"  {cells[0]:10}  {cells[1]:5}  {cells[2]:>7}  {cells[3]:>5}  {cells[4]:>7}  {cells[5]:>6}  "
              f"{cells[6]:6}  {cells[7]:6}  {policy.get(day.isoformat(), '-')}")
        day = date.fromordinal(day.toordinal() + 1)
    retro = lake.with_namespace("retro_first_champion")
    if retro.exists("retro_diff"):
        print("\nRetro-test (the first champion on the days after the promotion, against production):")
        for r in retro.read("retro_diff").where(F.col("model") == name).orderBy("dt").collect():
            print(f"  {r['dt']}  {r['retro_model']} vs {r['production_models']}: {r['rows_compared']} rows, "
                  f"mean |diff| {r['mean_abs_diff']:.4f}, max {r['max_abs_diff']:.4f}, "
                  f"{r['share_diff_over_0_01']:.0%} differ by more than 0.01")
    c = stack.config
    latest = max(drift) if drift else last
    print(f"""
Where to look
  Airflow UI    {c['BATCHLOOP_AIRFLOW_URL']}   user admin, password in {stack.password_file()}
                DAGs score_daily, retrain, retro_test, promote, monitor_performance
  MLflow UI     {c['MLFLOW_TRACKING_URI']}   model {name!r}; experiments batchloop-training, -evaluation,
                -drift (HTML reports as artifacts), -retraining (every policy decision with its reasons)
  Drift report  s3://{env.bucket_reports}/drift/{name}/{latest}/report.html (also in the MLflow drift run)
  Data Docs     s3://{env.bucket_reports}/datadocs/{env.database}.features/<day>/
  The lake      .venv/bin/batchloop sql "SELECT dt, model_version, count(*) FROM scores GROUP BY 1, 2 ORDER BY 1"
  Lineage       .venv/bin/batchloop lineage --date {last}
  Stop          make down
""")
    return 0


if __name__ == "__main__":
    sys.exit(main(date.fromisoformat(sys.argv[1]), date.fromisoformat(sys.argv[2])))
