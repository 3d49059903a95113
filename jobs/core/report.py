"""A self-contained HTML drift report: verdicts, drift scores, the trend and per-feature distributions."""

from __future__ import annotations

import logging
import math
import re
from itertools import pairwise
from typing import Any

from jinja2 import Environment
from markupsafe import Markup

log = logging.getLogger(__name__)

# p-value methods signal drift when the statistic falls BELOW the threshold
P_VALUE_METHODS = frozenset({"ks", "chisquare"})
# a p-value of 0 or a runaway distance would otherwise squash every other bar to nothing
RATIO_CAP = 5.0
# beyond this many categories the bars become unreadable; the rest is counted in the caption
MAX_CATEGORIES = 20
TOP_TREND_FEATURES = 5
# Okabe-Ito colours stay distinguishable under the common colour-vision deficiencies
REF, CUR, DRIFT, OK, INK = "#0072B2", "#E69F00", "#D55E00", "#8C99A6", "#1D2329"
# the charts are drawn straight as SVG in points (1/72 inch): 13 inches wide, as the matplotlib figures were
WIDTH = 936.0
# DejaVu Sans at 9 px: about 5.5 px per character, the width a label's slant is sized for
CHAR_WIDTH = 5.5


def num(x: Any) -> float | None:
    """The value as a finite float, or None for None, NaN, infinities and non-numbers."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def fmt(x: Any) -> str:
    """A number to three significant digits (thousands grouped), "∞", or "n/a"."""
    v = num(x)
    if v is None:
        return "∞" if isinstance(x, float) and x == math.inf else "n/a"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def pct(x: Any) -> str:
    """A share as a percentage, or "n/a"."""
    v = num(x)
    return "n/a" if v is None else f"{v:.1%}"


def short(x: float) -> str:
    """A bin edge in a few characters: 1234567 -> 1.23M."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def clip(text: Any, width: int) -> str:
    """The text cut to width characters, with an ellipsis when cut."""
    s = str(text)
    return s if len(s) <= width else s[: width - 1] + "…"


def ratio(method: dict[str, Any]) -> float | None:
    """The statistic relative to its threshold, oriented so that > 1 means drift, capped at RATIO_CAP."""
    is_test = method.get("method") in P_VALUE_METHODS
    stat = num(method.get("p_value") if is_test else method.get("statistic"))
    thr = num(method.get("threshold"))
    if method.get("statistic") == math.inf:
        return RATIO_CAP
    if stat is None or thr is None or thr <= 0:
        return None
    if is_test:
        return RATIO_CAP if stat <= 0 else min(thr / stat, RATIO_CAP)
    return min(stat / thr, RATIO_CAP)


def decisive(feature: dict[str, Any]) -> dict[str, Any]:
    """The method that decided the feature's verdict (the first one when none is marked)."""
    methods = [m for m in feature.get("methods") or [] if isinstance(m, dict)]
    marked = [m for m in methods if m.get("decisive")] or [m for m in methods if m.get("method") == feature.get("decisive")]
    return (marked or methods or [{}])[0]


def severity(feature: dict[str, Any]) -> tuple[bool, float]:
    """Sort key: drifted features first, then the furthest past their threshold."""
    r = ratio(decisive(feature))
    return (not feature.get("drifted"), -(r if r is not None else -1.0))


def series(values: Any, n: int) -> list[float]:
    """Exactly n floats from a JSON list, NaN where a value is missing or not a number."""
    vals = [v if (v := num(x)) is not None else math.nan for x in list(values or [])[:n]]
    return vals + [math.nan] * (n - len(vals))


def anchor(name: Any) -> str:
    """An HTML id for a feature's section."""
    return "f-" + re.sub(r"[^A-Za-z0-9_-]", "-", str(name))


def nice_ticks(top: float, intervals: int = 5) -> list[float]:
    """Round ticks from 0 up to at most `top`: at most `intervals` steps of 1, 2, 2.5 or 5 times a power of ten."""
    if not math.isfinite(top) or top <= 0:
        return [0.0]
    unit = 10.0 ** math.floor(math.log10(top / intervals))
    step = next(m * unit for m in (1, 2, 2.5, 5, 10) if m * unit * intervals >= top * (1 - 1e-9))
    return [float(f"{i * step:.12g}") for i in range(int(top / step * (1 + 1e-9)) + 1)]


