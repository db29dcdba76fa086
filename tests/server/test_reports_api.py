"""``/api/v1/reports``: the reports mloop writes, served as HTML to open in place, over real HTTP."""

from __future__ import annotations

import pandas as pd
from conftest import Server
from test_browser import _record_monitoring

from mloop.validation.drift import detect_drift
from mloop.validation.stats import compute_statistics


def test_reports_are_listed_and_served_as_sandboxed_html(server: Server) -> None:
    ws = server.ws
    assert ws.root is not None
    _record_monitoring(ws)
    reference = pd.DataFrame({"x": [float(i % 10) for i in range(200)]})
    current = pd.DataFrame({"x": [float(i % 10) + 5 for i in range(200)]})
    drift = ws.store_artifact(detect_drift(compute_statistics(reference), compute_statistics(current)))
    stats = ws.store_artifact(compute_statistics(reference))
    (ws.root / "loop-report.html").write_text("<html><body><h1>demo loop</h1></body></html>")
    (ws.root / "reports").mkdir()
    (ws.root / "reports" / "backtest.html").write_text("<html><body>backtest table</body></html>")
    (ws.root / "notes.txt").write_text("not a report")
    with server.client("viewer") as c:
        listed = c.get("/api/v1/reports").json()
        assert [m["model"] for m in listed["monitoring"]] == ["churn"]
        assert [f["name"] for f in listed["files"]] == ["loop-report.html", "backtest.html"]
        for path, text in (
            ("/api/v1/reports/monitoring/churn", "churn"),
            (f"/api/v1/reports/artifacts/{drift.id}", "x"),
            (f"/api/v1/reports/artifacts/{stats.id}", "x"),
            ("/api/v1/reports/files/loop-report.html", "demo loop"),
            ("/api/v1/reports/files/backtest.html", "backtest table"),
        ):
            r = c.get(path)
            assert r.status_code == 200, (path, r.text)
            assert r.headers["content-type"].startswith("text/html")
            csp = r.headers["content-security-policy"]
            assert "sandbox" in csp and "default-src 'none'" in csp and "script" not in csp
            assert text in r.text
        run_id = listed["monitoring"][0]["run_id"]
        assert c.get("/api/v1/reports/monitoring/churn", params={"run_id": run_id}).status_code == 200


def test_bad_report_requests_name_the_problem(server: Server) -> None:
    ws = server.ws
    assert ws.root is not None
    (ws.root.parent / "secret.html").write_text("outside the workspace")
    not_a_report = ws.store_artifact({"weights": [1]})
    with server.client(None) as anonymous:
        assert anonymous.get("/api/v1/reports").status_code == 401
        assert anonymous.get("/api/v1/reports/files/loop-report.html").status_code == 401
    with server.client("viewer") as c:
        r = c.get(f"/api/v1/reports/artifacts/{not_a_report.id}")
        assert r.status_code == 400 and "not a report" in r.json()["error"]["message"]
        assert r.json()["error"]["field"] == "artifact_id"
        assert c.get("/api/v1/reports/monitoring/nosuchmodel").status_code == 404
        assert c.get("/api/v1/reports/artifacts/01NOSUCHARTIFACT").status_code == 404
        assert c.get("/api/v1/reports/files/missing.html").status_code == 404
        for probe in ("..%2Fsecret.html", "notes.txt", ".hidden.html", "a%00.html", "%2Fetc%2Fpasswd"):
            r = c.get(f"/api/v1/reports/files/{probe}")
            assert r.status_code in (400, 404), probe
            assert "outside the workspace" not in r.text
        r = c.get("/api/v1/reports/files/..secret.txt")  # one segment, but not an .html name
        assert r.status_code == 400 and r.json()["error"]["field"] == "name"
        assert c.get("/api/v1/reports/artifacts/..%2F..").status_code in (400, 404)
