"""HTML reports for statistics and drift: one self-contained file, inline SVG, no scripts, no network."""

from __future__ import annotations

import html
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from mloop.validation.drift import DriftReport, _cdf
from mloop.validation.stats import ColumnStats, Statistics

__all__ = ["drift_html", "statistics_html"]

REF_COLOR, CUR_COLOR = "#4c78a8", "#f58518"
W, H, PAD = 560, 130, 4


def _env() -> Environment:
    return Environment(
        loader=PackageLoader("mloop.validation", "templates"), autoescape=select_autoescape(["html"])
    )


def _bars(series: Sequence[tuple[Sequence[float], str]], labels: Sequence[str] | None = None) -> str:
    """Side-by-side bars for one or two distributions over the same bins (an SVG string)."""
    n = len(series[0][0])
    if n == 0:
        return ""
    top = max(max(values) for values, _ in series) or 1.0
    slot = (W - 2 * PAD) / n
    width = slot / len(series) * 0.9
    parts = [f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img">']
    for s, (values, color) in enumerate(series):
        for i, v in enumerate(values):
            h = (H - 2 * PAD - 14) * v / top
            x = PAD + i * slot + s * width
            label = html.escape(labels[i]) if labels else f"bin {i + 1}"
            y, bar = H - PAD - 14 - h, max(width, 0.5)
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{label}: {v:.3%}</title></rect>"
            )
    if labels and n <= 12:
        for i, label in enumerate(labels):
            x = PAD + (i + 0.5) * slot
            text = html.escape(label[:10])
            parts.append(f'<text x="{x:.1f}" y="{H - 2}" font-size="9" text-anchor="middle">{text}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _feature_view(f: Any) -> dict[str, Any]:
    if f.kind == "categorical":
        labels = f.reference["categories"][:20]
        chart = _bars(
            [(f.reference["proportions"][:20], REF_COLOR), (f.current["proportions"][:20], CUR_COLOR)], labels
        )
        axis = ""
    else:
        edges = f.reference["edges"]
        labels = [f"{a:.3g} – {b:.3g}" for a, b in itertools.pairwise(edges)]
        chart = _bars(
            [(f.reference["proportions"], REF_COLOR), (f.current["proportions"], CUR_COLOR)], labels
        )
        axis = f"{edges[0]:.3g} … {edges[-1]:.3g}"
    return {"f": f, "chart": chart, "axis": axis}


def drift_html(report: DriftReport) -> str:
    """The drift report: verdict, then every feature with reference vs current, drifted ones first."""
    return (
        _env()
        .get_template("drift.html.j2")
        .render(
            report=report,
            features=[_feature_view(f) for f in report.features],
            ref_color=REF_COLOR,
            cur_color=CUR_COLOR,
        )
    )


def _column_chart(c: ColumnStats) -> str:
    if c.kind == "numeric" and c.count and c.min is not None and c.max is not None and c.finite:
        lo, hi = c.quantiles([0.01, 0.99])
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, 31)
        props = np.diff(np.concatenate(([0.0], _cdf(c, edges[1:-1]), [1.0])))
        labels = [f"{a:.3g} – {b:.3g}" for a, b in itertools.pairwise(edges)]
        return _bars([(props.tolist(), REF_COLOR)], labels)
    if c.kind == "categorical" and c.counts:
        top = c.top(12)
        total = max(c.count, 1)
        return _bars([([v / total for _, v in top], REF_COLOR)], [str(k) for k, _ in top])
    return ""


def statistics_html(stats: Statistics) -> str:
    """Per-column statistics with a histogram or top-values chart each."""
    columns = [{"c": c, "d": c.to_dict(), "chart": _column_chart(c)} for c in stats.columns.values()]
    return _env().get_template("stats.html.j2").render(stats=stats, columns=columns)
