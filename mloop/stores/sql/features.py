"""Feature-store definitions and materializations on SQLAlchemy Core (the metadata database).

A definition is stored as a new version only when its spec changed (compared by digest), so applying
the same file twice records nothing; every version stays, so a model can name the one it used.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mloop.entities import FeatureDefinition, Materialization, new_id, utcnow
from mloop.errors import ConflictError, NotFoundError
from mloop.stores.sql import schema as t
from mloop.stores.sql.base import SqlStore

__all__ = ["SqlFeatureRegistry", "spec_digest"]

KINDS = ("entity", "view", "service")


def spec_digest(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


class SqlFeatureRegistry(SqlStore):
    """Versions of entities, feature views and feature services, and each view's materializations."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)

    def record(self, kind: str, name: str, spec: Mapping[str, Any], *, who: str) -> FeatureDefinition | None:
        """Store ``spec`` as the next version of ``kind``/``name``; None when it equals the latest."""
        digest = spec_digest(spec)
        d = t.feature_definitions
        with self._write() as conn:
            last = conn.execute(
                sa.select(d.c.version, d.c.digest)
                .where(d.c.kind == kind, d.c.name == name)
                .order_by(d.c.version.desc())
                .limit(1)
            ).first()
            if last is not None and last.digest == digest:
                return None
            row = {
                "kind": kind,
                "name": name,
                "version": (last.version if last else 0) + 1,
                "spec": json.dumps(dict(spec), sort_keys=True, default=str),
                "digest": digest,
                "created_at": utcnow(),
                "who": who,
            }
            try:
                conn.execute(d.insert().values(**row))
            except sa.exc.IntegrityError as exc:
                raise ConflictError(
                    f"{kind} {name!r} was changed concurrently; apply again", field="name"
                ) from exc
        return _definition(row)

    def get(self, kind: str, name: str, version: int | None = None) -> FeatureDefinition:
        """A definition's given version, or its latest."""
        d = t.feature_definitions
        stmt = sa.select(d).where(d.c.kind == kind, d.c.name == name)
        stmt = stmt.where(d.c.version == version) if version else stmt.order_by(d.c.version.desc()).limit(1)
        with self._read() as conn:
            row = conn.execute(stmt).mappings().first()
        if row is None:
            what = f"{kind} {name!r}" + (f" version {version}" if version else "")
            raise NotFoundError(f"unknown {what}; run `mloop features apply` first", field="name")
        return _definition(row)

    def latest(self, kind: str | None = None) -> list[FeatureDefinition]:
        """The latest version of every definition (of one kind), by kind then name."""
        d = t.feature_definitions
        newest = (
            sa.select(d.c.kind, d.c.name, sa.func.max(d.c.version).label("v"))
            .group_by(d.c.kind, d.c.name)
            .subquery()
        )
        stmt = sa.select(d).join(
            newest, sa.and_(d.c.kind == newest.c.kind, d.c.name == newest.c.name, d.c.version == newest.c.v)
        )
        if kind:
            stmt = stmt.where(d.c.kind == kind)
        with self._read() as conn:
            rows = conn.execute(stmt.order_by(d.c.kind, d.c.name)).mappings().all()
        return [_definition(r) for r in rows]

    def versions(self, kind: str, name: str) -> list[FeatureDefinition]:
        d = t.feature_definitions
        with self._read() as conn:
            rows = conn.execute(
                sa.select(d).where(d.c.kind == kind, d.c.name == name).order_by(d.c.version)
            ).mappings()
            return [_definition(r) for r in rows]

    def record_materialization(
        self, view: str, version: int, start: datetime | None, end: datetime, rows: int
    ) -> Materialization:
        row = {
            "id": new_id(),
            "view": view,
            "version": version,
            "start_at": start,
            "end_at": end,
            "rows": rows,
            "at": utcnow(),
        }
        with self._write() as conn:
            conn.execute(t.feature_materializations.insert().values(**row))
        return _materialization(row)

    def last_materialization(self, view: str) -> Materialization | None:
        m = t.feature_materializations
        with self._read() as conn:
            row = (
                conn.execute(
                    sa.select(m).where(m.c.view == view).order_by(m.c.at.desc(), m.c.id.desc()).limit(1)
                )
                .mappings()
                .first()
            )
        return _materialization(row) if row else None


def _definition(row: Mapping[Any, Any]) -> FeatureDefinition:
    spec = row["spec"]
    return FeatureDefinition(
        kind=row["kind"],
        name=row["name"],
        version=row["version"],
        spec=json.loads(spec) if isinstance(spec, str) else dict(spec),
        digest=row["digest"],
        created_at=row["created_at"],
        who=row["who"],
    )


def _materialization(row: Mapping[Any, Any]) -> Materialization:
    return Materialization(
        id=row["id"],
        view=row["view"],
        version=row["version"],
        start=row["start_at"],
        end=row["end_at"],
        rows=row["rows"],
        at=row["at"],
    )
