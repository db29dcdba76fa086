"""``/api/v1/artifacts/{id}`` (metadata, the events and step runs that wrote and read it), its bytes, and
lineage graphs.

The bytes are read by digest from the artifact store, which verifies them against the digest: a
tampered file is answered 409 ``artifact_corrupted``, never served. No path from a request reaches
the artifact store: an id is checked, then mapped to its recorded digest.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Response

from mloop.entities import ArtifactRef
from mloop.server.deps import BadRequestError, jsonable, principal, workspace
from mloop.workspace import Workspace

router = APIRouter(tags=["artifacts"], dependencies=[Depends(principal("viewer"))])

# an artifact's id, digest (sha256: optional) or a prefix of either, as the CLI takes them
_ARTIFACT_REF = re.compile(r"^(sha256:[0-9a-f]{6,64}|[0-9a-f]{33,64}|[0-9A-Za-z]{6,32})$")
# artifact/step/run ids (or prefixes), sha256:digest (or a prefix), NAME:VERSION, NAME@ALIAS
_REF = re.compile(
    r"^(sha256:[0-9a-f]{6,64}|[0-9a-f]{64}|[0-9A-Za-z]{4,32}|[A-Za-z0-9][A-Za-z0-9._-]{0,127}(:[0-9]{1,9}|@[A-Za-z0-9][A-Za-z0-9._-]{0,99}))$"
)


def _artifact(ws: Workspace, ref: str) -> ArtifactRef:
    """The artifact ``ref`` names: an id, a digest (``sha256:`` optional) or a unique prefix of either."""
    if not _ARTIFACT_REF.match(ref):
        raise BadRequestError(
            f"artifact_id {ref[:80]!r}: expected an artifact id, sha256:DIGEST or a prefix of either",
            field="artifact_id",
        )
    return ws.resolve_artifact(ref)


@router.get(
    "/artifacts/{artifact_id}",
    summary="An artifact's metadata, its events and the step runs that wrote and read it",
)
def get_artifact(artifact_id: str, ws: Annotated[Workspace, Depends(workspace)]) -> dict[str, Any]:
    art = _artifact(ws, artifact_id)
    events = ws.metadata.events(artifact_ids=[art.id])
    steps = {e.step_run_id: ws.metadata.get_step(e.step_run_id) for e in events}
    return jsonable(art) | {
        "events": [jsonable(e) for e in events],
        "steps": [jsonable(s) for s in steps.values()],
    }


@router.get(
    "/artifacts/{artifact_id}/content",
    summary="An artifact's bytes, verified against its digest",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def get_artifact_content(artifact_id: str, ws: Annotated[Workspace, Depends(workspace)]) -> Response:
    art = _artifact(ws, artifact_id)
    data = ws.artifacts.get(art.digest)  # raises ArtifactCorruptedError when the bytes do not match
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{art.id}.{art.type}"',
            "X-Content-Digest": f"sha256:{art.digest}",
        },
    )


@router.get("/lineage/{ref}", summary="Lineage graph of an artifact, step run, run or model version")
def get_lineage(
    ref: str,
    ws: Annotated[Workspace, Depends(workspace)],
    direction: Literal["upstream", "downstream"] = "upstream",
) -> dict[str, Any]:
    if not _REF.match(ref):
        raise BadRequestError(
            f"lineage reference {ref[:80]!r}: expected an id, sha256:DIGEST, NAME:VERSION or NAME@ALIAS",
            field="ref",
        )
    graph = ws.lineage(ref, direction).to_dict()
    ids = {a["id"] for a in graph["artifacts"]}
    registry = ws.registry
    graph["models"] = [
        {"name": v.name, "version": v.version, "artifact_id": v.artifact_id, "aliases": list(v.aliases)}
        for model in registry.models()
        for v in registry.versions(model.name)
        if v.artifact_id in ids
    ]
    return graph
