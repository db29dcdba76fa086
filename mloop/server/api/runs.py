"""``/api/v1/runs``: pages of runs (filters, sort, cursor), one run, its steps, params, metrics and series.

Query syntax of ``GET /runs``:

* ``pipeline``, ``status``, ``trigger``: equality.
* ``where`` (repeatable): ``param.KEY=VALUE`` (VALUE read as JSON, else as a string) or
  ``metric.KEY OP NUMBER`` with OP one of ``> >= < <= = !=`` (a run's latest value of KEY).
* ``since`` / ``until``: ISO-8601 times (UTC when no offset is given) on the run's creation.
* ``sort``: ``created_at`` or ``metric.KEY``, ``-`` in front for descending (default ``-created_at``).
* ``limit`` (1-500, default 50) and ``cursor`` (the ``next_cursor`` of the previous page).
"""

from __future__ import annotations

import base64
import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from mloop.entities import RunStatus
from mloop.errors import NotFoundError, ParameterError
from mloop.server.deps import BadRequestError, check_id, json_response, jsonable, principal, workspace
from mloop.stores.sql.run_pages import RunPageQuery
from mloop.workspace import Workspace

router = APIRouter(prefix="/runs", tags=["runs"], dependencies=[Depends(principal("viewer"))])

_WHERE = re.compile(r"^(param|metric)\.([A-Za-z0-9_.:/-]{1,250}?)(>=|<=|!=|>|<|=)(.{1,500})$", re.S)
_SORT = re.compile(r"^(-?)(created_at|metric\.([A-Za-z0-9_.:/-]{1,250}))$")


def parse_where(
    conditions: list[str],
) -> tuple[tuple[tuple[str, Any], ...], tuple[tuple[str, str, float], ...]]:
    """``param.K=V`` / ``metric.K>V`` strings → (params, metrics); ParameterError naming the bad one."""
    params: list[tuple[str, Any]] = []
    metrics: list[tuple[str, str, float]] = []
    for text in conditions:
        match = _WHERE.match(text)
        if not match:
            raise BadRequestError(
                f"where {text[:100]!r}: expected param.KEY=VALUE or metric.KEY OP NUMBER "
                "(OP one of > >= < <= = !=)",
                field="where",
            )
        kind, key, op, raw = match.groups()
        if kind == "param":
            if op != "=":
                raise BadRequestError(f"where {text[:100]!r}: params compare with = only", field="where")
            try:
                value: Any = json.loads(raw)
            except ValueError:
                value = raw
            params.append((key, value))
        else:
            try:
                number = float(raw)
            except ValueError:
                raise BadRequestError(
                    f"where {text[:100]!r}: {raw[:50]!r} is not a number", field="where"
                ) from None
            if number != number or number in (float("inf"), float("-inf")):
                raise BadRequestError(f"where {text[:100]!r}: the number must be finite", field="where")
            metrics.append((key, op, number))
    return tuple(params), tuple(metrics)


