"""Drift in one Spark pass, checked against exact scipy/numpy computations, and the drift job end to end."""

from __future__ import annotations

import json
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, HTTPServer

import exact_drift
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from jobs.core import drift_stats, histogram
from jobs.core.reference import coarse_indices, fine_edges, quantile_levels
from jobs.io import registry
from jobs.steps import drift
from jobs.steps import score as scoring

pytestmark = pytest.mark.integration

FINE, COARSE = 4000, 10


def scenario(name: str, rng: np.random.Generator):
    """Reference and current samples (numeric x, categorical c) for one drift scenario."""
    n_ref, n_cur = 200_000, 100_000
    ref = pd.DataFrame({"x": rng.normal(50, 10, n_ref), "c": rng.choice(["a", "b", "c"], n_ref, p=[.5, .3, .2])})
    x, c = rng.normal(50, 10, n_cur), rng.choice(["a", "b", "c"], n_cur, p=[.5, .3, .2]).astype(object)
    if name == "mean_shift":
        x = x + 3
    elif name == "variance_change":
        x = 50 + (x - 50) * 1.5
    elif name == "new_category":
        c[rng.uniform(size=n_cur) < 0.15] = "new"
    elif name == "quality_incident":
        x[rng.uniform(size=n_cur) < 0.1] = np.nan
        c[rng.uniform(size=n_cur) < 0.1] = None
    return ref, pd.DataFrame({"x": x, "c": c})


def exact(ref: pd.DataFrame, cur: pd.DataFrame, coarse_edges: np.ndarray) -> dict[str, float]:
    """The same statistics straight from the raw values with scipy and numpy."""
    num = exact_drift.numeric(ref["x"].dropna().to_numpy(), cur["x"].dropna().to_numpy(), coarse_edges)
    cat = exact_drift.categorical(ref["c"], cur["c"])
    return {**num, "cat_psi": cat["psi"], "cat_jensenshannon": cat["jensenshannon"], "chisquare": cat["chisquare"]}


@pytest.mark.parametrize("name", ["no_drift", "mean_shift", "variance_change", "new_category", "quality_incident"])
def test_one_pass_statistics_match_exact_computations(spark, spec, name):
    # given reference and current data of the scenario, as Spark DataFrames
    rng = np.random.default_rng(["no_drift", "mean_shift", "variance_change", "new_category",
                                 "quality_incident"].index(name))
    ref, cur = scenario(name, rng)
    levels = quantile_levels(FINE)
    at_levels = np.quantile(ref["x"].to_numpy(), levels)
    edges = np.unique(at_levels)
    coarse = coarse_indices(edges, levels, at_levels, COARSE)
    frames = [spark.createDataFrame(df.assign(k=np.arange(len(df)))) for df in (ref, cur)]
    # when both are folded into histograms by the Spark job
    r, c = (histogram.overall(histogram.collect(f, {"x": edges}, ("c",))) for f in frames)
    ours = {m: drift_stats.numeric_statistic(m, r.numeric["x"], c.numeric["x"], coarse)[0]
            for m in ("ks", "wasserstein", "psi", "jensenshannon")}
    ours.update({f"cat_{m}": drift_stats.categorical_statistic(m, r.categorical["c"], c.categorical["c"])[0]
                 for m in ("psi", "jensenshannon")})
    ours["chisquare"] = drift_stats.categorical_statistic("chisquare", r.categorical["c"], c.categorical["c"])[0]
    truth = exact(ref, cur, edges[coarse])
    # then bins-based statistics agree to 1e-9, KS to 0.002, Wasserstein to 1%
    for m in ("psi", "jensenshannon", "cat_psi", "cat_jensenshannon"):
        assert ours[m] == pytest.approx(truth[m], abs=1e-9), m
    if np.isinf(truth["chisquare"]):
        assert np.isinf(ours["chisquare"])
    else:
        assert ours["chisquare"] == pytest.approx(truth["chisquare"], abs=1e-9)
    assert abs(ours["ks"] - truth["ks"]) <= 0.002
    assert ours["wasserstein"] == pytest.approx(truth["wasserstein"], rel=0.01)
    # and the verdicts are the same
    t = spec.drift.thresholds
    assert (ours["wasserstein"] > t.wasserstein) == (truth["wasserstein"] > t.wasserstein)
    assert (ours["cat_jensenshannon"] > t.jensenshannon) == (truth["cat_jensenshannon"] > t.jensenshannon)
    expected_drift = {"no_drift": False, "mean_shift": True, "variance_change": True, "new_category": False,
                      "quality_incident": False}[name]
    assert (ours["wasserstein"] > t.wasserstein) == expected_drift
    if name == "new_category":
        assert ours["cat_jensenshannon"] > t.jensenshannon
    if name == "quality_incident":
        assert c.numeric["x"].missing == int(cur["x"].isna().sum()) and c.categorical["c"].missing > 0


@pytest.mark.parametrize("shape", ["point_mass", "student_t_1.5"])
def test_ks_and_wasserstein_are_close_to_exact_on_a_point_mass_and_on_heavy_tails(spark, shape):
    # given a reference on one value (the current beside it), or heavy tails on both sides
    rng = np.random.default_rng(7)
    if shape == "point_mass":
        ref, cur = np.full(100_000, 5.0), rng.normal(4.5, 1.0, 50_000)
    else:
        ref, cur = rng.standard_t(1.5, 100_000), rng.standard_t(1.5, 50_000) + 0.2
    # when both are folded by the Spark job on the edges a reference profile uses
    edges = fine_edges(np.quantile(ref, quantile_levels(FINE)), ref, FINE)
    frames = [spark.createDataFrame(pd.DataFrame({"x": v, "k": np.arange(v.size)})) for v in (ref, cur)]
    r, c = (histogram.overall(histogram.collect(f, {"x": edges}, ())).numeric["x"] for f in frames)
    # then KS and Wasserstein match scipy on the raw values
    assert abs(drift_stats.ks(r.counts, c.counts)[0] - exact_drift.numeric(ref, cur, edges)["ks"]) <= 0.002
    w = drift_stats.wasserstein(edges, (r.counts, r.sums, r.min, r.max), (c.counts, c.sums, c.min, c.max))
    assert w == pytest.approx(stats.wasserstein_distance(ref, cur), rel=0.01)


