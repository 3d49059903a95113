import math
import re

from jobs.core.report import render_drift_report

LINKS = {"mlflow_run": "http://127.0.0.1:5000/#/experiments/2/runs/abc",
         "report": "s3://batchloop-reports/drift/churn/2026-02-12/report.html"}


def method(name, statistic, threshold, drifted, decisive=False):
    return {"method": name, "statistic": statistic, "threshold": threshold, "drifted": drifted, "decisive": decisive}


def numeric(name, drifted, wasserstein, kind="numeric"):
    return {"feature": name, "kind": kind, "importance": 0.1, "decisive": "wasserstein", "drifted": drifted,
            "methods": [method("wasserstein", wasserstein, 0.1, drifted, decisive=True),
                        method("psi", float("nan"), 0.2, None),
                        method("ks", 0.0 if drifted else 0.4, 0.05, drifted),
                        method("missing_share", 0.0, 0.05, False)],
            "plot": {"type": "numeric", "edges": [10.0, 20.5, 1500.0, float("nan")],
                     "reference": [0.2, 0.3, 0.3, 0.1, 0.1], "current": [0.1, 0.2, None, 0.4, 0.3],
                     "missing": {"reference": 0.0, "current": None}}}


def categorical(name, drifted, js):
    return {"feature": name, "kind": "categorical", "importance": None, "decisive": "jensenshannon", "drifted": drifted,
            "methods": [method("jensenshannon", js, 0.1, drifted, decisive=True),
                        method("chisquare", 0.001 if drifted else 0.5, 0.05, drifted),
                        method("unseen_share", None, 0.05, False)],
            "plot": {"type": "categorical", "categories": ["basic", "family", "unlimited_5g"],
                     "reference": [0.5, 0.5, 0.0], "current": [0.4, 0.4, 0.2],
                     "missing": {"reference": 0.01, "current": 0.0}}}


def a_summary(trend_days=0):
    features = [numeric("monthly_charges", True, 0.31), numeric("tenure_months", False, 0.02),
                numeric("total_charges", False, float("nan")), categorical("tariff_plan", True, 0.25),
                categorical("contract_type", False, None), numeric("score", False, 0.05, kind="prediction")]
    days = [f"2026-01-{d:02d}" for d in range(1, trend_days + 1)]
    return {
        "date": "2026-02-12", "model": "models:/churn/3", "model_reference": "models:/churn@champion as of 2026-02-12",
        "run_id": "scheduled__2026-02-12T00:00:00+00:00", "generated_at": "2026-11-23T12:00:00+00:00",
        "reference": {"rows": 378000, "window": "2026-01-01..2026-01-18"}, "current": {"rows": None},
        "dataset": {"share_drifted": 0.4, "threshold": 0.3, "drifted": True, "weighted_share": float("nan"),
                    "drifted_features": ["monthly_charges", "tariff_plan"], "breached": True},
        "prediction": {"method": "wasserstein", "statistic": None, "threshold": 0.1, "drifted": None},
        "multivariate": {"method": "mmd", "statistic": 0.0123, "p_value": 0.005, "alpha": 0.01, "drifted": True,
                         "sample_rows": [1000, 1000]},
        "features": features,
        "trend": {"days": days, "share_drifted": [i / 40 for i in range(trend_days)],
                  "prediction": [0.01 * i if i != 3 else None for i in range(trend_days)],
                  "features": {f["feature"]: [0.02 * i if i != 5 else math.nan for i in range(trend_days)]
                               for f in features}},
        "links": LINKS,
    }


def test_the_page_shows_verdicts_features_and_thresholds_without_external_references():
    # given a summary with drifted features, missing numbers and no trend history
    summary = a_summary(trend_days=0)

    # when it is rendered
    page = render_drift_report(summary)

    # then the verdict, every feature and the thresholds are on the page, with numbers it lacks shown as n/a
    assert "Drift BREACHED" in page
    for f in summary["features"]:
        assert f'id="f-{f["feature"]}"' in page
    assert "threshold 30.0%" in page
    assert "drift if p below" in page and "drift if above" in page
    assert "n/a" in page and not re.search(r"\bnan\b", page, re.IGNORECASE)
    assert "Not enough history for a trend" in page
    # and the charts are inline SVG, with no script and no URL but the links given
    assert page.count("<svg") == 1 + len(summary["features"])
    assert "<script" not in page.lower()
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= set(LINKS.values())
    for href in LINKS.values():
        assert f'href="{href}"' in page
    assert 20_000 < len(page) < 400_000


