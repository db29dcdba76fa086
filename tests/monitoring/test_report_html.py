"""The loop's HTML report as a reader sees it: the chart's axis label clear of the ticks, one marker line
per deployment (also past the last window), readable choices, a headline coloured by the result, and
events numbered on the same scale everywhere."""

from __future__ import annotations

import re
import sys
from types import ModuleType

import mloop
from mloop.backtesting.report import backtest_html
from mloop.monitoring.charts import TOP, line_chart


def _report_module() -> ModuleType:
    return sys.modules[mloop.BacktestReport.__module__]  # wherever the harness lives, with its renderer


def _report(loop: float, events: list) -> mloop.BacktestReport:
    m = _report_module()
    policy = lambda acc, n: m.PolicyResult({"accuracy": acc}, [{"accuracy": acc}] * 4, n)  # noqa: E731
    return mloop.BacktestReport(
        rows=5000, task="classification", target="y", initial_rows=1000, window_rows=1000,
        model="a model", triggers=[{"name": "drift", "kind": "drift", "share": 0.75, "params": {"a": 1}}],
        rollout={"model": "m", "canary_fraction": 0.5}, loop=policy(loop, 2), static=policy(0.70, 0),
        every_window=policy(0.80, 4), events=events,
    )  # fmt: skip


def _event(row: int, kind: str, version: int = 2) -> object:
    return _report_module().LoopEvent(row=row, window=row // 1000, kind=kind, detail=f"{kind} at {row}",
                                      version=version)  # fmt: skip


def test_the_axis_label_sits_above_the_top_tick() -> None:
    svg = line_chart({"a": [0.5, 0.7, 0.9]}, y_label="accuracy")
    label_y = float(re.search(r'<text x="4" y="([\d.]+)"[^>]*>accuracy</text>', svg).group(1))  # type: ignore[union-attr]
    tick_ys = [float(y) for y in re.findall(r'<text x="40" y="([\d.]+)"', svg)]
    assert tick_ys and label_y < min(tick_ys) - 8 and label_y < TOP


def test_every_deployment_is_a_marker_line_even_past_the_last_window() -> None:
    markers = [(0.5, "promote v2", "green"), (2.5, "promote v3", "green"), (9.0, "promote v4", "green")]
    svg = line_chart({"a": [0.5, 0.7, 0.9]}, markers=markers)
    lines = re.findall(r'<line x1="([\d.]+)" x2="[\d.]+" y1="[\d.]+" y2="[\d.]+" stroke="green"', svg)
    assert len(lines) == 3
    assert all(float(x) <= 900 - 10 for x in lines)  # the last one at the chart's edge, not off it


def test_the_html_report_reads_well() -> None:
    events = [_event(1500, "trigger"), _event(1600, "promote"), _event(3900, "promote", 3)]
    page = backtest_html(_report(0.79, events), row_name="day")
    choices = page[page.index("<h2>Choices</h2>") :]
    assert "{" not in choices and "'" not in choices  # key = value pairs, not Python dicts
    assert "share = 0.75" in choices and "params.a = 1" in choices and "canary_fraction = 0.5" in choices
    assert '<div class="verdict good">' in page  # the loop beat the static model: a good result
    assert page.count('stroke-dasharray="4 3"') == 2  # both promotions drawn
    # the events table counts days of the whole data, as the demo's progress lines do
    assert "<th>day</th>" in page and ">2,500<" in page and ">4,900<" in page


def test_a_loop_worse_than_leaving_the_model_alone_is_red() -> None:
    page = backtest_html(_report(0.60, []))
    assert '<div class="verdict bad">' in page


def test_the_demo_section_shows_parameters_and_evidence_as_pairs() -> None:
    from types import SimpleNamespace

    from mloop.monitoring.report import environment

    run = {"id": "R1", "pipeline": "retrain", "trigger": "drift", "code_commit": None, "code_hash": "h" * 16,
           "params": {"model_name": "rainfall", "max_rows": 1816, "since": ""}}  # fmt: skip
    event = {"trigger": "drift", "key": "k", "evidence": {"share": 0.8, "window": 4}}
    final = {"version": 3, "run": run, "lineage": [], "history": [], "trigger_event": event}
    page = environment().get_template("demo_extra.html.j2").render(
        monitor=SimpleNamespace(windows=[], window="1816 rows"), final=final, features=[], heat=str,
        accuracy={"loop": {"before_drift": 0.8, "after_drift": 0.8, "overall": 0.8}},
    )  # fmt: skip
    assert "Parameters: model_name = rainfall · max_rows = 1816</p>" in page  # empty values left out
    assert "share = 0.8 · window = 4" in page and "{" not in page