class Recorder(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - the http.server API
        Recorder.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def webhook():
    server = HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook/secret-token"
    server.shutdown()
    server.server_close()


def test_a_stable_day_shows_no_drift(champion, lake, env):
    # given a day of the same population the model was trained on, scored with the pinned version
    p, model = champion
    day = date(2026, 1, 20)
    scoring.run(p, lake, lake, env, day, model_ref=model.uri)
    # when its drift is computed
    summary = drift.run(p, lake, env, day)
    # then nothing breached
    assert not summary["breached"] and summary["share_drifted"] < p.drift.dataset_drift_share
    assert "monthly_charges" not in summary["drifted_features"]


def test_the_covariate_shift_is_detected_reported_and_alerted(champion, lake, env, services, webhook):
    # given the day after the scheduled covariate shift, scored by the champion
    p, model = champion
    day = date(2026, 2, 16)
    scoring.run(p, lake, lake, env, day)
    with_hook = env.model_copy(update={"notifier_url": webhook})
    # when drift is computed
    summary = drift.run(p, lake, with_hook, day)
    # then the shifted and new-category features drift, per feature and method in drift_metrics
    assert summary["breached"] and {"monthly_charges", "tariff_plan"} <= set(summary["drifted_features"])
    rows = lake.read_partition("drift_metrics", day, p.partition)
    methods = {(r.feature, r.method) for r in rows.select("feature", "method").collect()}
    assert {("monthly_charges", m) for m in ("wasserstein", "ks", "psi", "jensenshannon", "kl")} <= methods
    assert {("tariff_plan", m) for m in ("jensenshannon", "chisquare", "psi", "unseen_share")} <= methods
    assert ("score", "wasserstein") in methods and ("*", "mmd") in methods and ("*", "share_drifted") in methods
    unseen = rows.where("feature = 'tariff_plan' AND method = 'unseen_share'").first()
    assert unseen.drifted and 0.1 < unseen.statistic < 0.3
    # and the report is in the reports bucket and in MLflow, and the alert reached the webhook
    key = summary["report"].removeprefix(f"s3://{env.bucket_reports}/")
    html = services.s3_client().get_object(Bucket=env.bucket_reports, Key=key)["Body"].read().decode()
    assert "Drift BREACHED" in html and "monthly_charges" in html and "<script" not in html
    run_id = summary["mlflow_run"].rsplit("/", 1)[1]
    artifacts = {a.path for a in registry.client(env.mlflow_tracking_uri).list_artifacts(run_id)}
    assert {"drift_report.html", "drift_summary.json"} <= artifacts
    alert = Recorder.received[-1]
    assert alert["date"] == day.isoformat() and "monthly_charges" in alert["drifted_features"]
    assert services.config["AWS_SECRET_ACCESS_KEY"] not in json.dumps(alert)


def test_the_report_shows_the_trend_of_earlier_days(champion, lake, env, services):
    p, _ = champion
    day = date(2026, 2, 17)
    scoring.run(p, lake, lake, env, day)
    summary = drift.run(p, lake, env, day)
    key = summary["report"].removeprefix(f"s3://{env.bucket_reports}/")
    body = services.s3_client().get_object(Bucket=env.bucket_reports,
                                           Key=key.replace("report.html", "summary.json"))["Body"].read()
    trend = json.loads(body)["trend"]
    assert trend["days"][-2:] == ["2026-02-16", "2026-02-17"]


def test_the_workers_reading_the_partitions_files_fold_what_spark_hands_over(champion, lake, env):
    # given a scored day in the lake on S3 (the covariate-shift day: NaN-free numbers, a new category, missing values)
    p, model = champion
    day = date(2026, 2, 16)
    if day not in lake.partitions("scores", p.partition):
        scoring.run(p, lake, lake, env, day)
    profile = registry.load_json_artifact(registry.resolve(registry.client(env.mlflow_tracking_uri), model.uri),
                                          drift.PROFILE_ARTIFACT)
    # when the day is folded by the drift step (its Python workers read the partitions' Parquet files) and by the
    # same fold with every row handed over by Spark
    files = drift.collect_day(lake, day, profile, p)
    handed = drift.collect(lake.read_partition(p.table, day), lake.read_partition("scores", day, p.partition),
                           profile, p)
    # then every histogram is the same: rows, counts per bin, value sums, missing values, categories
    for side in ("features", "scores"):
        a, b = files[side], handed[side]
        assert a.rows == b.rows > 0, side
        for c, h in a.numeric.items():
            g = b.numeric[c]
            assert h.counts.tolist() == g.counts.tolist() and (h.missing, h.n, h.min, h.max) == (
                g.missing, g.n, g.min, g.max), c
            assert np.allclose(h.sums, g.sums, rtol=1e-12, atol=1e-9), c
        for c, k in a.categorical.items():
            assert (k.counts, k.missing) == (b.categorical[c].counts, b.categorical[c].missing), c
    # and the row sample has the size asked for, drawn from the day's rows
    sample = files["features"].sample
    assert sample.rows.shape == (min(p.drift.multivariate.sample_rows, files["features"].rows),
                                 len(profile["sample"]["columns"]))