def test_drifted_features_come_first_in_the_page():
    # given a summary whose drifted features are not first in its list
    summary = a_summary()

    # when it is rendered
    page = render_drift_report(summary)

    # then the drifted features' sections come before the others
    order = sorted(summary["features"], key=lambda f: page.index(f'id="f-{f["feature"]}"'))
    assert [f["feature"] for f in order[:2]] == ["monthly_charges", "tariff_plan"]


def test_a_fourteen_day_trend_renders_the_trend_charts():
    # given a summary with two weeks of history
    summary = a_summary(trend_days=14)

    # when it is rendered
    page = render_drift_report(summary)

    # then the trend section has its chart with the per-feature small multiples
    assert "Not enough history" not in page
    assert "The last 14 days" in page
    assert "Share of drifted features (threshold 30.0%)" in page
    assert "Top 5 features" in page
    assert page.count("<svg") == 2 + len(summary["features"])


def test_an_empty_summary_still_renders_a_page():
    # given a summary with nothing in it
    # when it is rendered
    page = render_drift_report({})

    # then the page says the verdict is unavailable rather than failing
    assert "Drift verdict unavailable" in page
    assert "<svg" not in page


def test_the_banner_says_what_breached_the_policy():
    summary = a_summary()
    assert "breached by the share of drifted features</small>" in render_drift_report(summary)
    # a stable share of features with a drifted prediction: the prediction is named as the cause
    summary["dataset"].update(share_drifted=0.1, drifted=False)
    summary["prediction"].update(statistic=0.25, drifted=True)
    assert "breached by prediction drift</small>" in render_drift_report(summary)
    summary["dataset"].update(drifted=True)
    assert "breached by the share of drifted features and prediction drift</small>" in render_drift_report(summary)


def test_a_distribution_chart_draws_every_share_and_escapes_its_labels():
    # given shares per category, one missing, and a category name that looks like markup
    from jobs.core.report import distribution_chart

    # when its chart is drawn
    chart = str(distribution_chart("plan", ["basic", "<b>5g</b>"], [0.25, 0.75], [0.5, float("nan")]))

    # then every bar states its share (a missing one as n/a), the axis is in percent and the label is text
    assert chart.count("<rect") == 4 + 2  # four bars and the two legend keys
    for title in ("basic: reference 25.0%", "basic: current 50.0%", "&lt;b&gt;5g&lt;/b&gt;: reference 75.0%",
                  "&lt;b&gt;5g&lt;/b&gt;: current n/a"):
        assert f"<title>{title}</title>" in chart
    assert ">0%</text>" in chart and ">80%</text>" in chart
    assert "<b>" not in chart and "nan" not in chart.lower()


def test_the_scores_chart_draws_a_threshold_line_and_one_bar_per_feature():
    # given six features, two of them drifted
    from jobs.core.report import DRIFT, OK, scores_chart
    features = a_summary()["features"]

    # when their scores are drawn
    chart = str(scores_chart(features))

    # then each feature has a bar, drifted ones in the drift colour, and a labelled dashed line marks the threshold
    assert chart.count("<title>") == len(features)
    assert chart.count(f'fill="{DRIFT}"><title>') == 2 and chart.count(f'fill="{OK}"><title>') == 4
    assert "<title>monthly_charges: wasserstein 0.31 vs threshold 0.1</title>" in chart
    one = re.search(r'<text x="([\d.]+)"[^>]*>1</text>', chart)[1]
    assert f'<line x1="{one}" x2="{one}"' in chart and 'stroke-dasharray' in chart and ">threshold</text>" in chart
    assert chart.startswith("<svg viewBox=") and ' id="' not in chart and "http" not in chart


def test_a_bar_past_the_cap_says_it_is_off_scale():
    # given a feature whose p-value is 0, far past any threshold, and one just past it
    from jobs.core.report import scores_chart
    zero_p = categorical("region", True, 0.25)
    zero_p["methods"] = [{"method": "chisquare", "statistic": 812.0, "p_value": 0.0, "threshold": 0.05,
                          "drifted": True, "decisive": True}]

    # when the scores are drawn
    chart = str(scores_chart([zero_p, numeric("tenure_months", True, 0.15)]))

    # then the capped bar is the longest and its label says it is off scale; the other one does not
    widths = [float(w) for w in re.findall(r'<rect x="[\d.]+" y="[\d.]+" width="([\d.]+)" height="[\d.]+" fill="#D55E00"', chart)]
    assert len(widths) == 2 and widths[0] > 3 * widths[1]
    assert ">chisquare p = 0 vs threshold 0.05 (off scale)</text>" in chart
    assert ">wasserstein 0.15 vs threshold 0.1</text>" in chart