def tick_labels(ticks: list[float], scale: float = 1.0, suffix: str = "") -> list[str]:
    """The ticks as text, all with as many decimals as their step needs: 0.00, 0.05, 0.10."""
    step = abs(ticks[1] - ticks[0]) * scale if len(ticks) > 1 else 1.0
    decimals = next((d for d in range(10) if abs(round(step, d) - step) <= step * 1e-6), 10)
    return [f"{t * scale:,.{decimals}f}{suffix}" for t in ticks]


# the drift scores and the trend are drawn directly as SVG too: importing matplotlib (0.7 s) and laying out
# these two figures (1.1 s of CPU) cost every drift step about 2 s
_SCORES = """<svg viewBox="0 0 {{ w }} {{ h }}" width="{{ w }}pt" height="{{ h }}pt" role="img" aria-label="Drift scores: each feature's decisive statistic divided by its threshold">
<g font-size="10" fill="#1D2329">
{% for t in xticks %}<line x1="{{ t.x }}" x2="{{ t.x }}" y1="{{ top }}" y2="{{ bottom }}" stroke="#E3E7EB"/>
<line x1="{{ t.x }}" x2="{{ t.x }}" y1="{{ bottom }}" y2="{{ tick }}" stroke="#8C99A6"/>
<text x="{{ t.x }}" y="{{ xlab }}" text-anchor="middle">{{ t.label }}</text>
{% endfor %}
{% for b in bars %}<rect x="{{ left }}" y="{{ b.y }}" width="{{ b.w }}" height="{{ bar }}" fill="{{ b.color }}"><title>{{ b.name }}: {{ b.label }}</title></rect>
<line x1="{{ b.tick }}" x2="{{ left }}" y1="{{ b.mid }}" y2="{{ b.mid }}" stroke="#8C99A6"/>
<text x="{{ b.nx }}" y="{{ b.ny }}" text-anchor="end">{{ b.name }}</text>
{% endfor %}
<line x1="{{ one }}" x2="{{ one }}" y1="{{ top }}" y2="{{ bottom }}" stroke="#1D2329" stroke-width="1.2" stroke-dasharray="4.4 1.9"/>
<text x="{{ one }}" y="{{ top - 4 }}" text-anchor="middle">threshold</text>
{% for b in bars %}<rect x="{{ b.bx }}" y="{{ b.by }}" width="{{ b.bw }}" height="13" fill="#FFFFFF"/>
<text x="{{ b.tx }}" y="{{ b.ty }}" font-size="9">{{ b.label }}</text>
{% endfor %}
<line x1="{{ left }}" x2="{{ left }}" y1="{{ top }}" y2="{{ bottom }}" stroke="#8C99A6"/>
<line x1="{{ left }}" x2="{{ right }}" y1="{{ bottom }}" y2="{{ bottom }}" stroke="#8C99A6"/>
<text x="{{ middle }}" y="{{ h - 6 }}" text-anchor="middle">decisive statistic ÷ threshold (p-value methods: threshold ÷ p-value) — above 1 means drift</text>
</g></svg>"""
# DejaVu Sans at 10 px: digits and "%" take about 6.4 px, an average label character about 6.1 px
DIGIT_WIDTH, LABEL_WIDTH = 6.4, 6.1


def scores_chart(features: list[dict[str, Any]]) -> Markup | None:
    """One bar per feature: its decisive statistic over its threshold, with 1.0 marking the threshold."""
    if not features:
        return None
    methods = [decisive(f) for f in features]
    widths = [ratio(m) or 0.0 for m in methods]
    xmax = max(1.5, *widths) * 1.9  # room for the labels right of the longest bar
    names = [clip(f.get("feature"), 32) for f in features]
    row, top = 24.0, 18.0
    left = round(max(60.0, max(len(n) for n in names) * LABEL_WIDTH + 14), 1)
    right, bottom = WIDTH - 8, top + 8 + row * len(features)

    def x(v: float) -> float:
        return round(left + (right - left) * v / xmax, 1)

    bars = []
    for i, (f, name, w, m) in enumerate(zip(features, names, widths, methods, strict=True)):
        method = m.get("method") or "n/a"
        stat = f"p = {fmt(m.get('p_value'))}" if method in P_VALUE_METHODS else fmt(m.get("statistic"))
        capped = " (off scale)" if w >= RATIO_CAP else ""
        label = f"{method} {stat} vs threshold {fmt(m.get('threshold'))}{capped}"
        mid, tx = top + 4 + row * (i + 0.5), x(w) + (right - left) * 0.01
        # a white box keeps the label readable where it crosses the threshold line
        bars.append({"y": round(mid - row * 0.35, 1), "w": round(x(w) - left, 1), "mid": mid, "name": name,
                     "color": DRIFT if f.get("drifted") else OK, "tick": round(left - 3.5, 1), "nx": round(left - 6, 1),
                     "ny": mid + 3.5,
                     "label": label, "tx": round(tx, 1), "ty": mid + 3, "bx": round(tx - 2, 1), "by": mid - 7,
                     "bw": round(len(label) * CHAR_WIDTH + 4, 1)})
    ticks = nice_ticks(xmax, 9)
    page = _SCORES_TEMPLATE.render(
        w=WIDTH, h=bottom + 38, left=left, right=right, top=top, bottom=bottom, tick=bottom + 3.5, xlab=bottom + 15,
        middle=round((left + right) / 2, 1), bar=round(row * 0.7, 1), one=x(1.0), bars=bars,
        xticks=[{"x": x(t), "label": text} for t, text in zip(ticks, tick_labels(ticks), strict=True)])
    return Markup(page)


