"""The scheduler: evaluates triggers, starts the pipeline runs they ask for, and advances rollouts.

Exactly one run per event, with any number of schedulers on one workspace:

- a trigger is evaluated by one scheduler at a time (a lease on its state row), so its watermark
  moves once per batch of new data and each new file lands in one event;
- an event is claimed (unique ``(trigger, key)``) by an owner (``host:pid:random``) under a lease
  that a heartbeat thread renews while the run is prepared (pipeline import) and runs;
- an event whose lease expired (its scheduler died, or lost the database for longer than the lease)
  is handed back once (:meth:`Scheduler.recover`); a run still marked running is marked failed first.

A fault inside a pass (database unreachable, unreadable log, failing pipeline or rollout move,
anything else) is logged with its context and the pass retried with capped exponential back-off;
:meth:`Scheduler.serve_forever` returns only after :meth:`Scheduler.stop` (SIGTERM/SIGINT).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from mloop.core.loader import load_pipeline
from mloop.core.pipeline import Pipeline
from mloop.entities import (
    ACTIVE_EVENT_STATUSES,
    RETRYABLE_EVENT_STATUSES,
    Run,
    RunStatus,
    TriggerEvent,
    new_id,
    utcnow,
)
from mloop.errors import (
    ConflictError,
    MloopError,
    NotFoundError,
    ParameterError,
    StepFailedError,
    StoreUnavailableError,
    WorkspaceGoneError,
)
from mloop.orchestration.config import LoopConfig, TriggerSpec, anchor_path_params
from mloop.orchestration.rollout import CandidateGate, RolloutDecision, advance
from mloop.orchestration.triggers import (
    TriggerCheck,
    check_live_metric,
    check_trigger,
    next_due,
    validate_trigger,
)
from mloop.stores.base import TriggerStore
from mloop.workspace import Workspace, _pid_alive

__all__ = ["Scheduler", "TickReport", "trigger_status"]

log = logging.getLogger("mloop.scheduler")


_MAX_ATTEMPTS = 2  # an event whose scheduler died is taken over once, then left failed (retry runs it)


@dataclass
class TickReport:
    """What one pass of the scheduler saw and did. ``failures`` keeps the errors themselves (their
    class says whether the input was bad); ``errors`` their messages, by trigger or rollout."""

    at: datetime
    checks: dict[str, str] = field(default_factory=dict)
    events: list[TriggerEvent] = field(default_factory=list)
    runs: list[tuple[str, str]] = field(default_factory=list)  # (run id, status)
    rollouts: list[RolloutDecision] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    failures: dict[str, Exception] = field(default_factory=dict)

    def fail(self, where: str, exc: Exception) -> None:
        self.failures[where] = exc
        self.errors[where] = _describe(exc)


@dataclass(frozen=True)
class Prepared:
    """A run ready to start: the loaded pipeline and every parameter it is given."""

    pipeline: Pipeline
    params: dict[str, Any]


def _describe(exc: Exception) -> str:
    return exc.message if isinstance(exc, MloopError) else f"{type(exc).__name__}: {exc}"


def _owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Scheduler:
    """Triggers and rollout policies of one workspace (see :class:`LoopConfig`).

    ``gate`` (``mloop scheduler run`` passes the load test) checks each rollout candidate before it
    takes canary traffic; a replay (backtest, demo) passes none, so its decisions depend on the data.
    """

    def __init__(
        self,
        workspace: Workspace,
        config: LoopConfig,
        *,
        log_dir: Path | None = None,
        clock: Callable[[], datetime] = utcnow,
        on_run: Callable[[TriggerEvent, Run], None] | None = None,
        owner: str | None = None,
        gate: CandidateGate | None = None,
    ) -> None:
        self.ws = workspace
        self.gate = gate  # checks a rollout's candidate before it takes canary traffic (None: no gate)
        self.config = config
        self.log_dir = log_dir
        self.clock = clock
        self.on_run = on_run
        self.owner = owner or _owner_id()
        self.store: TriggerStore = workspace.triggers
        self.last_error: str | None = None  # the failure of the latest pass, None once one succeeds
        self._stop = threading.Event()
        self._held: set[str] = set()  # events this scheduler is preparing or running
        self._evaluating: set[str] = set()  # triggers it is evaluating
        self._guard = threading.Lock()
        self._heartbeat: threading.Thread | None = None
        # trigger → (whether its inputs are unchanged, what it said then): passes skip it meanwhile
        self._quiet: dict[str, tuple[Callable[[], bool], str]] = {}
        self._next_recovery = 0.0  # time.monotonic() of the next look for expired leases
        self._failures: dict[str, int] = {}  # trigger → firings in a row whose run could not start

    def check(self) -> None:
        """Fail now, with a clear error, on a trigger or rollout that could never work."""
        # a schedule, new data or a manual firing may train a monitored model's first version: a
        # file that sets up the whole loop before anything is trained is accepted
        trains = any(t.kind not in ("drift", "degradation") for t in self.config.triggers)
        for spec in self.config.triggers:
            validate_trigger(spec, self.ws, first_version_later=trains)
        for policy in self.config.rollout:
            try:
                newest = self.ws.registry.get(policy.model)
            except NotFoundError:
                continue  # a trigger may register its first version later
            check_live_metric(newest, policy.metric, f"rollout {policy.model!r}")

    def spec(self, name: str) -> TriggerSpec:
        for spec in self.config.triggers:
            if spec.name == name:
                return spec
        known = ", ".join(t.name for t in self.config.triggers) or "none"
        raise NotFoundError(f"no trigger named {name!r} (configured: {known})", field="trigger")

    # one pass -------------------------------------------------------------------------------------

    def tick(self) -> TickReport:
        """Recover expired events, evaluate every trigger, run what fired, advance rollouts.

        A fault in one trigger or rollout is recorded (report, trigger state, log) and the pass goes
        on; an unreachable database ends the pass with StoreUnavailableError (nothing else can work).
        """
        self.ws.check_intact()  # a workspace deleted under the daemon: stop, not write where none reads
        report = TickReport(self.clock())
        if time.monotonic() >= self._next_recovery:
            # a lease is only reclaimable lease_s after its last renewal: looking more often than a
            # quarter of that finds nothing new, and costs a query on every pass
            self._next_recovery = time.monotonic() + self.config.lease_s / 4
            for event in self.recover():
                self._run(event, report)
        cache: dict[Any, Any] = {}
        started: dict[tuple[str, str], str] = {}  # (pipeline, run params) → trigger that ran it this pass
        for spec in self.config.triggers:
            if self._stop.is_set():
                break
            if self._still_quiet(spec, report):
                continue
            try:
                fired = self._evaluate(spec, report, cache, started)
            except StoreUnavailableError:
                raise
            except Exception as exc:  # an unreadable log, a bug in a trigger: this trigger only
                report.fail(spec.name, exc)
                log.error("trigger %s: evaluation failed: %s", spec.name, _describe(exc), exc_info=exc)
                self.store.save_state(spec.name, evaluated_at=self.clock(), last_error=_describe(exc))
                continue
            if fired is not None:
                self._run(fired[0], report, fired[1])
        for policy in self.config.rollout:
            try:
                decision = advance(self.ws, policy, self.clock(), log_dir=self.log_dir, gate=self.gate)
            except StoreUnavailableError:
                raise
            except Exception as exc:
                report.fail(f"rollout:{policy.model}", exc)
                log.error("rollout %s failed: %s", policy.model, _describe(exc), exc_info=exc)
                continue
            if decision.action != "none":
                report.rollouts.append(decision)
            if decision.action not in ("none", "wait"):
                log.info("rollout %s: %s v%s: %s", decision.model, decision.action, decision.version,
                         decision.reason)  # fmt: skip
        return report

    def _still_quiet(self, spec: TriggerSpec, report: TickReport) -> bool:
        """Whether ``spec``'s inputs are as they were when it last evaluated without firing (its
        model's log has not grown by a window, the watched files are the same): then evaluating it
        again could not fire, and the pass skips it (no lease, no state read or write)."""
        quiet = self._quiet.pop(spec.name, None)
        try:
            if quiet is None or not quiet[0]():
                return False
        except Exception:  # the watched folder is gone, say: evaluating reports it
            return False
        self._quiet[spec.name] = quiet
        report.checks[spec.name] = quiet[1]
        return True

    def _evaluate(
        self,
        spec: TriggerSpec,
        report: TickReport,
        cache: dict[Any, Any],
        started: dict[tuple[str, str], str],
    ) -> tuple[TriggerEvent, Prepared] | None:
        """Evaluate one trigger under its evaluation lease; the event to run (and its prepared run),
        if it fired."""
        with self.store.evaluating(spec.name, self.owner, self.config.lease_s) as mine:
            if not mine:
                return None  # another scheduler is evaluating it right now
            with self._holding(trigger=spec.name):
                return self._check_and_claim(spec, report, cache, started)

    def _check_and_claim(
        self,
        spec: TriggerSpec,
        report: TickReport,
        cache: dict[Any, Any],
        started: dict[tuple[str, str], str],
    ) -> tuple[TriggerEvent, Prepared] | None:
        """Evaluate ``spec`` and claim the event it fired. A firing consumes its data (the watermark
        moves past it) only when it is claimed to run, or coalesced with an identical run of this
        pass: one held back by the cool-down, or whose run cannot start (its pipeline does not load,
        it refuses the parameters), fires again on a later pass."""
        now = self.clock()
        state = self.store.state(spec.name)
        try:
            check = check_trigger(spec, self.ws, state, now, log_dir=self.log_dir, monitor_cache=cache)
        except MloopError as exc:
            report.fail(spec.name, exc)
            log.warning("trigger %s: %s", spec.name, exc.message)
            self.store.save_state(
                spec.name, evaluated_at=now, last_result=f"error: {exc.message}", last_error=exc.message
            )
            return None
        report.checks[spec.name] = check.result
        fired = check.fired
        if fired is None:
            self._save_check(spec.name, now, check)
            if check.unchanged is not None:  # only once its watermark is saved
                self._quiet[spec.name] = (check.unchanged, check.result)
            return None
        # "why": what the trigger saw, in words (`mloop scheduler events` shows it after the state moved on)
        evidence = {**fired.evidence, "params": fired.params, "why": check.result}
        cool_until = state.fired_at + spec.cooldown_td if state.fired_at is not None else None
        if cool_until is not None and now < cool_until:
            self._cooling(spec, now, check, evidence, cool_until, report)
            return None
        # the run this firing asks for: one already started this pass for the same run serves both
        target = (spec.pipeline, json.dumps({**spec.params, **fired.params}, sort_keys=True, default=str))
        if target in started:
            self.store.claim(
                spec.name,
                fired.key,
                kind=spec.kind,
                pipeline=spec.pipeline,
                evidence={**evidence, "coalesced_with": started[target]},
                status="suppressed",
                owner=self.owner,
                lease_s=self.config.lease_s,
            )
            self._save_check(spec.name, now, check)
            return None
        try:
            prepared = self._prepare(spec, fired.params)
        except StoreUnavailableError:
            raise
        except MloopError as exc:
            self._cannot_start(spec, now, exc, report)
            return None
        self._failures.pop(spec.name, None)
        # claimed before the watermark moves: a scheduler dying in between loses no data (the next
        # evaluation fires the same key, finds it claimed, and only then moves the watermark)
        claimed = self.store.claim(
            spec.name,
            fired.key,
            kind=spec.kind,
            pipeline=spec.pipeline,
            evidence=evidence,
            owner=self.owner,
            lease_s=self.config.lease_s,
        )
        self._save_check(spec.name, now, check)
        if claimed is None:
            return None  # already handled
        started[target] = spec.name
        self.store.save_state(spec.name, fired_at=now)
        report.events.append(claimed)
        log.info("trigger %s fired: %s", spec.name, fired.key, extra={"trigger": spec.name})
        return claimed, prepared

    def _save_check(self, trigger: str, now: datetime, check: TriggerCheck) -> None:
        """Record an evaluation whose data is consumed: its result, next due time and watermark."""
        self.store.save_state(
            trigger,
            evaluated_at=now,
            last_result=check.result,
            next_due_at=check.next_due,
            watermark=check.watermark,
            last_error="",
        )

    def _cooling(
        self,
        spec: TriggerSpec,
        now: datetime,
        check: TriggerCheck,
        evidence: dict[str, Any],
        until: datetime,
        report: TickReport,
    ) -> None:
        """A firing inside the cool-down: recorded (``suppressed``) but held: the watermark and next
        due time stay where they were, so the same data fires once the cool-down is over. Until then
        this scheduler's passes skip the trigger (nothing it sees could run earlier)."""
        assert check.fired is not None
        result = f"{check.result}; held: cooling down until {until.isoformat()}"
        report.checks[spec.name] = result
        self.store.save_state(spec.name, evaluated_at=now, last_result=result, last_error="")
        # its own key: the firing's is claimed when it runs, and an event key is claimed once ever
        self.store.claim(
            spec.name,
            f"cooldown/{check.fired.key}",
            kind=spec.kind,
            pipeline=spec.pipeline,
            evidence={**evidence, "held_until": until.isoformat()},
            status="suppressed",
            owner=self.owner,
            lease_s=self.config.lease_s,
        )
        self._quiet[spec.name] = (lambda: self.clock() < until, result)

    def _cannot_start(self, spec: TriggerSpec, now: datetime, exc: MloopError, report: TickReport) -> None:
        """A firing whose run cannot start (the pipeline does not load while it is being edited, a
        parameter it refuses): no event is claimed and its data is kept; the trigger is evaluated
        again after ``tick_s × 2^n`` seconds (n failures in a row), at most ``max_backoff_s``."""
        failures = self._failures.get(spec.name, 0) + 1
        self._failures[spec.name] = failures
        delay = min(self.config.max_backoff_s, self.config.tick_s * 2 ** min(failures, 20))
        retry_at = now + timedelta(seconds=delay)
        report.fail(spec.name, exc)
        log.error("trigger %s: the run cannot start (its data is kept; next try in %.1f s): %s",
                  spec.name, delay, exc.message, extra={"trigger": spec.name})  # fmt: skip
        result = f"error: the run cannot start: {exc.message}"
        self.store.save_state(spec.name, evaluated_at=now, last_result=result, last_error=exc.message)
        self._quiet[spec.name] = (lambda: self.clock() < retry_at, f"{result} (retrying after back-off)")

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
            owner=self.owner,
            lease_s=self.config.lease_s,
        )
        assert event is not None
        self.store.save_state(name, fired_at=report.at)
        report.events.append(event)
        log.info("trigger %s fired by request: %s", name, reason, extra={"trigger": name})
        self._run(event, report)
        return report

    def retry(self, event_id: str) -> TickReport:
        """Run an event that failed (or was stopped) again, with the parameters it fired with (a
        new_data event's files): what brings back the data of a run that failed, or could not start,
        once its cause is fixed. ConflictError when it is running, succeeded or was suppressed."""
        found = self.store.event(event_id)
        prepared = None  # (another caller may fail the event meanwhile: then the run prepares it)
        if found.status in RETRYABLE_EVENT_STATUSES:
            # the trigger and its pipeline as configured now, with every parameter the event fired
            # with: checked before the event is taken, so a retry that cannot start costs no attempt
            prepared = self._prepare(self.spec(found.trigger), found.evidence.get("params", {}), strict=True)
        event = self.store.retry(event_id, owner=self.owner, lease_s=self.config.lease_s)
        if event is None:
            now = self.store.event(event_id)  # as it is after the attempt: another caller may have won
            raise ConflictError(
                f"event {event_id} of trigger {now.trigger!r} is {now.status}: only a failed or "
                "stopped event is run again",
                field="event",
            )
        report = TickReport(self.clock())
        report.events.append(event)
        log.info("trigger %s: event %s retried (attempt %d)", event.trigger, event.event_key, event.attempts,
                 extra={"trigger": event.trigger, "event": event.event_key})  # fmt: skip
        self._run(event, report, prepared)
        return report

    def recover(self) -> list[TriggerEvent]:
        """Events whose lease expired (their scheduler died or lost the database), taken over once each."""
        return self.store.reclaim_expired(
            self.owner, lease_s=self.config.lease_s, may_take=self._may_take, max_attempts=_MAX_ATTEMPTS
        )

    def _may_take(self, event: TriggerEvent) -> bool:
        if event.owner == self.owner:
            with self._guard:
                if event.id in self._held:
                    return False
        elif event.owner is not None:
            host, _, rest = event.owner.partition(":")
            pid = rest.partition(":")[0]
            if host == socket.gethostname() and pid.isascii() and pid.isdigit() and _pid_alive(int(pid)):
                return False  # alive on this host, only late to renew (a busy machine): not dead
        if event.run_id is not None:
            try:
                run = self.ws.metadata.get_run(event.run_id)
            except NotFoundError:
                return True
            if run.status == RunStatus.RUNNING:
                why = f"its scheduler {event.owner} stopped renewing the lease on event {event.event_key}"
                self.ws.metadata.finish_run(run.id, RunStatus.FAILED, why)
        if event.attempts < _MAX_ATTEMPTS:
            log.warning("event %s of trigger %s: lease of %s expired, taking it over",
                        event.event_key, event.trigger, event.owner)  # fmt: skip
        else:
            log.error("event %s of trigger %s: lease of %s expired after %d attempts: marked failed "
                      "(mloop scheduler retry %s runs it again)", event.event_key, event.trigger,
                      event.owner, event.attempts, event.id)  # fmt: skip
        return True

    # leases ---------------------------------------------------------------------------------------

    @contextmanager
    def _holding(self, *, event: str | None = None, trigger: str | None = None) -> Iterator[None]:
        """Keep renewing this event's (or trigger evaluation's) lease while the block runs."""
        with self._guard:
            if event is not None:
                self._held.add(event)
            if trigger is not None:
                self._evaluating.add(trigger)
            if self._heartbeat is None:
                self._heartbeat = threading.Thread(
                    target=self._beat, name="mloop-lease-heartbeat", daemon=True
                )
                self._heartbeat.start()
        try:
            yield
        finally:
            with self._guard:
                self._held.discard(event or "")
                self._evaluating.discard(trigger or "")

    def _beat(self) -> None:
        """Renew held leases every ``heartbeat`` seconds; exit once nothing is held."""
        while True:
            time.sleep(self.config.heartbeat)
            with self._guard:
                events, triggers = set(self._held), set(self._evaluating)
                if not events and not triggers:
                    self._heartbeat = None
                    return
            try:
                kept = self.store.renew(self.owner, self.config.lease_s, events=events, triggers=triggers)
            except Exception as exc:  # the database is down: the lease may lapse; the pass will notice
                log.warning("could not renew leases: %s", _describe(exc))
                continue
            for lost in events - kept:
                with self._guard:
                    if lost not in self._held:
                        continue  # it ended between the snapshot and the renewal: nothing was lost
                if self.store.event(lost).status not in ACTIVE_EVENT_STATUSES:
                    continue  # its final status is written; the run is over
                log.error("lost the lease on event %s: another scheduler may take it over", lost)

    # running --------------------------------------------------------------------------------------

    def _run(self, event: TriggerEvent, report: TickReport, prepared: Prepared | None = None) -> None:
        with self._holding(event=event.id):
            self._run_held(event, report, prepared)

    def _prepare(self, spec: TriggerSpec, fired: dict[str, Any], *, strict: bool = False) -> Prepared:
        """The pipeline and parameters of the run an event of ``spec`` with the firing's parameters
        ``fired`` starts; MloopError when it cannot start (the pipeline does not load, refuses them).
        ``strict`` (a retry): a fired parameter the pipeline no longer takes is refused, not dropped
        (a new_data event's files would be lost while the event is marked done)."""
        pipeline = load_pipeline(spec.pipeline, workspace=self.ws)
        accepted = set(inspect.signature(pipeline.fn).parameters)
        dropped = sorted(k for k in fired if k not in accepted)
        if strict and dropped:
            raise ParameterError(
                f"the event fired with parameter {dropped[0]!r}, which {spec.pipeline} no longer takes: "
                "its data would be dropped",
                field=dropped[0],
            )
        extra = {k: v for k, v in fired.items() if k in accepted}
        # relative file params (the trigger's and the deployed version's) are relative to mloop.toml
        params = anchor_path_params(
            {**pipeline.version_params, **spec.params}, pipeline.path_params(), self.config.root
        )
        param = spec.param or ""
        many = pipeline.takes_list(param) if param in extra else None
        files = extra.get(param)
        if isinstance(files, str) and many:
            extra[param] = [files]  # one new file, to a parameter that takes a list of them
        if isinstance(files, list) and many is False:
            raise ParameterError(
                f"{len(files)} new files arrived in one pass, but parameter {spec.param!r} of "
                f"{spec.pipeline} takes one: annotate it list[Path] to receive them all",
                field="param",
            )
        params.update(extra)
        pipeline.bind(params)  # a parameter it refuses: said before an event consumes the data
        return Prepared(pipeline, params)

    def _run_held(self, event: TriggerEvent, report: TickReport, prepared: Prepared | None) -> None:
        context = {"trigger": event.trigger, "event": event.event_key}
        try:
            spec = self.spec(event.trigger)
            if prepared is None:  # a recovered or manually fired event
                prepared = self._prepare(spec, event.evidence.get("params", {}))
        except StoreUnavailableError:
            raise
        except MloopError as exc:
            self.store.update(event.id, status="failed")
            report.fail(event.trigger, exc)
            log.error("trigger %s: the run cannot start: %s", event.trigger, exc.message, extra=context)
            return
        pipeline, params = prepared.pipeline, prepared.params

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
            log.info("run %s started: %s for trigger %s (%s)", run.id, spec.pipeline, spec.name,
                     event.event_key, extra={**context, "run_id": run.id})  # fmt: skip
            if self.on_run is not None:
                self.on_run(event, run)

        try:
            result = self.ws.run(pipeline, trigger=spec.kind, on_start=started, **params)
        except StepFailedError as exc:
            status = self.ws.metadata.get_run(exc.run_id).status.value
            self.store.update(event.id, status=status)
            report.runs.append((exc.run_id, status))
            report.fail(event.trigger, exc)
            log.warning("run %s %s (trigger %s): %s", exc.run_id, status, spec.name, exc.message,
                        extra={**context, "run_id": exc.run_id, "status": status})  # fmt: skip
            return
        except StoreUnavailableError:
            raise  # the event stays ours; once the database is back and the lease expired, it is retried
        except MloopError as exc:  # e.g. a parameter the pipeline does not take: said, not traced
            self.store.update(event.id, status="failed")
            report.fail(event.trigger, exc)
            log.error("trigger %s: the run could not start: %s", spec.name, exc.message, extra=context)
            return
        except Exception as exc:  # a broken pipeline must not stop the daemon
            self.store.update(event.id, status="failed")
            report.fail(event.trigger, exc)
            log.exception("trigger %s: the run could not start", spec.name, extra=context)
            return
        except BaseException:  # Ctrl-C (fire, retry): the run was marked failed; so is its event
            self.store.update(event.id, status="failed")
            raise
        self.store.update(event.id, status="succeeded")
        report.runs.append((result.run.id, "succeeded"))
        log.info("run %s succeeded (trigger %s)", result.run.id, spec.name,
                 extra={**context, "run_id": result.run.id, "status": "succeeded"})  # fmt: skip

    # daemon ---------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the current run, then leave :meth:`serve_forever` (what SIGTERM calls)."""
        self._stop.set()

    def serve_forever(self, on_tick: Callable[[TickReport], None] | None = None) -> None:
        """Tick every ``config.tick_s`` seconds until :meth:`stop`, whatever a pass meets.

        A failing pass is logged and retried after ``tick_s × 2^n`` seconds (n consecutive failures),
        at most ``config.max_backoff_s``; :attr:`last_error` says what failed until a pass succeeds.
        WorkspaceGoneError (its database file deleted or replaced) ends it: nothing it wrote would be
        seen.
        """
        failures = 0
        while not self._stop.is_set():
            try:
                report = self.tick()
                if on_tick is not None:
                    on_tick(report)
            except WorkspaceGoneError:
                raise  # nothing this process writes can be seen any more
            except Exception as exc:  # the daemon stops only when told to, or its workspace is gone
                failures += 1
                self.last_error = _describe(exc)
                delay = min(self.config.max_backoff_s, self.config.tick_s * 2 ** min(failures, 20))
                log.error("scheduler pass failed (%d in a row), retrying in %.1f s: %s", failures, delay,
                          self.last_error, exc_info=not isinstance(exc, MloopError))  # fmt: skip
                self._stop.wait(delay)
                continue
            if failures:
                log.warning("scheduler recovered after %d failed pass(es)", failures)
            failures, self.last_error = 0, None
            self._stop.wait(self.config.tick_s)

    def status(self) -> list[dict[str, Any]]:
        """Each trigger: kind, pipeline, last evaluation, result and error, last firing, next due time."""
        return trigger_status(self.store, self.config)


def trigger_status(store: TriggerStore, config: LoopConfig) -> list[dict[str, Any]]:
    """Each configured trigger: kind, pipeline, last evaluation, result and error, last firing, next
    due time and its latest event (what ``mloop scheduler status`` shows, locally or from a server)."""
    rows = []
    now = utcnow()
    for spec in config.triggers:
        state = store.state(spec.name)
        last = store.events(spec.name, limit=1)
        rows.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "pipeline": spec.pipeline,
                "evaluated_at": state.evaluated_at,
                "result": state.last_result,
                "last_error": state.last_error,
                "fired_at": state.fired_at,
                # as the next pass will see it (a cron expression edited since is not due then)
                "next_due_at": next_due(spec, state, now) if spec.kind == "schedule" else state.next_due_at,
                "last_event": {
                    "key": last[0].event_key,
                    "status": last[0].status,
                    "run_id": last[0].run_id,
                    "owner": last[0].owner,
                }
                if last
                else None,
            }
        )
    return rows
