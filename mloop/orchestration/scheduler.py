"""The scheduler: evaluates triggers, starts the pipeline runs they ask for, and advances rollouts.

Idempotent through the metadata store: an event is claimed (unique ``(trigger, key)``) before its run
starts and linked to the run as soon as it exists, so a restarted scheduler never starts a second run
for an event it handled. A run interrupted by a crash is marked failed when the workspace is opened
again (its process is gone); :meth:`Scheduler.recover` then fires that event again, exactly once.
A failing run is recorded as failed and the scheduler carries on.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mloop.core.loader import load_pipeline
from mloop.entities import Run, RunStatus, TriggerEvent, new_id, utcnow
from mloop.errors import MloopError, NotFoundError, StepFailedError
from mloop.orchestration.config import LoopConfig, TriggerSpec
from mloop.orchestration.rollout import RolloutDecision, advance
from mloop.orchestration.triggers import check_trigger, validate_trigger
from mloop.workspace import Workspace

__all__ = ["Scheduler", "TickReport"]

log = logging.getLogger("mloop.scheduler")


@dataclass
class TickReport:
    """What one pass of the scheduler saw and did."""

    at: datetime
    checks: dict[str, str] = field(default_factory=dict)
    events: list[TriggerEvent] = field(default_factory=list)
    runs: list[tuple[str, str]] = field(default_factory=list)  # (run id, status)
    rollouts: list[RolloutDecision] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


class Scheduler:
    """Triggers and rollout policies of one workspace (see :class:`LoopConfig`)."""

    def __init__(
        self,
        workspace: Workspace,
        config: LoopConfig,
        *,
        log_dir: Path | None = None,
        clock: Callable[[], datetime] = utcnow,
        on_run: Callable[[TriggerEvent, Run], None] | None = None,
    ) -> None:
        self.ws = workspace
        self.config = config
        self.log_dir = log_dir
        self.clock = clock
        self.on_run = on_run
        self.store = workspace.trigger_store()
        self._stop = threading.Event()

    def check(self) -> None:
        """Fail now, with a clear error, on a trigger that could never work."""
        for spec in self.config.triggers:
            validate_trigger(spec, self.ws)

    def spec(self, name: str) -> TriggerSpec:
        for spec in self.config.triggers:
            if spec.name == name:
                return spec
        known = ", ".join(t.name for t in self.config.triggers) or "none"
        raise NotFoundError(f"no trigger named {name!r} (configured: {known})", field="trigger")

    # one pass -------------------------------------------------------------------------------------

    def tick(self) -> TickReport:
        """Recover interrupted events, evaluate every trigger, run what fired, advance rollouts."""
        report = TickReport(self.clock())
        for event in self.recover():
            self._run(event, report)
        cache: dict[Any, Any] = {}
        started: dict[tuple[str, str], str] = {}  # (pipeline, params) → trigger that ran it this pass
        for spec in self.config.triggers:
            if self._stop.is_set():
                break
            now = self.clock()
            state = self.store.state(spec.name)
            try:
                check = check_trigger(spec, self.ws, state, now, log_dir=self.log_dir, monitor_cache=cache)
            except MloopError as exc:
                report.errors[spec.name] = exc.message
                self.store.save_state(spec.name, evaluated_at=now, last_result=f"error: {exc.message}")
                continue
            report.checks[spec.name] = check.result
            self.store.save_state(
                spec.name,
                evaluated_at=now,
                last_result=check.result,
                next_due_at=check.next_due,
                watermark=check.watermark,
            )
            if check.fired is None:
                continue
            cooling = state.fired_at is not None and now - state.fired_at < spec.cooldown_td
            target = (spec.pipeline, json.dumps(spec.params, sort_keys=True, default=str))
            evidence = {**check.fired.evidence, "params": check.fired.params}
            if target in started:  # two triggers saw one event: one run serves both
                evidence["coalesced_with"] = started[target]
            skip = cooling or target in started
            claimed = self.store.claim(
                spec.name,
                check.fired.key,
                kind=spec.kind,
                pipeline=spec.pipeline,
                evidence=evidence,
                status="suppressed" if skip else "pending",
            )
            if claimed is None or skip:
                continue  # already handled, inside the cool-down, or coalesced (recorded, not run)
            started[target] = spec.name
            self.store.save_state(spec.name, fired_at=now)
            report.events.append(claimed)
            self._run(claimed, report)
        for policy in self.config.rollout:
            try:
                decision = advance(self.ws, policy, self.clock(), log_dir=self.log_dir)
            except MloopError as exc:
                report.errors[f"rollout:{policy.model}"] = exc.message
                continue
            if decision.action != "none":
                report.rollouts.append(decision)
        return report

    def fire(self, name: str, reason: str = "requested") -> TickReport:
        """Fire a trigger now (any kind; ``manual`` triggers fire only this way)."""
        spec = self.spec(name)
        report = TickReport(self.clock())
        event = self.store.claim(
            name,
            f"manual/{new_id()}",
            kind="manual",
            pipeline=spec.pipeline,
            evidence={"reason": reason, "params": {}},
        )
        assert event is not None
        self.store.save_state(name, fired_at=report.at)
        report.events.append(event)
        self._run(event, report)
        return report

    def recover(self) -> list[TriggerEvent]:
        """Events whose run died with a previous scheduler, handed back once each."""

        def over(run_id: str) -> bool:
            try:
                return self.ws.metadata.get_run(run_id).status != RunStatus.RUNNING
            except NotFoundError:
                return True

        return self.store.reclaim_interrupted(over)

    # running --------------------------------------------------------------------------------------

    def _run(self, event: TriggerEvent, report: TickReport) -> None:
        try:
            spec = self.spec(event.trigger)
            pipeline = load_pipeline(spec.pipeline)
        except MloopError as exc:
            self.store.update(event.id, status="failed")
            report.errors[event.trigger] = exc.message
            return
        accepted = set(inspect.signature(pipeline.fn).parameters)
        extra = {k: v for k, v in event.evidence.get("params", {}).items() if k in accepted}
        params = {**spec.params, **extra}

        def started(run: Run) -> None:
            self.store.update(event.id, status="running", run_id=run.id)
            self.ws.metadata.log_params(
                run.id,
                {
                    "trigger.name": spec.name,
                    "trigger.event": event.event_key,
                    "trigger.attempt": event.attempts,
                },
            )
            if self.on_run is not None:
                self.on_run(event, run)

        log.info("trigger %s fired (%s): starting %s", spec.name, event.event_key, spec.pipeline)
        try:
            result = self.ws.run(pipeline, trigger=spec.kind, on_start=started, **params)
        except StepFailedError as exc:
            status = self.ws.metadata.get_run(exc.run_id).status.value
            self.store.update(event.id, status=status)
            report.runs.append((exc.run_id, status))
            log.warning("run %s for trigger %s %s: %s", exc.run_id, spec.name, status, exc.message)
            return
        except MloopError as exc:  # e.g. a parameter the pipeline does not take: said, not traced
            self.store.update(event.id, status="failed")
            report.errors[event.trigger] = exc.message
            log.error("trigger %s: the run could not start: %s", spec.name, exc.message)
            return
        except Exception as exc:  # a broken pipeline must not stop the daemon
            self.store.update(event.id, status="failed")
            report.errors[event.trigger] = f"{type(exc).__name__}: {exc}"
            log.exception("trigger %s: the run could not start", spec.name)
            return
        self.store.update(event.id, status="succeeded")
        report.runs.append((result.run.id, "succeeded"))

    # daemon ---------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the current run, then leave :meth:`serve_forever` (what SIGTERM calls)."""
        self._stop.set()

    def serve_forever(self, on_tick: Callable[[TickReport], None] | None = None) -> None:
        """Tick every ``config.tick_s`` seconds until :meth:`stop`."""
        while not self._stop.is_set():
            try:
                report = self.tick()
            except MloopError as exc:  # e.g. the database briefly unreachable: try again next tick
                log.error("scheduler tick failed: %s", exc.message)
            else:
                if on_tick is not None:
                    on_tick(report)
            self._stop.wait(self.config.tick_s)

    def status(self) -> list[dict[str, Any]]:
        """Each trigger: kind, pipeline, last evaluation and result, last firing, next due time."""
        rows = []
        for spec in self.config.triggers:
            state = self.store.state(spec.name)
            last = self.store.events(spec.name, limit=1)
            rows.append(
                {
                    "name": spec.name,
                    "kind": spec.kind,
                    "pipeline": spec.pipeline,
                    "evaluated_at": state.evaluated_at,
                    "result": state.last_result,
                    "fired_at": state.fired_at,
                    "next_due_at": state.next_due_at,
                    "last_event": {
                        "key": last[0].event_key,
                        "status": last[0].status,
                        "run_id": last[0].run_id,
                    }
                    if last
                    else None,
                }
            )
        return rows
