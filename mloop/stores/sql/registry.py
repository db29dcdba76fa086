"""The model registry on SQLAlchemy Core (same database and engine as the metadata store).

Versions are numbered per model from a counter row locked inside the write transaction (SQLite:
``BEGIN IMMEDIATE``; PostgreSQL: ``SELECT … FOR UPDATE``), so concurrent registrations get unique,
gap-free numbers. An alias move and its history event are written in one transaction, so an alias
always has exactly one holder and every move is recorded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mloop.entities import AliasEvent, Model, ModelStatus, ModelVersion, new_id, utcnow
from mloop.errors import ConflictError, NotFoundError, ParameterError
from mloop.names import check_name
from mloop.stores.sql import schema as t
from mloop.stores.sql.base import SqlStore, dumps
from mloop.stores.sql.engine import insert_ignoring_conflicts

__all__ = ["SqlModelRegistry"]

PROMOTE, ROLLBACK, REMOVE, REFUSE = "promote", "rollback", "remove", "refuse"

# Statements built once: building them per call cost more than running them (hot paths: register,
# alias moves).
_B = sa.bindparam
_LAST = sa.select(t.models.c.last_version).where(t.models.c.name == _B("n"))
_LAST_LOCKED = _LAST.with_for_update()
_BUMP = (
    t.models.update()
    .where(t.models.c.name == _B("n"))
    .values(last_version=t.models.c.last_version + 1)
    .returning(t.models.c.last_version)
)
_SAME_BYTES = (
    sa.select(t.model_versions)
    .where(t.model_versions.c.name == _B("n"), t.model_versions.c.artifact_id == _B("a"))
    .order_by(t.model_versions.c.version)
    .limit(1)
)
_STATUS = sa.select(t.model_versions.c.status).where(
    t.model_versions.c.name == _B("n"), t.model_versions.c.version == _B("v")
)
_ALIAS_NAMES = sa.select(t.alias_events.c.alias).where(t.alias_events.c.name == _B("n")).distinct()
_CASE_TWIN = (
    sa.select(t.models.c.name)
    .where(sa.func.lower(t.models.c.name) == sa.func.lower(_B("n")), t.models.c.name != _B("n"))
    .limit(1)
)
_HOLDER = sa.select(t.aliases.c.version).where(t.aliases.c.name == _B("n"), t.aliases.c.alias == _B("a"))
_HELD = _HOLDER.scalar_subquery()  # the version an alias names, inside one query
_SET_HOLDER = (
    t.aliases.update()
    .where(t.aliases.c.name == _B("n"), t.aliases.c.alias == _B("a"))
    .values(version=_B("v"), updated_at=_B("at"))
)
_DROP_HOLDER = t.aliases.delete().where(t.aliases.c.name == _B("n"), t.aliases.c.alias == _B("a"))


class SqlModelRegistry(SqlStore):
    """Model names, versions, aliases and alias history."""

    store_name = "model registry"

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._ensure_model = (
            insert_ignoring_conflicts(engine.dialect.name, t.models)
            .values(name=_B("n"), created_at=_B("at"), last_version=0)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        self._last = _LAST_LOCKED if engine.dialect.name == "postgresql" else _LAST

    @contextmanager
    def _model_locked(self, name: str, *, create: bool) -> Iterator[tuple[sa.Connection, int]]:
        """A write transaction holding the model's counter row; yields (connection, last version)."""
        with self._write() as conn:
            if create:
                conn.execute(self._ensure_model, {"n": name, "at": utcnow()})
            last = conn.execute(self._last, {"n": name}).scalar()
            if last is None:
                raise NotFoundError(f"model {name!r} not found", field="name")
            yield conn, int(last)

    def register(
        self,
        name: str,
        *,
        artifact_id: str,
        run_id: str | None,
        signature: Mapping[str, Any],
        metrics: Mapping[str, Any],
        tags: Mapping[str, Any],
        status: ModelStatus,
        who: str,
    ) -> ModelVersion:
        """The next version of ``name`` (created on first registration).

        Idempotent on identical bytes: when ``artifact_id`` already is a version of ``name``, that
        version is returned unchanged (checked under the model's lock, so concurrent registrations of
        the same bytes give one version).
        """
        check_name(name)
        with self._write() as conn:
            twin = conn.execute(_CASE_TWIN, {"n": name}).scalar()
            if twin is not None:  # CLF beside clf: two models a reader takes for one
                raise ParameterError(
                    f"model {name!r} differs from model {twin!r} only by case: use {twin!r}", field="name"
                )
            conn.execute(self._ensure_model, {"n": name, "at": utcnow()})
            conn.execute(self._last, {"n": name})  # PostgreSQL: lock the counter row before looking
            same = conn.execute(_SAME_BYTES, {"n": name, "a": artifact_id}).mappings().first()
            if same is not None:
                return _version(same, self._aliases_of(conn, name).get(same["version"], ()))
            version = int(conn.execute(_BUMP, {"n": name}).scalar_one())  # atomic; row-locked until commit
            row = {
                "id": new_id(),
                "name": name,
                "version": version,
                "status": ModelStatus(status).value,
                "artifact_id": artifact_id,
                "run_id": run_id,
                "signature": dumps(dict(signature)),
                "metrics": dumps(dict(metrics)),
                "tags": dumps(dict(tags)),
                "created_at": utcnow(),
                "created_by": who,
            }
            conn.execute(t.model_versions.insert(), row)
        return _version(row, ())

    def set_alias(
        self, name: str, alias: str, version: int, *, who: str, reason: str, force: bool = False
    ) -> AliasEvent:
        """Point ``alias`` at ``version`` (a rejected version only with ``force`` and a reason). When
        the alias already points there nothing is recorded (the event returned has ``from_version ==
        to_version``): a repeated promotion must not become a history entry that a later rollback
        would "return" to."""
        check_name(alias, what="alias", field="alias")
        with self._model_locked(name, create=False) as (conn, last):
            status = conn.execute(_STATUS, {"n": name, "v": version}).scalar()
            if status is None:
                raise NotFoundError(_no_version(name, version, last), field="version")
            if status == ModelStatus.REJECTED and not force:
                raise ConflictError(
                    f"{name} version {version} was rejected by model validation; "
                    "promote it only with --force and a --reason",
                    field="version",
                )
            if force and not reason.strip():
                raise ParameterError("forcing a promotion needs a reason", field="reason")
            known = conn.execute(_ALIAS_NAMES, {"n": name}).scalars()
            twin = next((a for a in known if a != alias and a.lower() == alias.lower()), None)
            if twin is not None:  # clf@Production beside clf@production: a typo that serves nothing
                raise ParameterError(
                    f"alias {alias!r} differs from {name}'s alias {twin!r} only by case: use {twin!r}",
                    field="alias",
                )
            if self._holder(conn, name, alias) == version:
                return AliasEvent(name, alias, PROMOTE, version, version, utcnow(), who, reason, {})
            return self._move(conn, name, alias, version, PROMOTE, who, reason)

    def remove_alias(self, name: str, alias: str, *, who: str, reason: str) -> AliasEvent:
        """Take ``alias`` off its holder (e.g. a rolled-back canary)."""
        with self._model_locked(name, create=False) as (conn, _):
            if self._holder(conn, name, alias) is None:
                raise NotFoundError(_no_alias(conn, name, alias), field="alias")
            return self._move(conn, name, alias, None, REMOVE, who, reason)

    def rollback(self, name: str, alias: str, *, who: str, reason: str) -> AliasEvent:
        """Give ``alias`` back to the holder it had before its current one (undoes moves in LIFO order)."""
        with self._model_locked(name, create=False) as (conn, _):
            stack = self._holder_stack(conn, name, alias)
            if not stack:
                raise NotFoundError(_no_alias(conn, name, alias), field="alias")
            if len(stack) < 2:
                raise ConflictError(
                    f"alias {alias!r} of model {name!r} has no earlier holder to roll back to", field="alias"
                )
            return self._move(conn, name, alias, stack[-2], ROLLBACK, who, reason)

    def refuse(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        who: str,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
    ) -> AliasEvent:
        """Record that ``version`` was kept off ``alias`` (the alias does not move), with the evidence."""
        check_name(alias, what="alias", field="alias")
        if not reason.strip():
            raise ParameterError("a refusal needs a reason", field="reason")
        with self._model_locked(name, create=False) as (conn, last):
            if conn.execute(_STATUS, {"n": name, "v": version}).scalar() is None:
                raise NotFoundError(_no_version(name, version, last), field="version")
            event: dict[str, Any] = {
                "name": name,
                "alias": alias,
                "action": REFUSE,
                "from_version": self._holder(conn, name, alias),
                "to_version": version,
                "at": utcnow(),
                "who": who,
                "reason": reason,
            }
            conn.execute(t.alias_events.insert(), {**event, "evidence": dumps(dict(evidence or {}))})
        return AliasEvent(**event, evidence=dict(evidence or {}))

    def _holder(self, conn: sa.Connection, name: str, alias: str) -> int | None:
        value = conn.execute(_HOLDER, {"n": name, "a": alias}).scalar()
        return None if value is None else int(value)

    def _holder_stack(self, conn: sa.Connection, name: str, alias: str) -> list[int | None]:
        """Replay the alias's history: promotions and removals push a holder, rollbacks pop one
        (refusals never moved it)."""
        stack: list[int | None] = []
        events = conn.execute(
            sa.select(t.alias_events.c.action, t.alias_events.c.to_version)
            .where(t.alias_events.c.name == name, t.alias_events.c.alias == alias)
            .order_by(t.alias_events.c.id)
        )
        for action, to_version in events:
            if action == REFUSE:
                continue
            if action == ROLLBACK:
                stack.pop()
            elif not stack or stack[-1] != to_version:  # a repeated move (older mloops) counts once
                stack.append(to_version)
        return stack

    def _move(
        self,
        conn: sa.Connection,
        name: str,
        alias: str,
        version: int | None,
        action: str,
        who: str,
        reason: str,
    ) -> AliasEvent:
        current = self._holder(conn, name, alias)
        now = utcnow()
        if version is None:
            conn.execute(_DROP_HOLDER, {"n": name, "a": alias})
        elif current is None:
            conn.execute(
                t.aliases.insert(), {"name": name, "alias": alias, "version": version, "updated_at": now}
            )
        else:
            conn.execute(_SET_HOLDER, {"n": name, "a": alias, "v": version, "at": now})
        event: dict[str, Any] = {
            "name": name,
            "alias": alias,
            "action": action,
            "from_version": current,
            "to_version": version,
            "at": now,
            "who": who,
            "reason": reason,
        }
        conn.execute(t.alias_events.insert(), event)
        return AliasEvent(**event)

    # reading ------------------------------------------------------------------------------------

    def get(self, name: str, *, version: int | None = None, alias: str | None = None) -> ModelVersion:
        """A version by number or alias (the newest registered one when neither is given)."""
        # two round trips when the version exists (schedulers and services ask on every pass);
        # the error paths ask again to say what is missing
        query = sa.select(t.model_versions).where(t.model_versions.c.name == name)
        if alias is not None:
            query = query.where(t.model_versions.c.version == _HELD)
        elif version is None:
            query = query.where(t.model_versions.c.status == ModelStatus.REGISTERED.value)
            query = query.order_by(t.model_versions.c.version.desc()).limit(1)
        else:
            query = query.where(t.model_versions.c.version == version)
        with self._read() as conn:
            row = conn.execute(query, {"n": name, "a": alias}).mappings().first()
            if row is not None:
                return _version(row, self._aliases_of(conn, name).get(row["version"], ()))
            last = conn.execute(sa.select(t.models.c.last_version).where(t.models.c.name == name)).scalar()
            if last is None:
                raise NotFoundError(f"model {name!r} not found", field="name")
            if alias is not None:
                raise NotFoundError(_no_alias(conn, name, alias), field="alias")
            raise NotFoundError(_no_version(name, version, int(last)), field="version")

    def versions(self, name: str) -> list[ModelVersion]:
        # schedulers and services ask on every pass: whether the model exists is asked only when
        # it has no version (a model is created with its first one)
        with self._read() as conn:
            found = _with_aliases(conn, t.model_versions.c.name == name)
            if not found:
                self._exists(conn, name)
        return found

    def versions_of_run(self, run_id: str) -> list[ModelVersion]:
        with self._read() as conn:
            return _with_aliases(conn, t.model_versions.c.run_id == run_id)

    def aliases(self, name: str) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute(
                sa.select(t.aliases.c.alias, t.aliases.c.version).where(t.aliases.c.name == name)
            )
            return {alias: int(version) for alias, version in rows}

    def models(self) -> list[Model]:
        with self._read() as conn:
            aliases: dict[str, dict[str, int]] = {}
            for name, alias, version in conn.execute(
                sa.select(t.aliases.c.name, t.aliases.c.alias, t.aliases.c.version)
            ):
                aliases.setdefault(name, {})[alias] = version
            rows = conn.execute(sa.select(t.models).order_by(t.models.c.name)).mappings()
            return [
                Model(r["name"], r["created_at"], r["last_version"], aliases.get(r["name"], {})) for r in rows
            ]

    def history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        """Every alias move of ``name`` (or of one alias), oldest first."""
        query = sa.select(t.alias_events).where(t.alias_events.c.name == name)
        if alias is not None:
            query = query.where(t.alias_events.c.alias == alias)
        with self._read() as conn:
            rows = conn.execute(query.order_by(t.alias_events.c.id)).mappings().all()
            if not rows:
                self._exists(conn, name)
            return [_event(r) for r in rows]

    @staticmethod
    def _exists(conn: sa.Connection, name: str) -> None:
        if conn.execute(sa.select(t.models.c.name).where(t.models.c.name == name)).scalar() is None:
            raise NotFoundError(f"model {name!r} not found", field="name")

    def _aliases_of(self, conn: sa.Connection, name: str) -> dict[int, tuple[str, ...]]:
        found: dict[int, list[str]] = {}
        rows = conn.execute(
            sa.select(t.aliases.c.alias, t.aliases.c.version)
            .where(t.aliases.c.name == name)
            .order_by(t.aliases.c.alias)
        )
        for alias, version in rows:
            found.setdefault(version, []).append(alias)
        return {v: tuple(a) for v, a in found.items()}


