"""Tokens and roles: the one check shared by the team server and the prediction service.

A token is ``mloop_`` + 43 url-safe characters of :mod:`secrets` randomness. It is printed once when
created; the store keeps only its sha256, and a token is found by that hash (a unique index). The
database compares hashes, never secrets, so the timing of a lookup says nothing usable about the
secret (learning a prefix of sha256(guess) does not help guess a 256-bit secret); the token's
format is checked with :func:`hmac.compare_digest` so no step compares the secret byte by byte.

Roles are ordered: ``viewer`` reads; ``feedback`` may also post labels to a prediction service;
``editor`` may also move aliases and fire triggers; ``admin`` may also manage tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from mloop.entities import ApiToken
from mloop.errors import ForbiddenError, ParameterError, UnauthorizedError
from mloop.stores.base import TokenStore
from mloop.stores.sql.tokens import ROLES

__all__ = [
    "ANONYMOUS",
    "ROLES",
    "Principal",
    "check_token",
    "create_token",
    "hash_token",
    "require_role",
]

TOKEN_PREFIX = "mloop_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is acting: the token's name (as the audit trail records it), its role and id."""

    name: str
    role: str
    token_id: str | None = None

    def may(self, role: str) -> bool:
        """Whether this principal has ``role`` or a more privileged one."""
        return ROLES.index(self.role) >= ROLES.index(role)


# The principal of a server started with --no-auth (loopback only): it may do everything.
ANONYMOUS = Principal(name="local (no auth)", role="admin")


def hash_token(secret: str) -> str:
    """The sha256 hex digest under which a token is stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_token(store: TokenStore, name: str, role: str, *, created_by: str) -> tuple[str, ApiToken]:
    """A new token: ``(secret, record)``. The secret is returned once and never stored."""
    if role not in ROLES:
        raise ParameterError(f"role {role!r} is not one of {', '.join(ROLES)}", field="role")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return secret, store.add_token(name, role, hash_token(secret), created_by=created_by)


def require_role(principal: Principal, role: str) -> Principal:
    """``principal`` if it has ``role`` (or better); ForbiddenError (403) otherwise."""
    if not principal.may(role):
        raise ForbiddenError(
            f"token {principal.name!r} has role {principal.role!r}; this needs {role!r} or higher",
            field="authorization",
        )
    return principal


def check_token(
    store: TokenStore,
    authorization_header: str | None,
    roles: Sequence[str] = ("feedback", "editor", "admin"),
) -> Principal:
    """The principal of an ``Authorization: Bearer <token>`` header whose role is one of ``roles``.

    Raises UnauthorizedError (401) for a missing, malformed, unknown or revoked token and
    ForbiddenError (403) for a valid token of another role. Messages never repeat the token.
    """
    if not authorization_header:
        raise UnauthorizedError("missing Authorization: Bearer token", field="authorization")
    scheme, _, secret = authorization_header.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise UnauthorizedError("Authorization header must be 'Bearer <token>'", field="authorization")
    if not hmac.compare_digest(secret[: len(TOKEN_PREFIX)], TOKEN_PREFIX) or len(secret) > 200:
        raise UnauthorizedError("invalid token", field="authorization")
    token = store.token_by_hash(hash_token(secret))
    if token is None:
        raise UnauthorizedError("invalid token", field="authorization")
    if token.revoked_at is not None:
        raise UnauthorizedError(f"token {token.name!r} was revoked", field="authorization")
    if token.role not in roles:
        raise ForbiddenError(
            f"token {token.name!r} has role {token.role!r}; this needs one of {', '.join(roles)}",
            field="authorization",
        )
    return Principal(name=token.name, role=token.role, token_id=token.id)
