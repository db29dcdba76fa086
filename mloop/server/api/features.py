"""``/api/v1/features``: feature-store definitions, how fresh the online values are, online lookups.

A request works on a feature store of its own (``Workspace.features``), closed after it: definitions
applied since the server started are seen, as a newly opened workspace sees them. Feature references
are ``VIEW:FEATURE`` (``VIEW:*``: all of a view's features); a lookup is a POST because its entity
keys are a body, but it reads only (viewer role).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from mloop.errors import ParameterError
from mloop.features.definitions import parse_ref
from mloop.features.store import FeatureStore
from mloop.server.deps import BadRequestError, check_name, jsonable, principal, workspace
from mloop.workspace import Workspace

router = APIRouter(prefix="/features", tags=["features"], dependencies=[Depends(principal("viewer"))])

_Scalar = str | int | float | bool | None


def feature_store(ws: Annotated[Workspace, Depends(workspace)]) -> Iterator[FeatureStore]:
    store = ws.features
    try:
        yield store
    finally:
        store.close()


Store = Annotated[FeatureStore, Depends(feature_store)]


class Lookup(BaseModel):
    """Entity keys to look up, and which features: ``features`` references or a ``service``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    entities: list[dict[str, _Scalar]] = Field(min_length=1, max_length=10_000)
    features: list[str] | None = Field(None, max_length=1000)
    service: str | None = None


def _selection(features: list[str] | None, service: str | None) -> tuple[list[str] | None, str | None]:
    """``features`` and ``service`` checked: references by their grammar (a 400 naming the bad one,
    as the store words it), view and service names by mloop's naming rule."""
    for ref in features or ():
        try:
            view, _ = parse_ref(ref[:300])
        except ParameterError as exc:
            raise BadRequestError(exc.message, field="features") from exc
        check_name(view, "features")
    return features, check_name(service, "service") if service is not None else None


@router.get("/definitions", summary="Every entity, feature view and feature service (latest versions)")
def list_definitions(store: Store) -> dict[str, Any]:
    return {"definitions": jsonable(store.definitions())}


@router.get(
    "/definitions/{name}",
    summary="One definition: its latest spec, its versions and (a view) its last materialization",
)
def get_definition(name: str, store: Store) -> dict[str, Any]:
    return jsonable(store.show(check_name(name, "name")))


@router.get("/freshness", summary="Per view: the newest event time online, its age, the last materialization")
def get_freshness(
    store: Store,
    feature: Annotated[list[str] | None, Query(description="VIEW:FEATURE (repeatable)")] = None,
    service: str | None = None,
) -> dict[str, Any]:
    features, service = _selection(feature, service)
    return {"views": jsonable(store.freshness(features, service=service))}


@router.post("/online", summary="The latest feature values by entity key (stale ones null, with their age)")
def lookup_online(body: Lookup, store: Store) -> dict[str, Any]:
    features, service = _selection(body.features, body.service)
    return {"rows": jsonable(store.online(body.entities, features, service=service))}