def test_the_trend_chart_draws_one_line_per_series_with_a_gap_for_a_missing_day():
    # given two weeks of history with a missing prediction value on day 4 and a NaN on day 6 for every feature
    from jobs.core.report import TOP_TREND_FEATURES, trend_chart
    summary = a_summary(trend_days=14)

    # when the trend is drawn
    chart = str(trend_chart(summary["trend"], summary["dataset"], summary["prediction"], summary["features"]))

    # then the share, the prediction and each top feature get one line, broken where a day has no value
    lines = re.findall(r'<path d="([^"]*)"', chart)
    assert len(lines) == 2 + TOP_TREND_FEATURES
    assert [line.count("M") for line in lines] == [1, 2] + [2] * TOP_TREND_FEATURES
    assert [line.count("L") + line.count("M") for line in lines] == [14, 13] + [13] * TOP_TREND_FEATURES
    # and each has its threshold dashed, the share axis in percent, the days as MM-DD and a legend
    assert chart.count('stroke-dasharray') == 2 + TOP_TREND_FEATURES + 2  # and the legends' two keys
    assert ">40%</text>" in chart and ">0%</text>" in chart
    assert ">01-14</text>" in chart and ">2026-01-14</text>" not in chart
    assert ">share drifted</text>" in chart and ">threshold</text>" in chart
    assert "<title>2026-01-04: 7.5%</title>" in chart and "nan" not in chart.lower()
    assert ' id="' not in chart and "http" not in chart and "<script" not in chart


def test_the_trend_chart_thins_the_days_of_a_long_history():
    # given ninety days of history
    from jobs.core.report import trend_chart
    summary = a_summary(trend_days=0)
    days = [f"2026-{1 + d // 28:02d}-{1 + d % 28:02d}" for d in range(90)]
    trend = {"days": days, "share_drifted": [0.1] * 90, "prediction": [0.02] * 90, "features": {}}

    # when the trend is drawn
    chart = str(trend_chart(trend, summary["dataset"], summary["prediction"], summary["features"]))

    # then each of the two charts labels at most 14 days, and there are no small multiples without feature history
    assert 2 * 7 <= len(re.findall(r"rotate\(-45\)\">\d\d-\d\d</text>", chart)) <= 2 * 14
    assert "Top" not in chart and chart.count("<path") == 2


def test_chart_labels_are_escaped():
    # given a feature and a day whose names look like markup
    from jobs.core.report import render_drift_report
    summary = a_summary(trend_days=3)
    summary["features"][0]["feature"] = '<b onload="x">plan</b>'
    summary["trend"]["days"][1] = "<i>day</i>"
    summary["trend"]["features"] = {'<b onload="x">plan</b>': [0.1, 0.2, 0.3]}
    summary["prediction"]["method"] = "<em>m</em>"

    # when the page is rendered
    page = render_drift_report(summary)

    # then the names are shown as text in the scores, the trend and its legend, never as markup
    assert "<b onload" not in page and "<i>" not in page and "<em>" not in page
    assert page.count("&lt;b onload=&#34;x&#34;&gt;plan&lt;/b&gt;") >= 3  # scores label and bar, trend title, section
    assert "&lt;i&gt;day&lt;/i&gt;" in page and "&lt;em&gt;m&lt;/em&gt;</text>" in page


def test_axis_ticks_are_round_numbers_up_to_the_top():
    # given the tops of a few axes
    from jobs.core.report import nice_ticks, tick_labels

    # when their ticks are chosen, then they are steps of 1, 2, 2.5 or 5 times a power of ten, labelled alike
    assert nice_ticks(0.84) == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert nice_ticks(5.89, 9) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert tick_labels(nice_ticks(0.1755, 9)) == ["0.00", "0.02", "0.04", "0.06", "0.08", "0.10", "0.12", "0.14", "0.16"]
    assert tick_labels(nice_ticks(0.439, 9), 100, "%") == [f"{p}%" for p in range(0, 45, 5)]
    assert tick_labels(nice_ticks(2500, 4)) == ["0", "1,000", "2,000"]
    assert nice_ticks(0.0) == [0.0] and nice_ticks(float("nan")) == [0.0]
