"""``/api/v1/triggers`` (events, evidence, runs started, scheduler state; firing),
``/api/v1/scheduler/status`` and ``/api/v1/audit``.

Firing a trigger here records a ``pending`` manual event; the scheduler daemon's next pass hands it to
a run (as it does with any event no run holds yet). The server never runs a pipeline itself: runs
belong to the scheduler's process, its executor and its logs.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from mloop.auth import Principal
from mloop.entities import EventStatus, new_id
from mloop.errors import NotFoundError
from mloop.orchestration.config import load_loop_config
from mloop.orchestration.scheduler import trigger_status
from mloop.server.deps import check_id, check_name, jsonable, principal, workspace
from mloop.workspace import Workspace

router = APIRouter(tags=["triggers"])
Viewer = Annotated[Principal, Depends(principal("viewer"))]
Editor = Annotated[Principal, Depends(principal("editor"))]
Ws = Annotated[Workspace, Depends(workspace)]


class Fire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str = Field(min_length=1, max_length=2000)


@router.get("/triggers", summary="Configured triggers with their scheduler state")
def list_triggers(ws: Ws, _: Viewer) -> dict[str, Any]:
    config = load_loop_config(ws.config_dir)
    store = ws.triggers
    return {
        "triggers": [
            {
                "name": spec.name,
                "kind": spec.kind,
                "pipeline": spec.pipeline,
                "state": jsonable(store.state(spec.name)),
            }
            for spec in config.triggers
        ]
    }


@router.get(
    "/scheduler/status",
    summary="Each trigger: last evaluation and result, last firing, next due time, latest event",
)
def scheduler_status(ws: Ws, _: Viewer) -> dict[str, Any]:
    return {"triggers": jsonable(trigger_status(ws.triggers, load_loop_config(ws.config_dir)))}


@router.get("/triggers/events", summary="Trigger events, newest first: evidence, status, the run started")
def list_events(
    ws: Ws,
    _: Viewer,
    trigger: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    status: Annotated[EventStatus | None, Query(description="only events in this status")] = None,
) -> dict[str, Any]:
    if trigger is not None:
        check_name(trigger, "trigger")
    return {"events": [jsonable(e) for e in ws.triggers.events(trigger, limit=limit, status=status)]}


@router.post(
    "/triggers/{trigger}/fire", summary="Fire a trigger: a pending event the scheduler runs; editors"
)
def fire_trigger(trigger: str, body: Fire, ws: Ws, who: Editor) -> dict[str, Any]:
    check_name(trigger, "trigger")
    config = load_loop_config(ws.config_dir)
    spec = next((s for s in config.triggers if s.name == trigger), None)
    if spec is None:
        known = ", ".join(s.name for s in config.triggers) or "none"
        raise NotFoundError(f"no trigger named {trigger!r} (configured: {known})", field="trigger")
    event = ws.triggers.claim(
        trigger,
        f"manual/{new_id()}",
        kind="manual",
        pipeline=spec.pipeline,
        evidence={"reason": body.reason, "by": who.name, "params": {}},
    )
    assert event is not None  # a fresh event key cannot collide
    ws.tokens.record_audit(
        who.name, "trigger.fire", f"trigger:{trigger}", reason=body.reason, details={"event_id": event.id}
    )
    return jsonable(event)


@router.get("/audit", summary="The audit trail, newest first (cursor: the last entry's id)")
def list_audit(
    ws: Ws,
    _: Viewer,
    target: str | None = Query(None, max_length=500),
    action: str | None = Query(None, max_length=64),
    before: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    if before is not None:
        check_id(before, "before")
    entries = ws.tokens.audit_entries(target=target, action=action, before=before, limit=limit)
    return {"entries": [jsonable(e) for e in entries]}
