"""The web UI in a real browser: Debian's chromium driven by Playwright (no browser downloaded).

Log in with a token, filter runs, open a run, follow lineage to the model, promote as an editor, be
refused as a viewer, see the audit entry. Screenshots of the main pages go to tests/screenshots/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import Server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[1] / "screenshots"

sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package")
# about 10 s: in the default tier (the brief's bar for `slow` is 20 s)
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


def test_ui_end_to_end(server: Server) -> None:
    SHOTS.mkdir(exist_ok=True)
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
            expect(page.locator("main table tbody tr")).to_have_count(23)
            page.fill("input[name=pipeline]", "sweep")
            page.fill("#where", "metric.accuracy>=0.5; param.lr=0.1")
            page.fill("#sort", "-metric.accuracy")
            page.click("#run-filters button")
            expect(page.locator("main table tbody tr")).to_have_count(5)
            expect(page.locator("main table tbody tr").first).to_contain_text("0.9000")
            page.screenshot(path=str(SHOTS / "runs.png"), full_page=True)

            # a run page, then lineage from the run to the model it produced
            page.goto(f"{server.url}/#/runs/{server.seeded.model_run}")
            expect(page.locator("h1")).to_contain_text(server.seeded.model_run)
            expect(page.locator("main table").first.locator("tbody tr")).to_have_count(4)
            page.screenshot(path=str(SHOTS / "run.png"), full_page=True)
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
            page.screenshot(path=str(SHOTS / "model.png"), full_page=True)
            assert server.ws.model_version("churn@production").version == 2

            # the audit page shows who did it and why
            page.click("[data-nav=audit]")
            expect(page.locator("tr.audit-entry").first).to_contain_text("editor-token")
            expect(page.locator("tr.audit-entry").first).to_contain_text("better offline metrics")
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
            assert server.ws.model_version("churn@production").version == 2
            # no token ever appears in the page
            assert server.seeded.tokens["viewer"] not in page.content()
        finally:
            browser.close()
