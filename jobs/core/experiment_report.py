"""A self-contained HTML experiment report: shares over time, each arm's metric and interval
over time, the test statistic against its boundary, the bandit's probability of being best,
and the decision with its reason. Charts are inline SVG; nothing is loaded from elsewhere."""

from __future__ import annotations

from datetime import date
from typing import Any

from jinja2 import Environment
from markupsafe import Markup

from jobs.core.report import INK, fmt, num, safe_href

# Okabe-Ito: one colour per arm, distinguishable under the common colour-vision deficiencies
ARM_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640.0, 200.0, 56.0, 16.0, 14.0, 34.0


def _x(i: int, n: int) -> float:
    return PAD_L + (W - PAD_L - PAD_R) * (i / max(n - 1, 1))


def _y(v: float, lo: float, hi: float) -> float:
    span = hi - lo or 1.0
    return PAD_T + (H - PAD_T - PAD_B) * (1 - (v - lo) / span)


def _frame(days: list[str], lo: float, hi: float, title: str) -> list[str]:
    parts = [f'<svg viewBox="0 0 {W:.0f} {H:.0f}" role="img" aria-label="{title}" class="chart">',
             f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" stroke="{INK}"/>',
             f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" stroke="{INK}"/>']
    for v in (lo, (lo + hi) / 2, hi):
        parts.append(f'<text x="{PAD_L - 4}" y="{_y(v, lo, hi) + 3:.1f}" text-anchor="end">{fmt(v)}</text>')
    step = max(1, len(days) // 6)
    for i in range(0, len(days), step):
        parts.append(f'<text x="{_x(i, len(days)):.1f}" y="{H - PAD_B + 14}" text-anchor="middle">{days[i][5:]}</text>')
    return parts


def _polyline(points: list[tuple[float, float]], colour: str, dash: str = "") -> str:
    if not points:
        return ""
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{extra}/>'


def shares_chart(design: dict[str, Any], events: list[dict[str, Any]], today: str) -> Markup:
    """Each arm's share from the start to the day after the look, as steps at each event's day."""
    start = date.fromisoformat(design["start"])
    end = max(date.fromisoformat(today).toordinal() + 1, *(date.fromisoformat(e["effective_from"]).toordinal()
                                                           for e in events))
    days = [date.fromordinal(o).isoformat() for o in range(start.toordinal(), end + 1)]
    ordered = sorted(events, key=lambda e: (e["effective_from"], e["at"]))
    parts = _frame(days, 0.0, 1.0, "shares over time")
    for arm, _version in enumerate(design["versions"]):
        points = []
        for i, day in enumerate(days):
            applying = [e for e in ordered if e["effective_from"] <= day]
            share = applying[-1]["shares"][arm] if applying else design["shares"][arm]
            points.append((_x(i, len(days)), _y(share, 0.0, 1.0)))
        parts.append(_polyline(points, ARM_COLOURS[arm % len(ARM_COLOURS)]))
    parts.append("</svg>")
    return Markup("".join(parts))


def metric_chart(looks: list[dict[str, Any]], metric: str, versions: list[str]) -> Markup | None:
    """Each arm's metric on its served rows (line) and interval (band) after each matured day."""
    days = [look["scored_through"] for look in looks]
    found = [num(a.get(k)) for look in looks for a in look["arms"] for k in (f"{metric}_low", f"{metric}_high")]
    values = [v for v in found if v is not None]
    if not values:
        return None
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.05 or 0.01
    lo, hi = lo - pad, hi + pad
    parts = _frame(days, lo, hi, f"{metric} per arm")
    for arm in range(len(versions)):
        colour = ARM_COLOURS[arm % len(ARM_COLOURS)]
        mid, band_top, band_bottom = [], [], []
        for i, look in enumerate(looks):
            a = look["arms"][arm]
            v, low, high = num(a.get(metric)), num(a.get(f"{metric}_low")), num(a.get(f"{metric}_high"))
            if v is None or low is None or high is None:
                continue
            x = _x(i, len(days))
            mid.append((x, _y(v, lo, hi)))
            band_top.append((x, _y(high, lo, hi)))
            band_bottom.append((x, _y(low, lo, hi)))
        if band_top:
            poly = " ".join(f"{x:.1f},{y:.1f}" for x, y in band_top + band_bottom[::-1])
            parts.append(f'<polygon points="{poly}" fill="{colour}" fill-opacity="0.15" stroke="none"/>')
        parts.append(_polyline(mid, colour))
    parts.append("</svg>")
    return Markup("".join(parts))


def test_chart(looks: list[dict[str, Any]], versions: list[str]) -> Markup | None:
    """|z| of each challenger against the control, with the always-valid boundary it must cross (dashed)."""
    days = [look["scored_through"] for look in looks]
    values = [abs(v) for look in looks for t in look["tests"] for v in (num(t["z"]), num(t["boundary"]))
              if v is not None]
    if not values:
        return None
    hi = max(values) * 1.1
    parts = _frame(days, 0.0, hi, "test statistic against its boundary")
    for k in range(len(versions) - 1):
        colour = ARM_COLOURS[(k + 1) % len(ARM_COLOURS)]
        z, b = [], []
        for i, look in enumerate(looks):
            t = look["tests"][k]
            if num(t["z"]) is not None and num(t["boundary"]) is not None:
                z.append((_x(i, len(days)), _y(abs(t["z"]), 0.0, hi)))
                b.append((_x(i, len(days)), _y(t["boundary"], 0.0, hi)))
        parts.append(_polyline(z, colour))
        parts.append(_polyline(b, colour, "5,4"))
    parts.append("</svg>")
    return Markup("".join(parts))


def best_chart(looks: list[dict[str, Any]], versions: list[str]) -> Markup | None:
    """A bandit's posterior probability that each arm is best, after each matured day."""
    if not looks or "p_best" not in looks[-1]["arms"][0]:
        return None
    days = [look["scored_through"] for look in looks]
    parts = _frame(days, 0.0, 1.0, "probability of being best")
    for arm in range(len(versions)):
        points = [(_x(i, len(days)), _y(look["arms"][arm]["p_best"], 0.0, 1.0)) for i, look in enumerate(looks)]
        parts.append(_polyline(points, ARM_COLOURS[arm % len(ARM_COLOURS)]))
    parts.append("</svg>")
    return Markup("".join(parts))


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Experiment {{ d.id }} on {{ s.date }}</title>
<style>
body{font-family:"DejaVu Sans",sans-serif;color:#1D2329;max-width:980px;margin:24px auto;padding:0 16px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}table{border-collapse:collapse;margin:8px 0}
td,th{border-bottom:1px solid #ccd;padding:4px 10px;text-align:right}th:first-child,td:first-child{text-align:left}
.chart{width:100%;max-width:680px;font-size:10px}.verdict{font-size:16px;padding:10px;border-left:6px solid {{ colour }}}
.key span{display:inline-block;margin-right:14px}.key i{display:inline-block;width:14px;height:4px;margin-right:4px;vertical-align:middle}
</style></head><body>
<h1>Experiment {{ d.id }}: {{ d.kind }} of {{ d.model }}</h1>
<p>Look on {{ s.date }} over {{ "{:,}".format(s.matured_rows) }} matured rows of {{ s.matured_days }} scored day(s).
Primary metric <b>{{ d.primary_metric }}</b>, minimum detectable effect {{ d.mde }}, alpha {{ d.alpha }},
from {{ d.start }} for at most {{ d.max_days }} days.
{% if s.sample_size %}At the start: {{ s.sample_size.text }}.{% endif %}</p>
<p class="verdict"><b>{{ "Concluded" if dec.conclude else "Running" }}.</b> {{ dec.reason }}.
{% if dec.conclude and dec.winner is not none %} Winner: version {{ d.versions[dec.winner] }}.{% endif %}
Shares from the next day: {{ dec.shares | join(", ") }}.</p>
<p class="key">{% for v in d.versions %}<span><i style="background:{{ colours[loop.index0 % colours|length] }}"></i>
{{ "control, " if loop.first else "" }}version {{ v }}</span>{% endfor %}</p>
<h2>Per arm, on the rows it served</h2>
<table><tr><th>version</th><th>share</th><th>served rows</th><th>{{ d.primary_metric }}</th><th>interval</th>
{% if bandit %}<th>reward</th><th>P(best)</th>{% endif %}</tr>
{% for a in dec.arms %}<tr><td>{{ a.version }}{{ " (control)" if loop.first else "" }}</td><td>{{ a.share }}</td>
<td>{{ "{:,}".format(a.served_rows) }}</td><td>{{ fmt(a[d.primary_metric]) }}</td>
<td>{{ fmt(a[d.primary_metric ~ "_low"]) }} .. {{ fmt(a[d.primary_metric ~ "_high"]) }}</td>
{% if bandit %}<td>{{ fmt(a.reward_successes) }} / {{ a.reward_trials }}</td><td>{{ fmt(a.p_best) }}</td>{% endif %}</tr>{% endfor %}
</table>
<h2>Against the control</h2>
<table><tr><th>version</th><th>served rows: difference</th><th>z</th><th>boundary</th><th>decides</th>
<th>paired on all rows: difference</th><th>interval</th><th>rows per arm needed</th></tr>
{% for t in dec.tests %}<tr><td>{{ t.version }}</td><td>{{ fmt(t.difference) }}</td><td>{{ fmt(t.z) }}</td>
<td>{{ fmt(t.boundary) }}</td><td>{{ "yes" if t.rejects else "no" }}</td><td>{{ fmt(t.paired_difference) }}</td>
<td>{{ fmt(t.paired_low) }} .. {{ fmt(t.paired_high) }}</td><td>{{ "{:,}".format(t.sample_size_per_arm) }}</td></tr>{% endfor %}
</table>
<p>The decision is the mixture SPRT on the served rows (always valid under daily looks; the boundary is the |z|
the difference must reach). The paired difference compares the arms' scores on the same rows (DeLong for AUC, a
paired bootstrap otherwise).</p>
<h2>Shares over time</h2>{{ shares }}
{% if metric %}<h2>{{ d.primary_metric }} per arm over time (band: interval)</h2>{{ metric }}{% endif %}
{% if test %}<h2>Test statistic |z| (solid) against its boundary (dashed)</h2>{{ test }}{% endif %}
{% if best %}<h2>Probability that each arm is best</h2>{{ best }}{% endif %}
<h2>Events</h2>
<table><tr><th>from</th><th>event</th><th>shares</th><th>reason</th></tr>
{% for e in events %}<tr><td>{{ e.effective_from }}</td><td>{{ e.event }}</td><td>{{ e.shares | join(", ") }}</td>
<td style="text-align:left">{{ e.reason }}</td></tr>{% endfor %}</table>
<p>{% if mlflow %}<a href="{{ mlflow }}">MLflow run</a>{% endif %}</p>
</body></html>
"""


def render(summary: dict[str, Any]) -> str:
    d, dec = summary["experiment"], summary["decision"]
    versions = d["versions"]
    events = sorted(summary["events"], key=lambda e: (e["effective_from"], e["at"]))
    colour = "#009E73" if dec["conclude"] and dec["winner"] not in (None, 0) else (
        "#D55E00" if dec["stop_arms"] else "#8C99A6")
    return Environment(autoescape=True).from_string(TEMPLATE).render(
        s=summary, d=d, dec=dec, events=events, fmt=fmt, colours=ARM_COLOURS, colour=colour,
        bandit=d["kind"] == "bandit",
        shares=shares_chart(d, events, summary["date"]),
        metric=metric_chart(summary["looks"], d["primary_metric"], versions),
        test=test_chart(summary["looks"], versions), best=best_chart(summary["looks"], versions),
        mlflow=safe_href(summary.get("links", {}).get("mlflow_run")))