_LINES = """<svg viewBox="0 0 {{ w }} {{ h }}" width="{{ w }}pt" height="{{ h }}pt" role="img" aria-label="{{ title }}">
<g font-size="10" fill="#1D2329">
{% for t in titles %}<text x="{{ t.x }}" y="{{ t.y }}" text-anchor="middle" font-size="{{ t.size }}"{% if t.bold %} font-weight="bold"{% endif %}>{{ t.text }}</text>
{% endfor %}
{% for p in panels %}
{% for t in p.yticks %}<line x1="{{ p.left }}" x2="{{ p.right }}" y1="{{ t.y }}" y2="{{ t.y }}" stroke="#E3E7EB"/>
<text x="{{ p.ylab }}" y="{{ t.base }}" text-anchor="end">{{ t.label }}</text>
{% endfor %}
{% for t in p.xticks %}<line x1="{{ t.x }}" x2="{{ t.x }}" y1="{{ p.bottom }}" y2="{{ p.tick }}" stroke="#8C99A6"/>
<text text-anchor="end" transform="translate({{ t.at }} {{ p.xlab }}) rotate(-45)">{{ t.label }}</text>
{% endfor %}
<line x1="{{ p.left }}" x2="{{ p.left }}" y1="{{ p.top }}" y2="{{ p.bottom }}" stroke="#8C99A6"/>
<line x1="{{ p.left }}" x2="{{ p.right }}" y1="{{ p.bottom }}" y2="{{ p.bottom }}" stroke="#8C99A6"/>
{% if p.threshold is not none %}<line x1="{{ p.left }}" x2="{{ p.right }}" y1="{{ p.threshold }}" y2="{{ p.threshold }}" stroke="#D55E00" stroke-width="1.2" stroke-dasharray="4.4 1.9"/>
{% endif %}
{% if p.line %}<path d="{{ p.line }}" fill="none" stroke="{{ p.color }}" stroke-width="1.8"/>
{% endif %}
{% for pt in p.points %}<circle cx="{{ pt.x }}" cy="{{ pt.y }}" r="1.75" fill="{{ p.color }}"><title>{{ pt.title }}</title></circle>
{% endfor %}
{% for item in p.legend %}{% if item.dashed %}<line x1="{{ item.x1 }}" x2="{{ item.x2 }}" y1="{{ item.y }}" y2="{{ item.y }}" stroke="{{ item.color }}" stroke-width="1.2" stroke-dasharray="4.4 1.9"/>
{% else %}<line x1="{{ item.x1 }}" x2="{{ item.x2 }}" y1="{{ item.y }}" y2="{{ item.y }}" stroke="{{ item.color }}" stroke-width="1.8"/>
<circle cx="{{ item.mid }}" cy="{{ item.y }}" r="1.75" fill="{{ item.color }}"/>
{% endif %}
<text x="{{ item.tx }}" y="{{ item.y + 3 }}" font-size="9">{{ item.label }}</text>
{% endfor %}
{% endfor %}
</g></svg>"""
# beyond this many days the markers crowd into a thick line; only values standing alone between gaps keep theirs
MARKED_DAYS = 60


