"""Small inline-SVG charts for the loop's reports: lines over windows with event markers, and a
feature × window heat table. Self-contained HTML, no scripts, no network."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

__all__ = ["PALETTE", "heat_color", "line_chart"]

PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2")
W, H, LEFT, BOTTOM, TOP = 900, 272, 44, 26, 24  # TOP leaves room for the y label above the top tick


def line_chart(
    series: Mapping[str, Sequence[float | None]],
    *,
    x_labels: Sequence[str] | None = None,
    markers: Sequence[tuple[float, str, str]] = (),
    y_label: str = "",
) -> str:
    """Lines (one per series, same x positions 0..n-1); ``markers`` are ``(x, label, color)`` rules."""
    values = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    n = max((len(s) for s in series.values()), default=0)
    if not values or n == 0:
        return ""
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or 0.05
    lo, hi = lo - pad, hi + pad
    plot_w, plot_h = W - LEFT - 10, H - BOTTOM - TOP

    def px(i: float) -> float:
        return LEFT + (plot_w * (i / (n - 1) if n > 1 else 0.5))

    def py(v: float) -> float:
        return TOP + plot_h * (1 - (v - lo) / (hi - lo))

    parts = [f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img">']
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        y = py(v)
        parts.append(f'<line x1="{LEFT}" x2="{W - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{v:.3g}</text>')
    if y_label:
        parts.append(f'<text x="4" y="{TOP - 10}" font-size="10">{html.escape(y_label)}</text>')
    step = max(1, n // 12)
    for i in range(0, n, step):
        label = x_labels[i] if x_labels and i < len(x_labels) else str(i + 1)
        text = html.escape(label)
        parts.append(f'<text x="{px(i):.1f}" y="{H - 8}" font-size="10" text-anchor="middle">{text}</text>')
    for x, label, color in markers:
        x = min(max(x, 0.0), n - 1.0)  # a move after the last point still shows, at the edge
        parts.append(
            f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{TOP}" y2="{TOP + plot_h}" stroke="{color}" '
            f'stroke-dasharray="4 3"><title>{html.escape(label)}</title></line>'
        )
    for (name, s), color in zip(series.items(), PALETTE * 4, strict=False):
        points = [(px(i), py(v)) for i, v in enumerate(s) if v is not None and math.isfinite(v)]
        if not points:
            continue
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2">')
        parts.append(f"<title>{html.escape(name)}</title></polyline>")
        if len(points) <= 40:
            for x, y in points:
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>')
    parts.append("</svg>")
    return "".join(parts)


def heat_color(score: float | None) -> str:
    """A drift score (1 = at the threshold) as a cell colour: green below, red above."""
    if score is None or not math.isfinite(score):
        return "#f5f5f5"
    t = max(0.0, min(score / 2, 1.0))
    if t < 0.5:
        return f"hsl(140, 45%, {92 - t * 30:.0f}%)"
    return f"hsl(0, 70%, {92 - (t - 0.5) * 60:.0f}%)"
