"""Team-server tokens and the audit trail on SQLAlchemy Core (SQLite and PostgreSQL alike).

Only the sha256 of a token's secret is stored; a token is found by that hash (a unique index), so the
secret itself never reaches the database, a log line or a response after it was printed once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mloop.entities import ApiToken, AuditEntry, new_id, utcnow
from mloop.errors import NotFoundError, ParameterError
from mloop.stores.sql import schema as t
from mloop.stores.sql.base import SqlStore, dumps

__all__ = ["ROLES", "SqlTokenStore"]

# Ordered by privilege: each role may do what the ones before it may.
ROLES = ("viewer", "feedback", "editor", "admin")


class SqlTokenStore(SqlStore):
    """Tokens and audit entries in the workspace's metadata database."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)

    def add_token(self, name: str, role: str, token_hash: str, *, created_by: str) -> ApiToken:
        """Record a token by the hash of its secret. The caller made the secret and shows it once."""
        if role not in ROLES:
            raise ParameterError(f"role {role!r} is not one of {', '.join(ROLES)}", field="role")
        if not name or len(name) > 200:
            raise ParameterError("token name must be 1 to 200 characters", field="name")
        if len(token_hash) != 64:
            raise ParameterError("token hash must be a sha256 hex digest", field="token_hash")
        row = {
            "id": new_id(),
            "name": name,
            "role": role,
            "token_hash": token_hash,
            "created_at": utcnow(),
            "created_by": created_by,
            "revoked_at": None,
        }
        with self._write() as conn:
            conn.execute(t.api_tokens.insert().values(**row))
        return _token(row)

    def token_by_hash(self, token_hash: str) -> ApiToken | None:
        """The token whose secret hashes to ``token_hash`` (revoked ones too: the caller decides)."""
        with self._read() as conn:
            row = (
                conn.execute(sa.select(t.api_tokens).where(t.api_tokens.c.token_hash == token_hash))
                .mappings()
                .first()
            )
        return _token(row) if row else None

    def list_tokens(self) -> list[ApiToken]:
        """Every token, oldest first; hashes are not returned."""
        with self._read() as conn:
            rows = conn.execute(sa.select(t.api_tokens).order_by(t.api_tokens.c.id)).mappings().all()
        return [_token(r) for r in rows]

    def revoke_token(self, token_id: str) -> ApiToken:
        """Revoke a token (idempotent: revoking twice keeps the first time)."""
        with self._write() as conn:
            found = (
                conn.execute(sa.select(t.api_tokens).where(t.api_tokens.c.id == token_id)).mappings().first()
            )
            if found is None:
                raise NotFoundError(f"no token {token_id[:40]!r}", field="token_id")
            row = dict(found)
            if row["revoked_at"] is None:
                row["revoked_at"] = utcnow()
                conn.execute(
                    t.api_tokens.update()
                    .where(t.api_tokens.c.id == token_id)
                    .values(revoked_at=row["revoked_at"])
                )
        return _token(row)

    def record_audit(
        self,
        who: str,
        action: str,
        target: str,
        *,
        reason: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Append one entry to the audit trail."""
        row = {
            "id": new_id(),
            "at": utcnow(),
            "who": who,
            "action": action,
            "target": target,
            "reason": reason,
            "details": dumps(dict(details or {})),
        }
        with self._write() as conn:
            conn.execute(t.audit_entries.insert().values(**row))
        return _entry(row)

    def audit_entries(
        self,
        *,
        target: str | None = None,
        action: str | None = None,
        before: str | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Newest first; ``before`` is an entry id (the cursor of the previous page)."""
        query = sa.select(t.audit_entries).order_by(t.audit_entries.c.id.desc()).limit(limit)
        if target is not None:
            query = query.where(t.audit_entries.c.target == target)
        if action is not None:
            query = query.where(t.audit_entries.c.action == action)
        if before is not None:
            query = query.where(t.audit_entries.c.id < before)
        with self._read() as conn:
            return [_entry(r) for r in conn.execute(query).mappings()]


def _token(row: Mapping[Any, Any]) -> ApiToken:
    return ApiToken(
        id=row["id"],
        name=row["name"],
        role=row["role"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        revoked_at=row["revoked_at"],
    )


def _entry(row: Mapping[Any, Any]) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        at=row["at"],
        who=row["who"],
        action=row["action"],
        target=row["target"],
        reason=row["reason"],
        details=json.loads(row["details"]),
    )