def _line_panel(slot: tuple[float, float, float, float], days: list[str], values: Any, threshold: Any, color: str,
                label: str = "daily value", *, percent: bool = False, max_ticks: int = 14,
                legend: bool = False) -> dict[str, Any]:
    """A statistic over days in the slot (x0, x1, top, bottom), its threshold dashed, with headroom for a legend."""
    x0, x1, top, bottom = slot
    n = len(days)
    ys = series(values, n)
    thr = num(threshold)
    peak = max([v for v in [*ys, thr] if v is not None and not math.isnan(v)], default=0.0)
    ymax = max(peak, 0.0) * 1.35 or 1.0
    intervals = max(3, min(9, int((bottom - top) / 20)))
    if percent:
        yticks = _percent_ticks(ymax, intervals)
    else:
        ticks = nice_ticks(ymax, intervals)
        yticks = list(zip(ticks, tick_labels(ticks), strict=True))
    left = round(x0 + max(len(text) for _, text in yticks) * DIGIT_WIDTH + 10, 1)
    right = round(x1 - 10, 1)

    def x(i: float) -> float:  # matplotlib's 5% margins either side of the first and last day
        return round(left + (right - left) * (i + 0.05 * (n - 1)) / (1.1 * (n - 1)), 1)

    def y(v: float) -> float:
        return round(bottom - (bottom - top) * min(max(v, 0.0), ymax) / ymax, 1)

    line, points = [], []
    for i, v in enumerate(ys):
        if math.isnan(v):
            continue
        # a missing day breaks the line: the next value starts a new stretch
        line.append(f"{'L' if i and not math.isnan(ys[i - 1]) else 'M'}{x(i)} {y(v)}")
        alone = (i == 0 or math.isnan(ys[i - 1])) and (i == n - 1 or math.isnan(ys[i + 1]))
        if n <= MARKED_DAYS or alone:
            points.append({"x": x(i), "y": y(v), "title": f"{days[i]}: {pct(v) if percent else fmt(v)}"})
    step = max(1, math.ceil(n / max_ticks))
    items = [{"label": label, "color": color, "dashed": False}] + (
        [{"label": "threshold", "color": DRIFT, "dashed": True}] if thr is not None else [])
    lx = right - 32 - max(len(item["label"]) for item in items) * CHAR_WIDTH
    return {
        "left": left, "right": right, "top": top, "bottom": bottom, "ylab": round(left - 6, 1), "tick": bottom + 3.5,
        "xlab": bottom + 10, "color": color, "line": "".join(line), "points": points,
        "threshold": None if thr is None else y(thr),
        "yticks": [{"y": y(t), "base": round(y(t) + 3.5, 1), "label": text} for t, text in yticks],
        "xticks": [{"x": x(i), "at": round(x(i) + 4, 1), "label": days[i][5:] if len(days[i]) == 10 else days[i]}
                   for i in range(0, n, step)],
        "legend": [{**item, "x1": round(lx, 1), "x2": round(lx + 20, 1), "mid": round(lx + 10, 1),
                    "tx": round(lx + 26, 1), "y": top + 8 + 14 * k} for k, item in enumerate(items)] if legend else [],
    }


def trend_chart(trend: dict[str, Any], dataset: dict[str, Any], prediction: dict[str, Any],
                features: list[dict[str, Any]]) -> Markup | None:
    """Drifted share and prediction drift per day, then the top features' decisive statistic per day."""
    days = [str(d) for d in trend.get("days") or []]
    if len(days) < 2:
        return None
    per_feature = trend.get("features") or {}
    top = [f for f in features if f.get("feature") in per_feature][:TOP_TREND_FEATURES]
    first = 245.0  # the first row: the share and the prediction side by side
    h = 472.0 if top else first
    half = WIDTH / 2
    method = prediction.get("method") or "statistic"
    panels = [_line_panel((0, half, 28, first - 40), days, trend.get("share_drifted"), dataset.get("threshold"), REF,
                          "share drifted", percent=True, legend=True),
              _line_panel((half, WIDTH, 28, first - 40), days, trend.get("prediction"), prediction.get("threshold"),
                          REF, method, legend=True)]
    heads = [f"Share of drifted features (threshold {pct(dataset.get('threshold'))})",
             f"Prediction drift: {method} (threshold {fmt(prediction.get('threshold'))})"]
    titles = [{"x": round((p["left"] + p["right"]) / 2, 1), "y": 16, "size": 11, "bold": True, "text": text}
              for p, text in zip(panels, heads, strict=True)]
    if top:
        titles.append({"x": half, "y": first + 16, "size": 11, "bold": False,
                       "text": f"Top {len(top)} features: decisive statistic per day (dashed: threshold)"})
        slot = WIDTH / TOP_TREND_FEATURES  # fewer features leave their slots empty, as the small multiples stay put
        for k, f in enumerate(top):
            m = decisive(f)
            p = _line_panel((k * slot, (k + 1) * slot, first + 56, h - 40), days, per_feature.get(f.get("feature")),
                            m.get("threshold"), DRIFT if f.get("drifted") else REF, max_ticks=5)
            panels.append(p)
            center = round((p["left"] + p["right"]) / 2, 1)
            titles += [{"x": center, "y": first + 36, "size": 10, "bold": True, "text": clip(f.get("feature"), 24)},
                       {"x": center, "y": first + 48, "size": 10, "bold": True,
                        "text": f"{m.get('method') or ''} (thr {fmt(m.get('threshold'))})"}]
    page = _LINES_TEMPLATE.render(w=WIDTH, h=h, titles=titles, panels=panels,
                                  title=f"Trend over {len(days)} days: share of drifted features, prediction drift"
                                        f"{' and the top features' if top else ''}")
    return Markup(page)


