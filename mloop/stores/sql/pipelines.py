"""Pipeline versions, their aliases and CI verdicts on SQLAlchemy Core (the metadata store's engine).

A version's number is the next after the highest of its name, taken inside the write transaction
(SQLite's writes are serialised; on PostgreSQL a concurrent deploy that took the same number hits the
unique constraint and retries). An alias move and its history event are one transaction, and a
rollback replays the alias's history as a stack, like the model registry's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from mloop.entities import AliasEvent, CiRecord, PipelineVersion, new_id, utcnow
from mloop.errors import ConflictError, NotFoundError, ParameterError
from mloop.names import check_name
from mloop.stores.sql import schema as t
from mloop.stores.sql.base import SqlStore, dumps
from mloop.stores.sql.engine import translate_errors

__all__ = ["SqlPipelineStore"]

PROMOTE, ROLLBACK = "promote", "rollback"
UNCHANGED = "unchanged"  # a promotion to the version the alias already holds: returned, never recorded
_V, _A, _E = t.pipeline_versions, t.pipeline_aliases, t.pipeline_alias_events


def _check_name(what: str, value: str) -> None:
    check_name(value, what=what, field=what.replace(" ", "_"))


class SqlPipelineStore(SqlStore):
    """:class:`~mloop.stores.base.PipelineStore` on SQLite and PostgreSQL."""

    store_name = "pipeline store"

    def create_version(self, version: PipelineVersion) -> PipelineVersion:
        return self.create_or_reuse(version)[0]

    def create_or_reuse(
        self, version: PipelineVersion, same: Callable[[PipelineVersion], bool] | None = None
    ) -> tuple[PipelineVersion, bool]:
        _check_name("pipeline name", version.name)
        for _ in range(20):
            try:
                with translate_errors(self.store_name, integrity=False), self._writer.begin() as conn:
                    twin = conn.execute(
                        sa.select(_V.c.name)
                        .where(sa.func.lower(_V.c.name) == version.name.lower(), _V.c.name != version.name)
                        .limit(1)
                    ).scalar()
                    if twin is not None:  # Churn beside churn: two pipelines a reader takes for one
                        raise ParameterError(
                            f"pipeline {version.name!r} differs from deployed pipeline {twin!r} only by "
                            f"case: use {twin!r}",
                            field="name",
                        )
                    if same is not None:  # looked for inside the write: two identical deploys make one
                        # The match and the next number come from one statement, so from one snapshot:
                        # under PostgreSQL's READ COMMITTED a second statement could see a version
                        # committed after the first looked, and number a duplicate after it.
                        rows = [
                            _version(r)
                            for r in conn.execute(
                                sa.select(_V).where(_V.c.name == version.name).order_by(_V.c.version.desc())
                            ).mappings()
                        ]
                        found = next((v for v in rows if same(v)), None)
                        if found is not None:
                            return found, False
                        number = (rows[0].version if rows else 0) + 1
                    else:
                        last = conn.execute(
                            sa.select(sa.func.max(_V.c.version)).where(_V.c.name == version.name)
                        )
                        number = int(last.scalar() or 0) + 1
                    stored = dataclasses.replace(version, id=new_id(), version=number, created_at=utcnow())
                    conn.execute(_V.insert(), _row(stored))
                return stored, True
            except IntegrityError:
                continue  # a concurrent deploy took the number: look again, then take the next
        raise ConflictError(f"could not number a new version of {version.name!r}", field="name")

    def get_version(
        self, name: str, version: int | None = None, *, alias: str | None = None
    ) -> PipelineVersion:
        with self._read() as conn:
            last = conn.execute(sa.select(sa.func.max(_V.c.version)).where(_V.c.name == name)).scalar()
            if last is None:
                raise NotFoundError(f"no deployed pipeline {name!r}", field="name")
            if alias is not None:
                version = conn.execute(
                    sa.select(_A.c.version).where(_A.c.name == name, _A.c.alias == alias)
                ).scalar()
                if version is None:
                    raise NotFoundError(_no_alias(conn, name, alias), field="alias")
            number = int(last) if version is None else version
            row = (
                conn.execute(sa.select(_V).where(_V.c.name == name, _V.c.version == number))
                .mappings()
                .first()
            )
            if row is None:
                raise NotFoundError(
                    f"pipeline {name!r} has no version {version} (versions 1-{last})", field="version"
                )
            return _version(row)

    def list_versions(self, name: str | None = None) -> list[PipelineVersion]:
        query = sa.select(_V).order_by(_V.c.name, _V.c.version)
        if name is not None:
            query = query.where(_V.c.name == name)
        with self._read() as conn:
            rows = [_version(r) for r in conn.execute(query).mappings()]
        if name is not None and not rows:
            raise NotFoundError(f"no deployed pipeline {name!r}", field="name")
        return rows

    def aliases(self, name: str) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute(
                sa.select(_A.c.alias, _A.c.version).where(_A.c.name == name).order_by(_A.c.alias)
            )
            return {alias: int(v) for alias, v in rows}

    def move_alias(
        self, name: str, alias: str, version: int | None, *, action: str = PROMOTE, who: str, reason: str
    ) -> AliasEvent:
        """Point ``alias`` at ``version``; ``action="rollback"`` (version None) gives it back to the
        previous holder different from its current one. Promoting to the version the alias already
        holds records nothing and returns an event whose action is ``unchanged``."""
        _check_name("alias", alias)
        with self._write() as conn:
            last = conn.execute(sa.select(sa.func.max(_V.c.version)).where(_V.c.name == name)).scalar()
            if last is None:
                raise NotFoundError(f"no deployed pipeline {name!r}", field="name")
            current = conn.execute(
                sa.select(_A.c.version).where(_A.c.name == name, _A.c.alias == alias)
            ).scalar()
            if action == ROLLBACK:
                stack = self._holder_stack(conn, name, alias)
                if not stack:
                    raise NotFoundError(_no_alias(conn, name, alias), field="alias")
                earlier = [v for v in stack if v != current]
                if not earlier:
                    raise ConflictError(
                        f"alias {alias!r} of pipeline {name!r} has no earlier version to roll back to",
                        field="alias",
                    )
                version = earlier[-1]  # the previous *different* holder
            elif version is None or not 1 <= version <= int(last):
                raise NotFoundError(
                    f"pipeline {name!r} has no version {version} (versions 1-{last})", field="version"
                )
            now = utcnow()
            if action == PROMOTE and current == version:  # nothing moves: nothing is recorded
                return AliasEvent(name, alias, UNCHANGED, current, version, now, who, reason)
            if current is None:
                conn.execute(
                    _A.insert(), {"name": name, "alias": alias, "version": version, "updated_at": now}
                )
            else:
                conn.execute(
                    _A.update()
                    .where(_A.c.name == name, _A.c.alias == alias)
                    .values(version=version, updated_at=now)
                )
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
            conn.execute(_E.insert(), event)
            return AliasEvent(**event)

    def _holder_stack(self, conn: sa.Connection, name: str, alias: str) -> list[int | None]:
        stack: list[int | None] = []
        rows = conn.execute(
            sa.select(_E.c.action, _E.c.to_version)
            .where(_E.c.name == name, _E.c.alias == alias)
            .order_by(_E.c.id)
        )
        for action, to_version in rows:
            if action == ROLLBACK:  # back to the previous different holder: drop everything above it
                while stack and stack[-1] != to_version:
                    stack.pop()
            elif not stack or stack[-1] != to_version:  # a repeated promotion is no earlier version
                stack.append(to_version)
        return stack

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        query = sa.select(_E).where(_E.c.name == name)
        if alias is not None:
            query = query.where(_E.c.alias == alias)
        with self._read() as conn:
            rows = conn.execute(query.order_by(_E.c.id)).mappings()
            fields = AliasEvent.__dataclass_fields__
            return [AliasEvent(**{k: r[k] for k in fields if k in r}) for r in rows]

    def record_ci(self, record: CiRecord) -> None:
        with self._write() as conn:
            conn.execute(
                t.ci_results.insert(),
                {
                    "code_hash": record.code_hash,
                    "pipeline": record.pipeline,
                    "passed": record.passed,
                    "report": dumps(record.report),
                    "recorded_at": record.recorded_at,
                },
            )

    def get_ci(self, code_hash: str) -> CiRecord | None:
        query = sa.select(t.ci_results).where(t.ci_results.c.code_hash == code_hash)
        with self._read() as conn:
            row = conn.execute(query.order_by(t.ci_results.c.id.desc()).limit(1)).mappings().first()
        if row is None:
            return None
        return CiRecord(
            row["code_hash"],
            row["pipeline"],
            bool(row["passed"]),
            json.loads(row["report"]),
            row["recorded_at"],
        )


def _no_alias(conn: sa.Connection, name: str, alias: str) -> str:
    known = sorted(conn.execute(sa.select(_A.c.alias).where(_A.c.name == name)).scalars())
    return f"pipeline {name!r} has no alias {alias!r} (aliases: {', '.join(known) or 'none'})"


def _row(v: PipelineVersion) -> dict[str, Any]:
    row = {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
    row.update(params=dumps(v.params), packages=dumps(v.packages), ci=None if v.ci is None else dumps(v.ci))
    return row


def _version(row: Mapping[Any, Any]) -> PipelineVersion:
    values = {f.name: row[f.name] for f in dataclasses.fields(PipelineVersion)}
    values.update(
        params=json.loads(row["params"]),
        packages=json.loads(row["packages"]),
        ci=None if row["ci"] is None else json.loads(row["ci"]),
        git_dirty=None if row["git_dirty"] is None else bool(row["git_dirty"]),
    )
    return PipelineVersion(**values)
