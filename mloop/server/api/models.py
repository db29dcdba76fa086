"""``/api/v1/models``: models, versions, aliases and their history; moving an alias (editors).

Every move is made in the principal's name, with a reason, and appended to the audit trail.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from mloop.auth import Principal
from mloop.server.deps import check_name, jsonable, principal, workspace
from mloop.workspace import Workspace

router = APIRouter(prefix="/models", tags=["models"])
Viewer = Annotated[Principal, Depends(principal("viewer"))]
Editor = Annotated[Principal, Depends(principal("editor"))]
Ws = Annotated[Workspace, Depends(workspace)]
VersionNumber = Annotated[int, Path(ge=1, le=10**9)]


class AliasMove(BaseModel):
    """Point an alias at a version: a promotion, or any deliberate move."""

    model_config = ConfigDict(extra="forbid", strict=True)
    version: int = Field(ge=1, le=10**9)
    reason: str = Field(min_length=1, max_length=2000)
    force: bool = Field(False, description="Allow a version that model validation rejected.")


class Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str = Field(min_length=1, max_length=2000)


@router.get("", summary="Every registered model with its aliases")
def list_models(ws: Ws, _: Viewer) -> dict[str, Any]:
    return {"models": [jsonable(m) for m in ws.registry.models()]}


@router.get("/{name}", summary="A model: its versions, aliases and full alias history")
def get_model(name: str, ws: Ws, _: Viewer) -> dict[str, Any]:
    registry = ws.registry
    versions = registry.versions(check_name(name, "name"))
    model = next(m for m in registry.models() if m.name == name)
    return {
        "model": jsonable(model),
        "versions": [jsonable(v) for v in versions],
        "history": [jsonable(e) for e in registry.history(name)],
    }


@router.get("/{name}/versions", summary="Every version of a model, in version order (oldest first)")
def list_versions(name: str, ws: Ws, _: Viewer) -> dict[str, Any]:
    return {"versions": [jsonable(v) for v in ws.registry.versions(check_name(name, "name"))]}


@router.get("/{name}/versions/{version}", summary="One version")
def get_version(name: str, version: VersionNumber, ws: Ws, _: Viewer) -> dict[str, Any]:
    return jsonable(ws.registry.get(check_name(name, "name"), version=version))


@router.get("/{name}/history", summary="Alias moves with who, when and why")
def get_history(name: str, ws: Ws, _: Viewer, alias: str | None = None) -> dict[str, Any]:
    if alias is not None:
        check_name(alias, "alias")
    events = ws.registry.history(check_name(name, "name"), alias)
    return {"events": [jsonable(e) for e in events]}


@router.post("/{name}/aliases/{alias}", summary="Move an alias to a version (promote); editors")
def move_alias(name: str, alias: str, body: AliasMove, ws: Ws, who: Editor) -> dict[str, Any]:
    check_name(name, "name")
    check_name(alias, "alias")
    event = ws.registry.set_alias(
        name, alias, body.version, who=who.name, reason=body.reason, force=body.force
    )
    if event.from_version == event.to_version:  # already there: the registry recorded nothing, nor do we
        return {**jsonable(event), "changed": False}
    ws.tokens.record_audit(
        who.name,
        "alias.move",
        f"model:{name}@{alias}",
        reason=body.reason,
        details={"from_version": event.from_version, "to_version": event.to_version, "force": body.force},
    )
    return {**jsonable(event), "changed": True}


@router.post("/{name}/aliases/{alias}/rollback", summary="Give an alias back to its previous holder; editors")
def rollback_alias(name: str, alias: str, body: Rollback, ws: Ws, who: Editor) -> dict[str, Any]:
    check_name(name, "name")
    check_name(alias, "alias")
    event = ws.registry.rollback(name, alias, who=who.name, reason=body.reason)
    ws.tokens.record_audit(
        who.name,
        "alias.rollback",
        f"model:{name}@{alias}",
        reason=body.reason,
        details={"from_version": event.from_version, "to_version": event.to_version},
    )
    return jsonable(event)
