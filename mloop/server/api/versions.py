"""``/api/v1/model-versions/{ref}`` and ``/api/v1/pipeline-versions``: versions by reference.

A reference is the grammar the CLI takes (DESIGN.md): ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``.
``NAME`` alone is a model's newest version and a pipeline's production version, as in ``mloop models
show`` and ``mloop pipelines show``. A malformed reference is a 400, an unknown one a 404.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from mloop.cicd.versions import deployed_versions, find_version
from mloop.errors import ParameterError
from mloop.server import model_state
from mloop.server.deps import BadRequestError, check_name, jsonable, principal, workspace
from mloop.workspace import Workspace

router = APIRouter(tags=["versions"], dependencies=[Depends(principal("viewer"))])
Ws = Annotated[Workspace, Depends(workspace)]

_REF = re.compile(r"^(?P<name>[^:@]*)(:[1-9][0-9]{0,8}|@(?P<alias>[^:@]*))?$")


@contextmanager
def _malformed_is_400() -> Iterator[None]:
    """A reference the resolvers refuse (e.g. a pipeline ``NAME`` ending in ``.py``, which reads as a
    file) is malformed input: 400, not the 422 of a ParameterError."""
    try:
        yield
    except BadRequestError:
        raise
    except ParameterError as exc:
        raise BadRequestError(exc.message, field="ref") from exc


def _check_ref(ref: str, what: str) -> str:
    """``ref`` when it is ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS`` with names by mloop's rule."""
    found = _REF.match(ref)
    if found is None:
        raise BadRequestError(
            f"{what} reference {ref[:80]!r}: expected NAME, NAME:VERSION or NAME@ALIAS", field="ref"
        )
    check_name(found["name"], "name")
    if found["alias"] is not None:
        check_name(found["alias"], "alias")
    return ref


@router.get(
    "/model-versions/{ref}",
    summary="A model version by reference: the version, the run that made it, the pipeline version it ran",
)
def get_model_version(ref: str, ws: Ws) -> dict[str, Any]:
    with _malformed_is_400():
        return jsonable(model_state.version_card(ws, _check_ref(ref, "model")))


@router.get("/pipeline-versions", summary="Every deployed pipeline version (of one pipeline) and aliases")
def list_pipeline_versions(ws: Ws, name: str | None = None) -> dict[str, Any]:
    versions, aliases = deployed_versions(ws.pipelines, check_name(name, "name") if name else None)
    return {"versions": jsonable(versions), "aliases": aliases}


@router.get("/pipeline-versions/{ref}", summary="A deployed pipeline version by reference")
def get_pipeline_version(ref: str, ws: Ws) -> dict[str, Any]:
    with _malformed_is_400():
        return jsonable(find_version(ws.pipelines, _check_ref(ref, "pipeline")))
