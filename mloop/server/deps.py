"""What every route of the team server shares: the workspace, the caller's principal, id checks, JSON.

The workspace and principal dependencies are coroutines: FastAPI runs a plain function dependency in
a worker thread, a hop that costs more than the check itself when the token is in the cache.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
from fastapi import Request, Response
from pydantic_core import to_json

from mloop import names
from mloop.auth import ANONYMOUS, ROLES, Principal, TokenCache, bearer_hash, principal_of, require_role
from mloop.entities import jsonable
from mloop.errors import ParameterError
from mloop.workspace import Workspace

__all__ = [
    "BadRequestError",
    "caller",
    "check_id",
    "check_name",
    "json_response",
    "jsonable",
    "principal",
    "workspace",
]

_ID = re.compile(r"^[0-9A-Za-z]{1,32}$")


class BadRequestError(ParameterError):
    """A malformed request parameter (a filter, a sort, a cursor, an id): HTTP 400 naming the field."""

    code = "bad_request"
    http_status = 400


async def workspace(request: Request) -> Workspace:
    """The workspace the app serves (one per process, opened by the factory); a 503 once its database
    file was deleted or replaced under the server (it would answer from, and write to, a file no
    other process opens)."""
    ws: Workspace = request.app.state.workspace
    ws.check_intact()
    return ws


def principal(role: str = "viewer") -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller, who must hold ``role`` or better (401/403 JSON otherwise). Checked on
    every request, against the app's :class:`~mloop.auth.TokenCache` (the store is read in a worker
    thread when the token is not in it)."""

    async def dependency(request: Request) -> Principal:
        return await caller(request, role)

    return dependency


async def caller(request: Request, role: str = "viewer") -> Principal:
    """The caller of ``request``, who must hold ``role`` or better (UnauthorizedError/ForbiddenError
    otherwise); anyone when the app serves without tokens."""
    if not request.app.state.auth:
        return ANONYMOUS
    tokens: TokenCache = request.app.state.tokens
    token_hash = bearer_hash(request.headers.get("authorization"))
    token = tokens.cached(token_hash)
    if token is None:
        token = await anyio.to_thread.run_sync(tokens.token_by_hash, token_hash)
    return require_role(principal_of(token, ROLES), role)


def json_response(content: Any) -> Response:
    """``content`` (JSON values) as the JSON response FastAPI would make of it, serialised by the same
    encoder (pydantic's: compact, UTF-8, NaN and infinities as null) but without validating it against
    the route's ``response_model`` first: FastAPI does that in a worker thread of its own, for a
    ``dict[str, Any]`` that says nothing. Routes returning it declare ``response_model`` for OpenAPI."""
    return Response(to_json(content, inf_nan_mode="null"), media_type="application/json")


def check_id(value: str, field: str) -> str:
    """An opaque id (ULID-like): letters and digits only, so no path or SQL can ride in it."""
    if not _ID.match(value):
        raise BadRequestError(f"{field} {value[:80]!r} is not an id (letters and digits, ≤ 32)", field=field)
    return value


def check_name(value: str, field: str) -> str:
    """A name from a request (model, alias, trigger): mloop's one naming rule, refused with a 400."""
    try:
        return names.check_name(value, what=field, field=field)
    except ParameterError as exc:
        raise BadRequestError(exc.message, field=field) from exc
