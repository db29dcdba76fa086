"""``/api/v1/pipelines``: deployed pipeline versions (frozen snapshots), their aliases and alias history.

Read only: freezing and deploying a pipeline is ``mloop pipelines`` / ``mloop ci``'s work.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from mloop.cicd.versions import alias_history
from mloop.server.deps import check_name, jsonable, principal, workspace
from mloop.workspace import Workspace

router = APIRouter(prefix="/pipelines", tags=["pipelines"], dependencies=[Depends(principal("viewer"))])
Ws = Annotated[Workspace, Depends(workspace)]


@router.get("", summary="Every deployed pipeline: its newest version and aliases")
def list_pipelines(ws: Ws) -> dict[str, Any]:
    store = ws.pipelines
    newest: dict[str, Any] = {}
    for v in store.list_versions():
        if v.name not in newest or v.version > newest[v.name].version:
            newest[v.name] = v
    return {
        "pipelines": [
            {
                "name": name,
                "last_version": v.version,
                "created_at": v.created_at.isoformat(),
                "aliases": store.aliases(name),
            }
            for name, v in sorted(newest.items())
        ]
    }


@router.get("/{name}", summary="A deployed pipeline: its versions (code, CI verdict), aliases, history")
def get_pipeline(name: str, ws: Ws) -> dict[str, Any]:
    store = ws.pipelines
    versions = store.list_versions(check_name(name, "name"))
    if not versions:
        store.get_version(name)  # the store's own NotFoundError (404) for an unknown pipeline
    return {
        "name": name,
        "versions": [jsonable(v) for v in versions],
        "aliases": store.aliases(name),
        "history": [jsonable(e) for e in store.alias_history(name)],
    }


@router.get("/{name}/history", summary="Alias moves of a deployed pipeline, oldest first: who, when, why")
def get_history(name: str, ws: Ws, alias: str | None = None) -> dict[str, Any]:
    if alias is not None:
        check_name(alias, "alias")
    return {"events": [jsonable(e) for e in alias_history(ws.pipelines, check_name(name, "name"), alias)]}
