"""Tokens and roles: the one check shared by the team server and the prediction service.

A token is ``mloop_`` + 43 url-safe characters of :mod:`secrets` randomness. It is printed once when
created; the store keeps only its sha256, and a token is found by that hash (a unique index). The
database compares hashes, never secrets, so the timing of a lookup says nothing usable about the
secret (learning a prefix of sha256(guess) does not help guess a 256-bit secret); the token's
format is checked with :func:`hmac.compare_digest` so no step compares the secret byte by byte.

Roles are ordered: ``viewer`` reads; ``feedback`` may also post labels to a prediction service;
``editor`` may also move aliases and fire triggers; ``admin`` may also manage tokens.

A server checks the token of every request. :class:`TokenCache` spares it the store's answer for a
token it read less than ``TOKEN_CACHE_SECONDS`` ago, so a token revoked in the store is refused at
most that long after the revocation committed (at once by the process that revoked it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mloop.entities import ApiToken
from mloop.errors import ForbiddenError, ParameterError, UnauthorizedError
from mloop.stores.base import TokenStore
from mloop.stores.sql.tokens import ROLES

__all__ = [
    "ANONYMOUS",
    "ROLES",
    "TOKEN_CACHE_SECONDS",
    "Principal",
    "TokenCache",
    "TokenLookup",
    "bearer_hash",
    "check_token",
    "create_token",
    "hash_token",
    "principal_of",
    "require_role",
]

TOKEN_PREFIX = "mloop_"
# How long a token read from the store is trusted without asking again: the bound on how long a
# revoked token still passes. Short, since at a few hundred requests per second one read per token and
# second per process is already a negligible share of the work.
TOKEN_CACHE_SECONDS = 1.0


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


class TokenLookup(Protocol):
    """What checking a token needs of a store: the token by the hash of its secret."""

    def token_by_hash(self, token_hash: str) -> ApiToken | None: ...


def check_token(
    store: TokenLookup,
    authorization_header: str | None,
    roles: Sequence[str] = ("feedback", "editor", "admin"),
) -> Principal:
    """The principal of an ``Authorization: Bearer <token>`` header whose role is one of ``roles``.

    Raises UnauthorizedError (401) for a missing, malformed, unknown or revoked token and
    ForbiddenError (403) for a valid token of another role. Messages never repeat the token.
    """
    return principal_of(store.token_by_hash(bearer_hash(authorization_header)), roles)


def bearer_hash(authorization_header: str | None) -> str:
    """The hash of the token in an ``Authorization: Bearer <token>`` header, without looking it up;
    UnauthorizedError (401) for a missing or malformed header."""
    if not authorization_header:
        raise UnauthorizedError("missing Authorization: Bearer token", field="authorization")
    scheme, _, secret = authorization_header.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise UnauthorizedError("Authorization header must be 'Bearer <token>'", field="authorization")
    if (
        not secret.isascii()
        or len(secret) > 200
        or not hmac.compare_digest(secret[: len(TOKEN_PREFIX)], TOKEN_PREFIX)
    ):
        raise UnauthorizedError("invalid token", field="authorization")
    return hash_token(secret)


def principal_of(token: ApiToken | None, roles: Sequence[str]) -> Principal:
    """The principal of the token a header named (None: no such token), if it is not revoked and its
    role is one of ``roles``; UnauthorizedError (401) or ForbiddenError (403) otherwise."""
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


class TokenCache:
    """The valid tokens of ``store``, each trusted for ``seconds`` after the read that found it began.

    Only tokens found and not revoked are kept: an unknown, malformed or revoked token is looked up
    every time, so nothing a caller sends can fill the cache or keep a refusal alive. A revocation
    committed at time *r* is seen by every read that begins after *r*, and the entries of reads begun
    before *r* expire before *r* + ``seconds``. Thread-safe; keyed by the hash, never the secret.
    """

    def __init__(
        self,
        store: TokenLookup,
        seconds: float = TOKEN_CACHE_SECONDS,
        *,
        size: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.seconds = seconds
        self.size = size
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, ApiToken]] = {}
        self._cleared = 0  # how many times clear() ran: a read begun before a clear is not kept

    def cached(self, token_hash: str) -> ApiToken | None:
        """The token, if a read less than ``seconds`` ago found it valid; None: ask the store."""
        entry = self._entries.get(token_hash)
        if entry is None or self.clock() - entry[0] >= self.seconds:
            return None
        return entry[1]

    def token_by_hash(self, token_hash: str) -> ApiToken | None:
        """The token (from the cache when fresh, else from the store; revoked ones too)."""
        found = self.cached(token_hash)
        if found is not None:
            return found
        began, cleared = self.clock(), self._cleared  # an entry's age counts from before the read
        token = self.store.token_by_hash(token_hash)
        if token is not None and token.revoked_at is None:
            with self._lock:
                if cleared != self._cleared:
                    return token
                if len(self._entries) >= self.size:
                    self._entries = {h: e for h, e in self._entries.items() if began - e[0] < self.seconds}
                    if len(self._entries) >= self.size:
                        self._entries.clear()
                self._entries[token_hash] = (began, token)
        return token

    def clear(self) -> None:
        """Forget every token (after a revocation by this process: it is refused at once here)."""
        with self._lock:
            self._entries.clear()
            self._cleared += 1


def challenge(status: int) -> dict[str, str] | None:
    """The ``WWW-Authenticate`` header HTTP requires on a 401 (RFC 9110 §11.6.1); None otherwise."""
    return {"WWW-Authenticate": 'Bearer realm="mloop"'} if status == 401 else None
