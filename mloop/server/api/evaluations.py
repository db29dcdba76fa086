"""``/api/v1/models/{name}/…`` beyond the registry: evaluations of a version, monitoring windows, and
the rollout (approving or rejecting a manual one: editors, audited). Shells over ``server.model_state``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from mloop.auth import Principal
from mloop.server import model_state
from mloop.server.deps import check_id, check_name, principal, workspace
from mloop.workspace import Workspace

router = APIRouter(prefix="/models", tags=["models"])
Viewer = Annotated[Principal, Depends(principal("viewer"))]
Editor = Annotated[Principal, Depends(principal("editor"))]
Ws = Annotated[Workspace, Depends(workspace)]
VersionNumber = Annotated[int, Path(ge=1, le=10**9)]


class Decision(BaseModel):
    """A person's decision on the version a manual rollout waits with."""

    model_config = ConfigDict(extra="forbid", strict=True)
    version: int = Field(ge=1, le=10**9)
    reason: str = Field(min_length=1, max_length=2000)


@router.get(
    "/{name}/versions/{version}/evaluations",
    summary="Evaluations, validation verdicts and infra checks recorded by the run that made a version",
)
def get_evaluations(name: str, version: VersionNumber, ws: Ws, _: Viewer) -> dict[str, Any]:
    return model_state.evaluations(ws, check_name(name, "name"), version)


@router.get("/{name}/monitoring", summary="Monitoring windows: the latest recorded report, or one run's")
def get_monitoring(
    name: str,
    ws: Ws,
    _: Viewer,
    run_id: Annotated[str | None, Query(description="a monitor run's id (default: the latest)")] = None,
) -> dict[str, Any]:
    run = check_id(run_id, "run_id") if run_id is not None else None
    return model_state.monitoring(ws, check_name(name, "name"), run)


@router.get("/{name}/rollout", summary="A model's rollout: policy, production, canary, pending version")
def get_rollout(name: str, ws: Ws, _: Viewer) -> dict[str, Any]:
    return model_state.rollout_state(ws, check_name(name, "name"))


@router.post(
    "/{name}/rollout/approve", summary="Approve a manual rollout: promote the pending version; editors"
)
def approve_rollout(name: str, body: Decision, ws: Ws, who: Editor) -> dict[str, Any]:
    name = check_name(name, "name")
    return model_state.decide_rollout(ws, name, body.version, approve=True, who=who.name, reason=body.reason)


@router.post("/{name}/rollout/reject", summary="Reject the version a manual rollout waits with; editors")
def reject_rollout(name: str, body: Decision, ws: Ws, who: Editor) -> dict[str, Any]:
    name = check_name(name, "name")
    return model_state.decide_rollout(ws, name, body.version, approve=False, who=who.name, reason=body.reason)