def bars(plot: dict[str, Any]) -> tuple[list[str], list[float], list[float], int]:
    """Labels and reference/current shares to draw, and how many categories were left out."""
    if plot.get("type") == "categorical":
        labels = [clip(c, 18) for c in plot.get("categories") or []]
    else:
        edges = [short(v) if (v := num(e)) is not None else "?" for e in plot.get("edges") or []]
        labels = [f"≤{edges[0]}", *(f"{a}–{b}" for a, b in pairwise(edges)), f">{edges[-1]}"] if edges else []
    n = max(len(labels), len(plot.get("reference") or []), len(plot.get("current") or []))
    labels += [f"bin {i + 1}" for i in range(len(labels), n)]
    ref, cur = series(plot.get("reference"), n), series(plot.get("current"), n)
    keep = list(range(n))
    if plot.get("type") == "categorical" and n > MAX_CATEGORIES:
        # keep the categories that matter on either side, in their original order
        biggest = sorted(keep, key=lambda i: -max(0.0 if math.isnan(v) else v for v in (ref[i], cur[i])))
        keep = sorted(biggest[:MAX_CATEGORIES])
    return [labels[i] for i in keep], [ref[i] for i in keep], [cur[i] for i in keep], n - len(keep)


# the distribution charts are drawn directly as SVG: a report has one per feature, and laying each out
# through matplotlib cost 0.1 to 0.2 s (most of the report's time) for two series of bars
_BARS = """<svg viewBox="0 0 {{ w }} {{ h }}" width="{{ w }}pt" height="{{ h }}pt" role="img" aria-label="{{ title }}">
<g font-size="10" fill="#1D2329">
{% for t in yticks %}<line x1="{{ left }}" x2="{{ right }}" y1="{{ t.y }}" y2="{{ t.y }}" stroke="#E3E7EB"/>
<text x="{{ left - 5 }}" y="{{ t.y + 3.5 }}" text-anchor="end">{{ t.label }}</text>
{% endfor %}
{% for b in bars %}<rect x="{{ b.x }}" y="{{ b.y }}" width="{{ b.w }}" height="{{ b.h }}" fill="{{ b.color }}"><title>{{ b.title }}</title></rect>
{% endfor %}
<line x1="{{ left }}" x2="{{ left }}" y1="{{ top }}" y2="{{ bottom }}" stroke="#8C99A6"/>
<line x1="{{ left }}" x2="{{ right }}" y1="{{ bottom }}" y2="{{ bottom }}" stroke="#8C99A6"/>
{% for x in xticks %}<line x1="{{ x.x }}" x2="{{ x.x }}" y1="{{ bottom }}" y2="{{ bottom + 3.5 }}" stroke="#8C99A6"/>
<text font-size="9" {% if rotate %}text-anchor="end" transform="translate({{ x.x + 3 }} {{ bottom + 9 }}) rotate(-40)"{% else %}text-anchor="middle" x="{{ x.x }}" y="{{ bottom + 15 }}"{% endif %}>{{ x.label }}</text>
{% endfor %}
<text transform="translate(12 {{ (top + bottom) / 2 }}) rotate(-90)" text-anchor="middle">share of rows</text>
{% for item in legend %}<rect x="{{ item.x }}" y="6" width="14" height="8" fill="{{ item.color }}"/><text x="{{ item.x + 18 }}" y="14" font-size="9">{{ item.label }}</text>
{% endfor %}
</g></svg>"""


def _percent_ticks(top: float, intervals: int = 5) -> list[tuple[float, str]]:
    """Round percentage ticks from 0 to at most `top` (a share), with as many decimals as their step needs."""
    values = nice_ticks(top, intervals)
    return list(zip(values, tick_labels(values, 100, "%"), strict=True))


