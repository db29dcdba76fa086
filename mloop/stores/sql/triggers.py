"""Trigger events and trigger state on SQLAlchemy Core: what makes the scheduler run each event once.

An event is claimed by inserting ``(trigger, event_key)`` under a unique constraint, so two schedulers
(or one restarted) can never claim one event twice. The claim carries an ``owner`` (host:pid:random)
and a lease (``lease_until``) that the owner's heartbeat renews while the run is prepared and runs;
:meth:`reclaim_expired` hands an event back only once its lease has expired (a conditional update,
so concurrent schedulers cannot both win), never merely because it has no run yet.

A trigger is evaluated by one scheduler at a time (:meth:`lock_trigger`, a lease on its state row), so
its watermark advances once per batch of new data and every new file lands in exactly one event.
Database errors leave as mloop errors (:func:`mloop.stores.sql.engine.translate_errors`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mloop.entities import (
    ACTIVE_EVENT_STATUSES,
    RETRYABLE_EVENT_STATUSES,
    TriggerEvent,
    TriggerState,
    new_id,
    utcnow,
)
from mloop.errors import NotFoundError
from mloop.stores.sql import schema as t
from mloop.stores.sql.base import SqlStore, dumps
from mloop.stores.sql.engine import insert_ignoring_conflicts

__all__ = ["SqlTriggerStore"]

_events = t.trigger_events
_state = t.trigger_state


class SqlTriggerStore(SqlStore):
    """Events and state of every trigger, in the workspace's metadata database."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._dialect = engine.dialect.name

    # events ---------------------------------------------------------------------------------------

    def claim(
        self,
        trigger: str,
        event_key: str,
        *,
        kind: str,
        pipeline: str,
        evidence: Mapping[str, Any],
        status: str = "pending",
        owner: str | None = None,
        lease_s: float = 30.0,
    ) -> TriggerEvent | None:
        """Record a new event held by ``owner`` for ``lease_s``; None when ``(trigger, event_key)`` was
        already recorded (by anyone)."""
        held = status in ACTIVE_EVENT_STATUSES
        row: dict[str, Any] = {
            "id": new_id(),
            "trigger": trigger,
            "event_key": event_key,
            "kind": kind,
            "pipeline": pipeline,
            "evidence": dumps(evidence),
            "status": status,
            "attempts": 0 if status == "suppressed" else 1,
            "run_id": None,
            "owner": owner,
        }
        with self._write() as conn:
            now = self._clock(conn)  # the lease is judged by the database's clock (see _clock)
            row.update(
                fired_at=now, updated_at=now, lease_until=now + timedelta(seconds=lease_s) if held else None
            )
            insert = insert_ignoring_conflicts(self._dialect, _events).values(**row)
            # RETURNING, not rowcount: psycopg reports -1 for INSERT … ON CONFLICT DO NOTHING
            insert = insert.on_conflict_do_nothing(index_elements=["trigger", "event_key"]).returning(
                _events.c.id
            )
            inserted = conn.execute(insert).first() is not None
        return _event(row) if inserted else None

    def update(self, event_id: str, *, status: str, run_id: str | None = None) -> None:
        """Record the event's progress; a final status releases its lease."""
        values: dict[str, Any] = {"status": status, "updated_at": utcnow()}
        if run_id is not None:
            values["run_id"] = run_id
        if status not in ACTIVE_EVENT_STATUSES:
            values["lease_until"] = None
        with self._write() as conn:
            conn.execute(_events.update().where(_events.c.id == event_id).values(**values))

    def renew(
        self, owner: str, lease_s: float, *, events: Collection[str] = (), triggers: Collection[str] = ()
    ) -> set[str]:
        """Extend ``owner``'s leases on these active events and trigger evaluations; the event ids it
        still holds (one it lost was reclaimed by another scheduler after its lease expired)."""
        held: set[str] = set()
        with self._write() as conn:
            until = self._clock(conn) + timedelta(seconds=lease_s)
            if triggers:
                conn.execute(
                    _state.update()
                    .where(_state.c.trigger.in_(list(triggers)), _state.c.locked_by == owner)
                    .values(locked_until=until)
                )
            if events:
                mine = (
                    _events.c.id.in_(list(events)),
                    _events.c.owner == owner,
                    _events.c.status.in_(ACTIVE_EVENT_STATUSES),
                )
                conn.execute(_events.update().where(*mine).values(lease_until=until))
                held = set(conn.execute(sa.select(_events.c.id).where(*mine)).scalars())
        return held

    def reclaim_expired(
        self,
        owner: str,
        *,
        lease_s: float = 30.0,
        may_take: Callable[[TriggerEvent], bool] = lambda event: True,
        max_attempts: int = 2,
    ) -> list[TriggerEvent]:
        """Active events whose lease has expired, handed to ``owner`` once each (``attempts`` + 1).

        ``may_take(event)`` may veto one (e.g. its owner is a live process on this host, only slow to
        renew). Past ``max_attempts`` an event is left failed instead of handed back.
        """
        with self._read() as conn:
            now = self._clock(conn)
            expired = sa.or_(_events.c.lease_until.is_(None), _events.c.lease_until < now)
            rows = (
                conn.execute(sa.select(_events).where(_events.c.status.in_(ACTIVE_EVENT_STATUSES), expired))
                .mappings()
                .all()
            )
        handed: list[TriggerEvent] = []
        for row in rows:
            if not may_take(_event(row)):
                continue
            retry = row["attempts"] < max_attempts
            with self._write() as conn:
                values = {
                    "status": "pending" if retry else "failed",
                    "attempts": row["attempts"] + (1 if retry else 0),
                    "updated_at": utcnow(),
                    "owner": owner if retry else row["owner"],
                    "lease_until": self._clock(conn) + timedelta(seconds=lease_s) if retry else None,
                }
                stmt = (
                    _events.update()
                    .where(_events.c.id == row["id"], _events.c.attempts == row["attempts"])
                    .where(_events.c.status.in_(ACTIVE_EVENT_STATUSES), expired)
                    .values(**values)
                    .returning(_events.c.id)
                )
                won = conn.execute(stmt).first() is not None
            if won and retry:
                handed.append(_event({**row, **values}))
        return handed

    def retry(self, event_id: str, *, owner: str, lease_s: float = 30.0) -> TriggerEvent | None:
        """Hand an event that ended without success (``failed``, ``stopped``) to ``owner`` to run again,
        once (attempts + 1; a conditional update, so two callers cannot both win); None when it is not
        such an event (any more)."""
        with self._write() as conn:
            now = self._clock(conn)
            row = (
                conn.execute(
                    _events.update()
                    .where(_events.c.id == event_id, _events.c.status.in_(RETRYABLE_EVENT_STATUSES))
                    .values(
                        status="pending",
                        attempts=_events.c.attempts + 1,
                        owner=owner,
                        lease_until=now + timedelta(seconds=lease_s),
                        updated_at=utcnow(),
                    )
                    .returning(*_events.c)
                )
                .mappings()
                .first()
            )
        return _event(row) if row is not None else None

    def events(
        self, trigger: str | None = None, *, limit: int = 100, status: str | None = None
    ) -> list[TriggerEvent]:
        """Newest first."""
        query = sa.select(_events).order_by(_events.c.id.desc()).limit(limit)
        if trigger is not None:
            query = query.where(_events.c.trigger == trigger)
        if status is not None:
            query = query.where(_events.c.status == status)
        with self._read() as conn:
            return [_event(r) for r in conn.execute(query).mappings()]

    def event(self, event_id: str) -> TriggerEvent:
        with self._read() as conn:
            row = conn.execute(sa.select(_events).where(_events.c.id == event_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"no trigger event {event_id!r}", field="event")
        return _event(row)

    def event_of_run(self, run_id: str) -> TriggerEvent | None:
        with self._read() as conn:
            row = conn.execute(sa.select(_events).where(_events.c.run_id == run_id)).mappings().first()
        return _event(row) if row else None

    # state ----------------------------------------------------------------------------------------

    @contextmanager
    def evaluating(self, trigger: str, owner: str, lease_s: float = 30.0) -> Iterator[bool]:
        """Hold the right to evaluate ``trigger`` inside the block (yields False while another
        scheduler holds an unexpired one). Re-entrant for its owner, renewed by :meth:`renew`."""
        with self._write() as conn:
            now = self._clock(conn)
            free = sa.or_(
                _state.c.locked_by.is_(None), _state.c.locked_by == owner, _state.c.locked_until < now
            )
            take = (
                _state.update()
                .where(_state.c.trigger == trigger, free)
                .values(locked_by=owner, locked_until=now + timedelta(seconds=lease_s))
                .returning(_state.c.trigger)
            )
            taken = conn.execute(take).first()
            if taken is None and self._ensure_state(conn, trigger):  # its first evaluation ever
                taken = conn.execute(take).first()
        if taken is None:
            yield False
            return
        try:
            yield True
        finally:
            with self._write() as conn:
                conn.execute(
                    _state.update()
                    .where(_state.c.trigger == trigger, _state.c.locked_by == owner)
                    .values(locked_by=None, locked_until=None)
                )

    def state(self, trigger: str) -> TriggerState:
        with self._read() as conn:
            found = self._state(conn, trigger)
        return found if found is not None else TriggerState(trigger, None, None, None, "", {})

    @staticmethod
    def _state(conn: sa.Connection, trigger: str, *, for_update: bool = False) -> TriggerState | None:
        query = sa.select(_state).where(_state.c.trigger == trigger)
        row = conn.execute(query.with_for_update() if for_update else query).mappings().first()
        if row is None:
            return None
        return TriggerState(
            trigger,
            row["evaluated_at"],
            row["fired_at"],
            row["next_due_at"],
            row["last_result"],
            json.loads(row["watermark"]),
            row["last_error"],
        )

    def save_state(
        self,
        trigger: str,
        *,
        evaluated_at: datetime | None = None,
        fired_at: datetime | None = None,
        next_due_at: datetime | None = None,
        last_result: str | None = None,
        watermark: Mapping[str, Any] | None = None,
        last_error: str | None = None,
    ) -> None:
        """Update the given fields (others keep their value); ``last_error=""`` clears the error."""
        with self._write() as conn:  # read and write in one transaction: no other update lost
            # locked on PostgreSQL (SQLite's BEGIN IMMEDIATE already holds the write lock); the row
            # is created only when missing: a trigger's first save, once
            current = self._state(conn, trigger, for_update=True)
            if current is None:
                self._ensure_state(conn, trigger)
                current = self._state(conn, trigger, for_update=True)
            assert current is not None
            row = {
                "evaluated_at": evaluated_at or current.evaluated_at,
                "fired_at": fired_at or current.fired_at,
                "next_due_at": next_due_at if next_due_at is not None else current.next_due_at,
                "last_result": last_result if last_result is not None else current.last_result,
                "watermark": dumps(dict(watermark) if watermark is not None else current.watermark),
                "last_error": (last_error or None) if last_error is not None else current.last_error,
            }
            conn.execute(_state.update().where(_state.c.trigger == trigger).values(**row))

    def _ensure_state(self, conn: sa.Connection, trigger: str) -> bool:
        """Create ``trigger``'s state row if it has none; whether it was created."""
        inserted = conn.execute(
            insert_ignoring_conflicts(self._dialect, _state)
            .values(trigger=trigger, last_result="", watermark="{}")
            .on_conflict_do_nothing(index_elements=["trigger"])
            .returning(_state.c.trigger)
        ).first()
        return inserted is not None


def _event(row: Any) -> TriggerEvent:
    evidence = row["evidence"]
    return TriggerEvent(
        id=row["id"],
        trigger=row["trigger"],
        event_key=row["event_key"],
        kind=row["kind"],
        pipeline=row["pipeline"],
        fired_at=row["fired_at"],
        evidence=json.loads(evidence) if isinstance(evidence, str) else dict(evidence),
        status=row["status"],
        attempts=row["attempts"],
        run_id=row["run_id"],
        updated_at=row["updated_at"],
        owner=row["owner"],
        lease_until=row["lease_until"],
    )
