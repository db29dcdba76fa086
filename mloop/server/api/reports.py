"""``/api/v1/reports``: the HTML reports mloop writes, served to be opened in place in the web UI.

* ``GET /reports``: what can be opened: each model's latest monitoring report, and the HTML files
  in the workspace folder or its ``reports/`` folder (``mloop demo`` writes ``loop-report.html``
  there; ``mloop backtest --html .mloop/reports/NAME.html`` puts a backtest there).
* ``GET /reports/monitoring/{name}``: a model's monitoring report (``run_id``: that monitor run's).
* ``GET /reports/artifacts/{id}``: an artifact that is a report (drift, statistics, monitoring),
  rendered as the CLI's ``--html`` renders it.
* ``GET /reports/files/{name}``: one of the listed HTML files; a name is one path segment ending in
  ``.html``, resolved inside the workspace, so no path can leave it.

Every report is answered with a Content-Security-Policy that allows no script, no request and no
navigation (``sandbox``), so a report's content cannot act as the viewer; the UI shows it in a
sandboxed frame.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse

from mloop.errors import NotFoundError
from mloop.monitoring.monitor import MonitorReport
from mloop.monitoring.report import monitor_html
from mloop.server import model_state
from mloop.server.deps import BadRequestError, check_id, check_name, principal, workspace
from mloop.validation.drift import DriftReport
from mloop.validation.report import drift_html, statistics_html
from mloop.validation.stats import Statistics
from mloop.workspace import Workspace

router = APIRouter(prefix="/reports", tags=["reports"], dependencies=[Depends(principal("viewer"))])
Ws = Annotated[Workspace, Depends(workspace)]

_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,122}\.html$")
_REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; sandbox"


def _html(text: str) -> HTMLResponse:
    return HTMLResponse(text, headers={"Content-Security-Policy": _REPORT_CSP})


def _folders(ws: Workspace) -> list[Path]:
    """Where report files are looked for: the workspace folder and its ``reports/``."""
    if ws.root is None:
        return []
    return [ws.root, ws.root / "reports"]


@router.get("", summary="Reports that can be opened: monitoring per model, HTML report files")
def list_reports(ws: Ws) -> dict[str, Any]:
    monitoring = []
    for model in ws.registry.models():
        try:
            run, _ = model_state.monitoring_report(ws, model.name)
        except NotFoundError:
            continue
        monitoring.append({"model": model.name, "run_id": run.id, "at": run.created_at.isoformat()})
    files = []
    for folder in _folders(ws):
        if folder.is_dir():
            for path in sorted(folder.glob("*.html")):
                if _FILE.match(path.name) and path.is_file():
                    stat = path.stat()
                    files.append({"name": path.name, "size": stat.st_size, "modified": stat.st_mtime})
    return {"monitoring": monitoring, "files": files}


@router.get("/monitoring/{name}", summary="A model's monitoring report as HTML", response_class=HTMLResponse)
def monitoring_report(
    name: str,
    ws: Ws,
    run_id: Annotated[str | None, Query(description="a monitor run's id (default: the latest)")] = None,
) -> HTMLResponse:
    run = check_id(run_id, "run_id") if run_id is not None else None
    _, art = model_state.monitoring_report(ws, check_name(name, "name"), run)
    return _html(monitor_html(MonitorReport.from_bytes(ws.artifacts.get(art.digest))))


@router.get("/artifacts/{artifact_id}", summary="A report artifact as HTML", response_class=HTMLResponse)
def artifact_report(artifact_id: str, ws: Ws) -> HTMLResponse:
    art = ws.metadata.get_artifact(check_id(artifact_id, "artifact_id"))
    value = ws.load_artifact(art.id)
    if isinstance(value, DriftReport):
        return _html(drift_html(value))
    if isinstance(value, Statistics):
        return _html(statistics_html(value))
    if isinstance(value, MonitorReport):
        return _html(monitor_html(value))
    raise BadRequestError(
        f"artifact {art.id} is a {art.python_type or art.type}, not a report "
        "(drift, statistics or monitoring)",
        field="artifact_id",
    )


@router.get("/files/{name}", summary="An HTML report file of the workspace", response_class=HTMLResponse)
def report_file(name: str, ws: Ws) -> HTMLResponse:
    if not _FILE.match(name):
        raise BadRequestError(
            f"report {name[:80]!r}: expected a file name ending in .html (letters, digits, . _ -)",
            field="name",
        )
    for folder in _folders(ws):
        path = (folder / name).resolve()
        if path.is_relative_to(folder.resolve()) and path.is_file():
            return _html(path.read_text(encoding="utf-8", errors="replace"))
    raise NotFoundError(f"no report file {name!r} in the workspace", field="name")