def distribution_chart(name: str, labels: list[str], ref: list[float], cur: list[float]) -> Markup | None:
    """Reference and current shares side by side per bin or category."""
    if not labels:
        return None
    n = len(labels)
    rotate = n > 3
    longest = max(len(label) for label in labels)
    w = 460.0
    # a slanted label reaches down by its length times sin(40°) and left by its length times cos(40°)
    below = 14 + (longest * CHAR_WIDTH * 0.643 + 8 if rotate else 12)
    left = max(52.0, len(labels[0]) * CHAR_WIDTH * 0.766 - (w - 62) / n / 2 + 8) if rotate else 52.0
    right, top = w - 10, 24.0
    h = round(max(223.0, 150 + below), 1)
    bottom = h - below
    finite = [v for v in (*ref, *cur) if not math.isnan(v)]
    peak = max(finite, default=0.0)
    ymax = peak * 1.12 or 0.01  # headroom above the tallest bar
    slot = (right - left) / n

    def y(v: float) -> float:
        return bottom - (bottom - top) * v / ymax

    bars = []
    for i, label in enumerate(labels):
        for offset, shares, color, which in ((0.1, ref, REF, "reference"), (0.5, cur, CUR, "current")):
            v = shares[i]
            share = 0.0 if math.isnan(v) else v  # a missing share draws as an empty slot
            top_y = y(share)
            bars.append({"x": f"{left + slot * (i + offset):.1f}",
                         "y": f"{top_y:.1f}", "w": f"{slot * 0.4:.1f}", "h": f"{bottom - top_y:.1f}", "color": color,
                         "title": f"{label}: {which} {pct(v) if not math.isnan(v) else 'n/a'}"})
    page = _BARS_TEMPLATE.render(
        w=w, h=h, left=left, right=right, top=top, bottom=bottom, rotate=rotate, bars=bars,
        title=f"{name}: share of rows per bin, reference and current",
        yticks=[{"y": round(y(t), 1), "label": text} for t, text in _percent_ticks(ymax)],
        xticks=[{"x": round(left + slot * (i + 0.5), 1), "label": label} for i, label in enumerate(labels)],
        legend=[{"x": right - 150, "color": REF, "label": "reference"}, {"x": right - 70, "color": CUR, "label": "current"}])
    return Markup(page)


