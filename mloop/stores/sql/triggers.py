"""Trigger events and trigger state on SQLAlchemy Core: what makes the scheduler idempotent.

An event is claimed by inserting ``(trigger, event_key)`` under a unique constraint, so two schedulers
(or one restarted) can never start two runs for one event. A run interrupted by a crash leaves its
event ``running`` with a run the metadata store has marked failed; :meth:`reclaim_interrupted` hands
each such event back exactly once (a conditional update, so concurrent schedulers cannot both win).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mloop.entities import TriggerEvent, TriggerState, new_id, utcnow
from mloop.stores.sql import schema as t
from mloop.stores.sql.engine import WRITE, insert_ignoring_conflicts

__all__ = ["SqlTriggerStore"]

ACTIVE = ("pending", "running")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


class SqlTriggerStore:
    """Events and state of every trigger, in the workspace's metadata database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = engine.execution_options(**{WRITE: True})
        self._claim = insert_ignoring_conflicts(engine.dialect.name, t.trigger_events).on_conflict_do_nothing(
            index_elements=["trigger", "event_key"]
        )

    def claim(
        self,
        trigger: str,
        event_key: str,
        *,
        kind: str,
        pipeline: str,
        evidence: Mapping[str, Any],
        status: str = "pending",
    ) -> TriggerEvent | None:
        """Record a new event; None when ``(trigger, event_key)`` was already recorded."""
        now = utcnow()
        row = {
            "id": new_id(),
            "trigger": trigger,
            "event_key": event_key,
            "kind": kind,
            "pipeline": pipeline,
            "fired_at": now,
            "evidence": _dumps(evidence),
            "status": status,
            "attempts": 0 if status == "suppressed" else 1,
            "run_id": None,
            "updated_at": now,
        }
        with self._writer.begin() as conn:
            inserted = conn.execute(self._claim.values(**row)).rowcount
        return _event(row) if inserted == 1 else None

    def update(self, event_id: str, *, status: str, run_id: str | None = None) -> None:
        values: dict[str, Any] = {"status": status, "updated_at": utcnow()}
        if run_id is not None:
            values["run_id"] = run_id
        with self._writer.begin() as conn:
            conn.execute(t.trigger_events.update().where(t.trigger_events.c.id == event_id).values(**values))

    def reclaim_interrupted(self, run_is_over: Any, *, max_attempts: int = 2) -> list[TriggerEvent]:
        """Events whose run died with its scheduler, handed back once each (``attempts`` + 1).

        ``run_is_over(run_id) -> bool`` says whether the event's run has ended (a crashed run has been
        marked failed when the workspace was opened). Past ``max_attempts`` an event is left failed.
        """
        with self.engine.connect() as conn:
            rows = (
                conn.execute(sa.select(t.trigger_events).where(t.trigger_events.c.status.in_(ACTIVE)))
                .mappings()
                .all()
            )
        handed: list[TriggerEvent] = []
        for row in rows:
            if row["run_id"] is not None and not run_is_over(row["run_id"]):
                continue
            retry = row["attempts"] < max_attempts
            stmt = (
                t.trigger_events.update()
                .where(t.trigger_events.c.id == row["id"], t.trigger_events.c.attempts == row["attempts"])
                .where(t.trigger_events.c.status.in_(ACTIVE))
                .values(
                    status="pending" if retry else "failed",
                    attempts=row["attempts"] + (1 if retry else 0),
                    updated_at=utcnow(),
                )
            )
            with self._writer.begin() as conn:
                won = conn.execute(stmt).rowcount == 1
            if won and retry:
                handed.append(_event({**row, "status": "pending", "attempts": row["attempts"] + 1}))
        return handed

    def events(self, trigger: str | None = None, *, limit: int = 100) -> list[TriggerEvent]:
        """Newest first."""
        query = sa.select(t.trigger_events).order_by(t.trigger_events.c.id.desc()).limit(limit)
        if trigger is not None:
            query = query.where(t.trigger_events.c.trigger == trigger)
        with self.engine.connect() as conn:
            return [_event(r) for r in conn.execute(query).mappings()]

    def event_of_run(self, run_id: str) -> TriggerEvent | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(t.trigger_events).where(t.trigger_events.c.run_id == run_id))
                .mappings()
                .first()
            )
        return _event(row) if row else None

    def state(self, trigger: str) -> TriggerState:
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(t.trigger_state).where(t.trigger_state.c.trigger == trigger))
                .mappings()
                .first()
            )
        if row is None:
            return TriggerState(trigger, None, None, None, "", {})
        return TriggerState(
            trigger,
            row["evaluated_at"],
            row["fired_at"],
            row["next_due_at"],
            row["last_result"],
            json.loads(row["watermark"]),
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
    ) -> None:
        """Update the given fields (others keep their value)."""
        current = self.state(trigger)
        row = {
            "evaluated_at": evaluated_at or current.evaluated_at,
            "fired_at": fired_at or current.fired_at,
            "next_due_at": next_due_at if next_due_at is not None else current.next_due_at,
            "last_result": last_result if last_result is not None else current.last_result,
            "watermark": _dumps(dict(watermark) if watermark is not None else current.watermark),
        }
        with self._writer.begin() as conn:
            updated = conn.execute(
                t.trigger_state.update().where(t.trigger_state.c.trigger == trigger).values(**row)
            ).rowcount
            if not updated:
                conn.execute(
                    insert_ignoring_conflicts(self.engine.dialect.name, t.trigger_state)
                    .values(trigger=trigger, **row)
                    .on_conflict_do_nothing(index_elements=["trigger"])
                )


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
    )