def _time(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequestError(f"{field} {value[:60]!r} is not an ISO-8601 time", field=field) from None
    try:  # in UTC, as stored; a time whose UTC falls outside years 1-9999 cannot match anything
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except OverflowError:
        raise BadRequestError(f"{field} {value[:60]!r} is outside years 1-9999 in UTC", field=field) from None


def encode_cursor(after: tuple[float | None, str], sort: str) -> str:
    """The position after a page, bound to the sort it was taken in."""
    return base64.urlsafe_b64encode(json.dumps([*after, sort]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[float | None, str]:
    """A cursor this server gave for ``sort``; 400 for anything else (another sort's, hand-made)."""
    refused = BadRequestError("cursor is not one this server gave (use next_cursor as given)", field="cursor")
    try:
        value, run_id, taken_in = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise refused
        if value is not None and not math.isfinite(value := float(value)):
            raise refused
        run_id = check_id(str(run_id), "cursor")
    except (ValueError, TypeError, ParameterError, OverflowError):
        raise refused from None
    if taken_in != sort:
        raise BadRequestError(
            f"cursor was given for sort {str(taken_in)[:80]!r}, not {sort[:80]!r}", field="cursor"
        )
    return value, run_id


@router.get("", summary="A page of runs, filtered and sorted", response_model=dict[str, Any])
def list_runs(
    request: Request,
    ws: Annotated[Workspace, Depends(workspace)],
    pipeline: str | None = None,
    status: str | None = None,
    trigger: str | None = None,
    where: Annotated[list[str], Query(description="param.KEY=VALUE or metric.KEY OP NUMBER")] = [],  # noqa: B006
    since: str | None = None,
    until: str | None = None,
    sort: str = "-created_at",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Response:
    if status is not None and status not in {s.value for s in RunStatus}:
        raise BadRequestError(
            f"status {status[:40]!r} is not one of {', '.join(s.value for s in RunStatus)}", field="status"
        )
    sort_match = _SORT.match(sort)
    if not sort_match:
        raise BadRequestError(
            f"sort {sort[:80]!r}: expected created_at or metric.KEY, optionally with -", field="sort"
        )
    params, metrics = parse_where(where)
    query = RunPageQuery(
        pipeline=pipeline,
        status=status,
        trigger=trigger,
        params=params,
        metrics=metrics,
        since=_time(since, "since"),
        until=_time(until, "until"),
        sort_metric=sort_match.group(3),
        descending=sort_match.group(1) == "-",
        limit=limit,
        after=decode_cursor(cursor, sort) if cursor else None,
    )
    pages = getattr(request.app.state, "run_pages", None)  # with the process's metric index
    page = pages.page(query) if pages is not None else ws.run_page(query)
    runs = []
    for run, value in zip(page.runs, page.sort_values, strict=True):
        row = jsonable(run)
        row["duration_s"] = run.duration_s
        if query.sort_metric is not None:
            row["sort_value"] = value
        runs.append(row)
    return json_response(
        {"runs": runs, "next_cursor": encode_cursor(page.next_after, sort) if page.next_after else None}
    )


@router.get("/{run_id}", summary="One run: steps, params, latest metrics, artifacts, trigger event, models")
def get_run(run_id: str, ws: Annotated[Workspace, Depends(workspace)]) -> dict[str, Any]:
    run = ws.resolve_run(check_id(run_id, "run_id"))  # an id or a unique prefix, as the CLI takes
    steps = ws.metadata.list_steps(run.id)
    names = {s.id: s.name for s in steps}
    events = ws.metadata.events(step_run_ids=[s.id for s in steps]) if steps else []
    artifacts = ws.metadata.get_artifacts([e.artifact_id for e in events])
    latest: dict[str, Any] = {}
    for m in ws.metadata.get_metrics(run.id):
        latest[m.key] = {"value": m.value, "step": m.step, "step_name": names.get(m.step_run_id or "")}
    event = ws.triggers.event_of_run(run.id)
    models = [
        {"name": v.name, "version": v.version, "aliases": list(v.aliases), "artifact_id": v.artifact_id}
        for v in ws.registry.versions_of_run(run.id)
    ]
    return {
        "run": jsonable(run) | {"duration_s": run.duration_s},
        "steps": [
            jsonable(s) | {"duration_s": s.duration_s, "cache_hit": s.cached_from is not None} for s in steps
        ],
        "params": ws.metadata.get_params(run.id),
        "metrics": latest,
        "artifacts": [
            {"step": names[e.step_run_id], "kind": e.kind, "name": e.name}
            | jsonable(artifacts[e.artifact_id])
            for e in events
        ],
        "trigger_event": jsonable(event) if event else None,
        "models": models,
    }


@router.get("/{run_id}/steps", summary="The run's step executions")
def get_steps(run_id: str, ws: Annotated[Workspace, Depends(workspace)]) -> dict[str, Any]:
    run = ws.resolve_run(check_id(run_id, "run_id"))
    return {"steps": [jsonable(s) | {"duration_s": s.duration_s} for s in ws.metadata.list_steps(run.id)]}


@router.get("/{run_id}/params", summary="The run's params")
def get_params(run_id: str, ws: Annotated[Workspace, Depends(workspace)]) -> dict[str, Any]:
    run = ws.resolve_run(check_id(run_id, "run_id"))
    return {"params": ws.metadata.get_params(run.id)}


@router.get("/{run_id}/metrics", summary="Every logged point of every metric, in the order logged")
def get_metrics(run_id: str, ws: Annotated[Workspace, Depends(workspace)]) -> dict[str, Any]:
    run = ws.resolve_run(check_id(run_id, "run_id"))
    return {"metrics": [jsonable(m) for m in ws.metadata.get_metrics(run.id)]}


@router.get("/{run_id}/metrics/{key}", summary="Every logged point of one metric (a series)")
def get_metric_series(run_id: str, key: str, ws: Annotated[Workspace, Depends(workspace)]) -> dict[str, Any]:
    run = ws.resolve_run(check_id(run_id, "run_id"))
    points = ws.metadata.get_metrics(run.id, key)
    if not points:
        raise NotFoundError(f"run {run.id} logged no metric {key[:100]!r}", field="key")
    return {
        "key": key,
        "points": [{"value": p.value, "step": p.step, "timestamp": p.timestamp.isoformat()} for p in points],
    }
