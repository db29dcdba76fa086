"""The backtest's HTML page: the three policies per window, the loop's deployments marked."""

from __future__ import annotations

from typing import Any

from jinja2 import ChoiceLoader, Environment, PackageLoader, select_autoescape

from mloop.backtesting.backtest import BacktestReport
from mloop.validation.model import LOWER_IS_BETTER

__all__ = ["backtest_html"]


def _environment() -> Environment:
    """This package's template, with the loop reports' and data-validation reports' stylesheet."""
    return Environment(
        loader=ChoiceLoader(
            [
                PackageLoader("mloop.backtesting", "templates"),
                PackageLoader("mloop.monitoring", "templates"),
                PackageLoader("mloop.validation", "templates"),
            ]
        ),
        autoescape=select_autoescape(["html", "j2"]),
    )


def _settings(value: Any, skip: tuple[str, ...] = ()) -> str:
    """A trigger's or policy's settings as ``key = value`` pairs people read, not a Python dict."""
    items = value.items() if isinstance(value, dict) else vars(value).items()
    return " · ".join(f"{k} = {v}" for k, v in items if k not in skip and v not in (None, {}, []))


def _verdict(report: BacktestReport) -> str:
    """Green when the loop beat the static model and kept most of every-window retraining's gain,
    amber when it beat the static model by less, red when it did worse than leaving the model alone."""
    primary = report.primary
    loop, static = report.loop.metrics.get(primary), report.static.metrics.get(primary)
    if loop is None or static is None:
        return "warn"
    lower_is_better = primary in LOWER_IS_BETTER
    better = loop < static if lower_is_better else loop > static
    if not better and loop != static:
        return "bad"
    return "good" if report.recovered is None or report.recovered >= 0.9 else "warn"


def backtest_html(
    report: BacktestReport,
    *,
    title: str = "Backtest of the retraining loop",
    extra: str = "",
    row_name: str = "row",
) -> str:
    """A self-contained HTML page: the three policies per window, the loop's deployments marked.

    Events are numbered by ``row_name`` of the whole data (the first rows trained the first model)."""
    from mloop.monitoring.charts import PALETTE, line_chart

    primary = report.primary
    policies = [("loop", report.loop), ("static", report.static), ("every_window", report.every_window)]
    series = {name: [w.get(primary) for w in p.windows] for name, p in policies}
    markers = [
        (
            e.row / report.window_rows - 0.5,
            f"{e.kind} v{e.version}: {e.detail}",
            "#54a24b" if e.kind == "promote" else "#e45756",
        )
        for e in report.events
        if e.kind in ("promote", "rollback")
    ]
    chart = line_chart(series, markers=markers, y_label=primary)
    names = sorted({m for _, p in policies for m in p.metrics})
    return (
        _environment()
        .get_template("backtest.html.j2")
        .render(
            r=report,
            title=title,
            recovered=report.recovered,
            policies=policies,
            metric_names=names,
            primary=primary,
            chart=chart,
            legend=list(zip(series, PALETTE, strict=False)),
            extra=extra,
            verdict=_verdict(report),
            row_name=row_name,
            settings=_settings,
        )
    )
