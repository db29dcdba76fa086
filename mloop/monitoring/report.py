"""HTML for monitoring results: live metrics over windows with deployments marked, and drift per
feature over windows (a heat table)."""

from __future__ import annotations

from typing import Any

from jinja2 import ChoiceLoader, Environment, PackageLoader, select_autoescape

from mloop.monitoring.charts import PALETTE, heat_color, line_chart
from mloop.monitoring.monitor import MonitorReport

__all__ = ["environment", "monitor_html"]

SHOWN = ("accuracy", "roc_auc", "f1", "mae", "rmse", "r2")


def environment() -> Environment:
    """Templates of the loop's reports (sharing the data-validation reports' stylesheet)."""
    return Environment(
        loader=ChoiceLoader(
            [PackageLoader("mloop.monitoring", "templates"), PackageLoader("mloop.validation", "templates")]
        ),
        autoescape=select_autoescape(["html", "j2"]),
    )


def _deployment_x(report: MonitorReport) -> list[tuple[float, str, str]]:
    markers = []
    for d in report.deployments:
        if d["alias"] != "production" or d["version"] is None:
            continue
        for w in report.windows:
            if w.start and w.start[:19] <= d["at"][:19] <= w.end[:19]:
                markers.append((float(w.index), f"v{d['version']}: {d['reason']}", "#888"))
                break
    return markers


def monitor_html(report: MonitorReport) -> str:
    """A self-contained HTML page for a :class:`MonitorReport`."""
    names = [m for m in SHOWN if any(m in w.metrics for w in report.windows)]
    series: dict[str, list[float | None]] = {m: [w.metrics.get(m) for w in report.windows] for m in names}
    series["drift share"] = [w.drift_share for w in report.windows]
    chart = line_chart(series, markers=_deployment_x(report))
    features = sorted({f for w in report.windows for f in w.feature_scores})
    legend = list(zip(series, PALETTE, strict=False))
    context: dict[str, Any] = {
        "report": report,
        "metrics_chart": chart,
        "legend": legend,
        "features": features,
        "metric_names": names,
        "heat": heat_color,
    }
    return environment().get_template("monitor.html.j2").render(**context)