def _with_aliases(conn: sa.Connection, where: Any) -> list[ModelVersion]:
    """The versions ``where`` selects, each with the aliases it holds, in one round trip."""
    v, a = t.model_versions, t.aliases
    held = sa.and_(a.c.name == v.c.name, a.c.version == v.c.version)
    query = (
        sa.select(v, a.c.alias.label("held_alias"))
        .select_from(v.outerjoin(a, held))
        .where(where)
        .order_by(v.c.name, v.c.version, a.c.alias)
    )
    found: dict[tuple[str, int], tuple[Mapping[Any, Any], list[str]]] = {}
    for r in conn.execute(query).mappings().all():
        _, names = found.setdefault((r["name"], r["version"]), (r, []))
        if r["held_alias"] is not None:
            names.append(r["held_alias"])
    return [_version(r, tuple(names)) for r, names in found.values()]


def _no_version(name: str, version: int | None, last: int) -> str:
    known = f"versions 1-{last}" if last else "no versions yet"
    what = f"version {version}" if version is not None else "registered (non-rejected) version"
    return f"model {name!r} has no {what} ({known})"


def _no_alias(conn: sa.Connection, name: str, alias: str) -> str:
    known = sorted(conn.execute(sa.select(t.aliases.c.alias).where(t.aliases.c.name == name)).scalars())
    return f"model {name!r} has no alias {alias!r} (aliases: {', '.join(known) or 'none'})"


def _event(row: Mapping[Any, Any]) -> AliasEvent:
    fields = {k: row[k] for k in AliasEvent.__dataclass_fields__ if k != "evidence"}
    evidence = row["evidence"]
    return AliasEvent(**fields, evidence=None if evidence is None else json.loads(evidence))


def _version(row: Mapping[Any, Any], aliases: tuple[str, ...]) -> ModelVersion:
    return ModelVersion(
        name=row["name"],
        version=int(row["version"]),
        id=row["id"],
        status=ModelStatus(row["status"]),
        artifact_id=row["artifact_id"],
        run_id=row["run_id"],
        signature=json.loads(row["signature"]),
        metrics=json.loads(row["metrics"]),
        tags=json.loads(row["tags"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
        aliases=aliases,
    )
