"""What every route of the team server shares: the workspace, the caller's principal, id checks, JSON."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi import Request

from mloop import names
from mloop.auth import ANONYMOUS, ROLES, Principal, check_token, require_role
from mloop.entities import jsonable
from mloop.errors import ParameterError
from mloop.workspace import Workspace

__all__ = ["BadRequestError", "check_id", "check_name", "jsonable", "principal", "workspace"]

_ID = re.compile(r"^[0-9A-Za-z]{1,32}$")


class BadRequestError(ParameterError):
    """A malformed request parameter (a filter, a sort, a cursor, an id): HTTP 400 naming the field."""

    code = "bad_request"
    http_status = 400


def workspace(request: Request) -> Workspace:
    """The workspace the app serves (one per process, opened by the factory)."""
    return request.app.state.workspace


def principal(role: str = "viewer") -> Callable[[Request], Principal]:
    """A dependency: the caller, who must hold ``role`` or better (401/403 JSON otherwise)."""

    def dependency(request: Request) -> Principal:
        if not request.app.state.auth:
            return ANONYMOUS
        found = check_token(workspace(request).tokens, request.headers.get("authorization"), roles=ROLES)
        return require_role(found, role)

    return dependency


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
