"""The web UI in a real browser: Debian's chromium driven by Playwright (no browser downloaded).

Log in with a token, filter runs, open a run, follow lineage to the model, promote as an editor, be
refused as a viewer, see the audit entry. Screenshots of the main pages go to tests/screenshots/.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Server

import mloop
from mloop.monitoring.monitor import MonitorReport, _record
from mloop.monitoring.windows import WindowResult

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[1] / "screenshots"

sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package")
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="chromium is not installed (apt-get install chromium)"
)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]


def _record_monitoring(ws: mloop.Workspace) -> None:
    """A monitoring report of churn as ``mloop monitor`` records it: four windows, a canary moved in
    the second, feature x2 drifting from the third, one slice."""
    start = datetime(2026, 3, 1, tzinfo=UTC)
    windows = []
    for i in range(4):
        lo, hi = start + timedelta(hours=i), start + timedelta(hours=i + 1)
        windows.append(
            WindowResult(
                index=i,
                start=lo.isoformat(),
                end=hi.isoformat(),
                rows=100,
                labelled=100,
                complete=True,
                versions={"1": 100},
                metrics={"accuracy": 0.9 - 0.1 * (i >= 2)},
                slices={"city=paris": {"rows": 40, "accuracy": 0.8}},
                drift_share=0.5 * (i >= 2),
                drifted=["x2"] if i >= 2 else [],
                feature_scores={"x1": 0.2, "x2": 0.4 + 0.8 * i},
            )
        )
    deployed = {
        "at": (start + timedelta(hours=1, minutes=30)).isoformat(),
        "alias": "canary",
        "action": "set",
        "version": 2,
        "reason": "validated",
    }
    report = MonitorReport("churn", "100 rows", windows, start.isoformat(), deployments=[deployed])
    _record(ws, "churn", report, ws.model_version("churn:1"))


@pytest.mark.slow  # a browser: the slow tier
def test_ui_end_to_end(server: Server) -> None:
    SHOTS.mkdir(exist_ok=True)
    ws = server.ws
    assert ws.root is not None
    (ws.root.parent / "mloop.toml").write_text('[[rollout]]\nmodel = "churn"\nmode = "manual"\n')
    ws.metadata.log_metrics(server.seeded.model_run, [("loss", 1 / (s + 1), s) for s in range(12)])
    _record_monitoring(ws)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 800})
            page.set_default_timeout(20_000)
            expect = sync_api.expect

            # a forged token is refused at the door
            page.goto(server.url + "/")
            page.fill("#token", "mloop_forged")
            page.click("#login-form button")
            expect(page.locator("#login-error")).to_contain_text("invalid token")

            # log in as an editor; the runs table, filtered and sorted server-side
            page.fill("#token", server.seeded.tokens["editor"])
            page.click("#login-form button")
            expect(page.locator("#who")).to_have_text("editor-token (editor)")
            expect(page.locator("main table tbody tr")).to_have_count(24)  # 23 seeded + the monitor run
            page.fill("input[name=pipeline]", "sweep")
            page.fill("#where", "metric.accuracy>=0.5; param.lr=0.1")
            page.fill("#sort", "-metric.accuracy")
            page.click("#run-filters button")
            expect(page.locator("main table tbody tr")).to_have_count(5)
            expect(page.locator("main table tbody tr").first).to_contain_text("0.9000")
            page.screenshot(path=str(SHOTS / "runs.png"), full_page=True)

            # two runs side by side: the param they differ in is highlighted
            page.locator("input.compare-pick").nth(0).check()
            page.locator("input.compare-pick").nth(1).check()
            page.click("#compare-selected")
            expect(page.locator("h1")).to_have_text("Compare 2 runs")
            expect(page.locator("#compare thead th a")).to_have_count(2)
            expect(page.locator("#compare tr.differs").filter(has_text="param depth")).to_have_count(1)
            expect(page.locator("#compare tr.differs").filter(has_text="param lr")).to_have_count(0)
            page.screenshot(path=str(SHOTS / "compare.png"), full_page=True)

            # a run page, then lineage from the run to the model it produced
            page.goto(f"{server.url}/#/runs/{server.seeded.model_run}")
            expect(page.locator("h1")).to_contain_text(server.seeded.model_run)
            expect(page.locator("main table").first.locator("tbody tr")).to_have_count(4)
            expect(page.locator("#metric-charts figure")).to_have_count(1)
            expect(page.locator("#metric-charts svg circle")).to_have_count(12)
            # the lineage drawn: this run's steps, their artifacts and the model made from them,
            # each node a link (downstream to the model page, upstream to an artifact's lineage)
            graph = page.locator("#lineage-graph")
            expect(graph.locator("a.lineage-node.step.current")).to_have_count(4)
            expect(graph.locator("a.lineage-node.model")).to_contain_text("churn v1")
            page.screenshot(path=str(SHOTS / "run.png"), full_page=True)
            graph.locator("a.lineage-node.model").click()
            expect(page.locator("h1")).to_have_text("Model churn")
            page.go_back()
            graph.locator("a.lineage-node.artifact").first.click()
            expect(page.locator("h1")).to_contain_text("Lineage of")
            expect(page.locator("#lineage-graph a.lineage-node.artifact.current")).to_have_count(1)
            page.locator("#lineage-graph a.lineage-node.step").first.click()  # back upstream to a run
            expect(page.locator("h1")).to_contain_text("Run ")
            page.goto(f"{server.url}/#/runs/{server.seeded.model_run}")
            expect(page.locator("h1")).to_contain_text(server.seeded.model_run)
            rows = page.locator("main table").nth(3).locator("tbody tr")
            add_output = rows.filter(has_text="add").filter(has_text="output").first
            add_output.locator("a").first.click()
            expect(page.locator("h1")).to_contain_text("Lineage of")
            page.screenshot(path=str(SHOTS / "lineage.png"), full_page=True)
            page.locator("a.model-link").first.click()
            expect(page.locator("h1")).to_have_text("Model churn")

            # promote v2 to production with a reason (two prompts: alias, reason)
            answers = iter(["production", "better offline metrics"])
            page.on("dialog", lambda d: d.accept(next(answers)))
            page.locator("button.promote[data-version='2']").click()
            expect(page.locator("#toast")).to_contain_text("production now points at v2")
            expect(page.locator("main table").nth(1)).to_contain_text("better offline metrics")
            assert server.ws.model_version("churn@production").version == 2

            # the model's live metric over time with the canary marked, drift per feature, slices
            expect(page.locator("#live-metrics svg polyline")).to_have_count(2)
            expect(page.locator("#live-metrics .marker")).to_contain_text("canary v2")
            expect(page.locator("#drift-heat td.drifted")).to_have_count(2)
            expect(page.locator("main")).to_contain_text("city=paris")
            page.screenshot(path=str(SHOTS / "model.png"), full_page=True)

            # the monitoring report mloop writes, opened in place (a sandboxed frame); deep link
            page.click("#monitoring-report")
            expect(page.locator("h1")).to_contain_text("Report: monitoring")
            assert "#/reports/monitoring/churn?run_id=" in page.url
            expect(page.frame_locator("#report-frame").locator("body")).to_contain_text("churn")
            page.screenshot(path=str(SHOTS / "report.png"), full_page=True)
            page.click("[data-nav=reports]")
            expect(page.locator("a.report-link").first).to_have_text("churn")
            page.goto(server.url + "/#/models/churn")
            expect(page.locator("h1")).to_have_text("Model churn")

            # a manual rollout: v3 waits, an editor approves it with a reason
            ws.register_model("churn", {"weights": [3]})
            page.reload()
            expect(page.locator("#rollout")).to_contain_text("v3 waits for a decision")
            answers = iter(["offline gain confirmed"])
            page.click("#approve-rollout")
            expect(page.locator("#toast")).to_contain_text("v3 approved")
            expect(page.locator("#rollout")).to_contain_text("approve")
            assert server.ws.model_version("churn@production").version == 3
            page.locator("a.evaluations-link").first.click()
            expect(page.locator("h1")).to_contain_text("Evaluations of churn v1")

            # the audit page shows who did it and why
            page.click("[data-nav=audit]")
            expect(page.locator("tr.audit-entry").first).to_contain_text("editor-token")
            expect(page.locator("tr.audit-entry").first).to_contain_text("offline gain confirmed")
            expect(page.locator("tr.audit-entry").nth(1)).to_contain_text("better offline metrics")
            page.screenshot(path=str(SHOTS / "audit.png"), full_page=True)
            page.click("[data-nav=triggers]")
            expect(page.locator("h1")).to_have_text("Triggers and scheduler")
            page.screenshot(path=str(SHOTS / "triggers.png"), full_page=True)

            # a viewer is refused, and nothing moves
            page.click("#logout")
            page.fill("#token", server.seeded.tokens["viewer"])
            page.click("#login-form button")
            expect(page.locator("#who")).to_have_text("viewer-token (viewer)")
            page.goto(server.url + "/#/models/churn")
            answers = iter(["production", "viewer tries"])
            page.locator("button.promote[data-version='1']").click()
            expect(page.locator("#toast")).to_contain_text("refused")
            expect(page.locator("#toast")).to_contain_text("viewer")
            assert server.ws.model_version("churn@production").version == 3
            # no token ever appears in the page
            assert server.seeded.tokens["viewer"] not in page.content()
        finally:
            browser.close()