def feature_view(feature: dict[str, Any]) -> dict[str, Any]:
    """Everything the template shows for one feature."""
    name = str(feature.get("feature") or "?")
    plot: dict[str, Any] = feature["plot"] if isinstance(feature.get("plot"), dict) else {}
    labels, ref, cur, hidden = bars(plot)
    top = decisive(feature)
    methods = [{**m, "is_test": m.get("method") in P_VALUE_METHODS, "decisive": bool(m.get("decisive")) or m is top}
               for m in feature.get("methods") or [] if isinstance(m, dict)]
    return {"name": name, "anchor": anchor(name), "kind": feature.get("kind") or "", "drifted": feature.get("drifted"),
            "importance": feature.get("importance"), "missing": plot.get("missing") or {}, "hidden": hidden,
            "categorical": plot.get("type") == "categorical", "methods": methods,
            "chart": distribution_chart(name, labels, ref, cur)}


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Drift report · {{ s.model }} · {{ s.date }}</title>
<style>
body{font:15px/1.45 system-ui,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;color:#1d2329;background:#f4f5f7;margin:0}
main{max-width:1320px;margin:0 auto;padding:20px 24px}a{color:#0a58a5}figure{margin:0}
.card,.kpi{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:16px 20px;margin:14px 0}
h1{font-size:26px;margin:0 0 10px}h2{font-size:20px;margin:0 0 6px}h3{font-size:18px;margin:0 0 8px}
.meta{display:grid;grid-template-columns:max-content 1fr max-content 1fr;gap:3px 14px;margin:0}
dt,th,.lbl,.kind,.note,figcaption{color:#55606b}dd{margin:0;font-weight:600;overflow-wrap:anywhere}
.banner{border-radius:8px;padding:14px 20px;font-size:24px;font-weight:700;border-left:12px solid;margin:14px 0}
.banner small{display:block;font-size:16px;font-weight:400}.unknown{background:#eceff2;border-color:#8c99a6}
.bad{background:#fde8dc;border-color:#D55E00;color:#6b2500}.good{background:#e1f3ea;border-color:#009E73;color:#0b4d3a}
.kpis{display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:12px}.kpi{margin:0;padding:12px 16px}
.big{font-size:26px;font-weight:700;display:block}.lbl,.note,table{font-size:14px}.note{margin:0 0 8px}
.tag{display:inline-block;padding:0 8px;border-radius:10px;font-size:13px;font-weight:700;white-space:nowrap}
.drift{background:#a33f00;color:#fff}.ok{background:#e1f3ea;color:#0b4d3a}.na{background:#eceff2;color:#55606b}
.kind{font-weight:400;font-size:15px}figcaption{font-size:13px}
table{border-collapse:collapse;width:100%;min-width:540px}th{font-weight:600}tr.dec td{background:#fff6e5}
th,td{padding:4px 8px;border-bottom:1px solid #e3e7eb;text-align:left;white-space:nowrap}
.n{text-align:right;font-variant-numeric:tabular-nums}
.feature{display:grid;grid-template-columns:minmax(0,1fr) auto;gap:18px;align-items:start}
svg{max-width:100%;height:auto}svg *{stroke-linejoin:round;stroke-linecap:butt}
svg text{font-family:"DejaVu Sans",Verdana,Arial,sans-serif}
</style></head><body><main>
{% macro verdict(flag) %}{% if flag is sameas true %}<span class="tag drift">▲ drift</span>{% elif flag is sameas false %}<span class="tag ok">✓ no drift</span>{% else %}<span class="tag na">verdict n/a</span>{% endif %}{% endmacro %}
<header class="card"><h1>Drift report — {{ s.model or "n/a" }} — {{ s.date or "n/a" }}</h1><dl class="meta">
<dt>Model</dt><dd>{{ s.model or "n/a" }}</dd><dt>Resolved from</dt><dd>{{ s.model_reference or "n/a" }}</dd>
<dt>Reference</dt><dd>{{ ref.rows|fmt }} rows, window {{ ref.window or "n/a" }}</dd><dt>Current</dt><dd>{{ cur.rows|fmt }} rows on {{ s.date or "n/a" }}</dd>
<dt>Run id</dt><dd>{{ s.run_id or "n/a" }}</dd><dt>Generated at</dt><dd>{{ s.generated_at or "n/a" }}</dd></dl></header>
<div class="banner {{ 'bad' if ds.breached is sameas true else 'good' if ds.breached is sameas false else 'unknown' }}">
{% if ds.breached is sameas true %}⚠ Drift BREACHED{% elif ds.breached is sameas false %}✓ Drift NOT breached{% else %}Drift verdict unavailable{% endif %}
<small>{{ ds.share_drifted|pct }} of features drifted — threshold {{ ds.threshold|pct }}; importance-weighted share {{ ds.weighted_share|pct }}
{%- set causes = (["the share of drifted features"] if ds.drifted else []) + (["prediction drift"] if s.prediction and s.prediction.drifted else []) %}
{%- if ds.breached is sameas true and causes %}; breached by {{ causes|join(" and ") }}{% endif %}</small></div>
<div class="kpis">
<div class="kpi"><span class="lbl">Share of drifted features</span><span class="big">{{ ds.share_drifted|pct }}</span>
threshold {{ ds.threshold|pct }} (drift if above) {{ verdict(ds.drifted) }}<br><span class="lbl">{{ drifted|length }} drifted:
{% for name in drifted %}<a href="#{{ name|anchor }}">{{ name }}</a>{{ ", " if not loop.last }}{% else %}none{% endfor %}</span></div>
<div class="kpi"><span class="lbl">Importance-weighted drifted share</span><span class="big">{{ ds.weighted_share|pct }}</span>
<span class="lbl">share of model feature importance carried by drifted features</span></div>
<div class="kpi"><span class="lbl">Prediction drift ({{ pred.method or "n/a" }})</span><span class="big">{{ pred.statistic|fmt }}</span>
threshold {{ pred.threshold|fmt }} (drift if above) {{ verdict(pred.drifted) }}</div>
<div class="kpi"><span class="lbl">Multivariate drift ({{ (mv.method or "n/a")|upper }})</span><span class="big">p = {{ mv.p_value|fmt }}</span>
α = {{ mv.alpha|fmt }} (drift if p below α) {{ verdict(mv.drifted) }}<br><span class="lbl">statistic {{ mv.statistic|fmt }}
on {{ sample[0]|fmt }} reference / {{ sample[1]|fmt }} current sampled rows</span></div></div>
<section class="card"><h2>Links</h2><ul>{% for name, href in links %}<li>{{ name }}: {% if href %}<a href="{{ href }}">{{ href }}</a>{% else %}{{ raw[name] }}{% endif %}</li>{% else %}<li>none</li>{% endfor %}</ul></section>
<section class="card"><h2>Drift scores</h2>
<p class="note">One bar per feature, drifted first: its decisive statistic divided by that method's threshold (for p-value methods, threshold divided by the p-value), so every bar past the dashed line at 1.0 is drift. Bars are capped at {{ cap|fmt }}. Orange-red bars are drifted features.</p>
{{ scores or "No features in this summary." }}</section>
<section class="card"><h2>Trend</h2>
{% if trend %}<p class="note">The last {{ days }} days; dashed lines are today's thresholds. Gaps are days without a value.</p>{{ trend }}
{% else %}<p class="note">Not enough history for a trend: {{ days }} day(s) recorded, 2 needed.</p>{% endif %}</section>
<h2>Features ({{ features|length }}, drifted first)</h2>
{% for f in features %}<article class="card" id="{{ f.anchor }}"><h3>{{ f.name }} <span class="kind">{{ f.kind }} · importance {{ f.importance|fmt }}</span> {{ verdict(f.drifted) }}</h3>
<div class="feature"><figure>{{ f.chart or "No distribution recorded." }}<figcaption>Share of rows per {{ "category" if f.categorical else "bin" }}{% if f.hidden %} ({{ f.hidden }} smaller categories not shown){% endif %}.
Missing values: reference {{ f.missing.reference|pct }}, current {{ f.missing.current|pct }}.</figcaption></figure>
<table><thead><tr><th>Method</th><th class="n">Statistic</th><th class="n">p-value</th><th class="n">Threshold</th><th>Rule</th><th>Verdict</th><th>Decisive</th></tr></thead><tbody>
{% for m in f.methods %}<tr{% if m.decisive %} class="dec"{% endif %}><td>{{ m.method or "n/a" }}</td><td class="n">{{ m.statistic|fmt }}</td><td class="n">{{ m.p_value|fmt if m.is_test else "" }}</td><td class="n">{{ m.threshold|fmt }}</td>
<td>drift if {{ "p below" if m.is_test else "above" }}</td><td>{{ verdict(m.drifted) }}</td><td>{{ "★ decisive" if m.decisive else "" }}</td></tr>
{% else %}<tr><td colspan="7">No methods recorded.</td></tr>{% endfor %}</tbody></table></div></article>
{% endfor %}</main></body></html>
"""
_ENV = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
_ENV.filters.update(fmt=fmt, pct=pct, anchor=anchor)
_TEMPLATE = _ENV.from_string(PAGE)
_BARS_TEMPLATE = _ENV.from_string(_BARS)
_SCORES_TEMPLATE = _ENV.from_string(_SCORES)
_LINES_TEMPLATE = _ENV.from_string(_LINES)


def safe_href(url: Any) -> str | None:
    """The link target, or None for a scheme that would run code in the browser."""
    text = str(url or "").strip()
    return None if not text or re.match(r"(?i)(javascript|data|vbscript):", text) else text


def section(summary: dict, key: str) -> dict[str, Any]:
    """One block of the summary, empty when it is absent or malformed."""
    value = summary.get(key)
    return value if isinstance(value, dict) else {}


def render_drift_report(summary: dict) -> str:
    """A self-contained HTML page: verdicts, per-feature plots, drift scores and the trend."""
    features = sorted((f for f in summary.get("features") or [] if isinstance(f, dict)), key=severity)
    dataset, prediction, trend, links = (section(summary, k) for k in ("dataset", "prediction", "trend", "links"))
    multivariate = section(summary, "multivariate")
    sample = multivariate.get("sample_rows")
    scores = scores_chart(features)
    trend_svg = trend_chart(trend, dataset, prediction, features)
    views = [feature_view(f) for f in features]
    page = _TEMPLATE.render(
        s=summary, ds=dataset, pred=prediction, mv=multivariate, ref=section(summary, "reference"),
        cur=section(summary, "current"), drifted=list(dataset.get("drifted_features") or []),
        sample=sample if isinstance(sample, list) and len(sample) == 2 else [None, None],
        links=[(k, safe_href(v)) for k, v in links.items()], raw=links, scores=scores, trend=trend_svg,
        days=len(trend.get("days") or []), features=views, cap=RATIO_CAP)
    log.info("drift report for %s on %s: %d features, %.0f kB", summary.get("model"), summary.get("date"),
             len(features), len(page) / 1024)
    return page
