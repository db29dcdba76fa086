"""Replay a labelled stream through the live loop: the prediction service (in-process or real HTTP),
the prediction log, delayed labels through ``/feedback``, the scheduler's triggers, the retraining
pipeline, model validation and the rollout policy — the same objects that run in production, driven
by the rows of a file instead of by the clock.

Used by ``mloop backtest`` (tune triggers on history) and ``mloop demo`` (watch the loop work).
"""

from __future__ import annotations

import datetime
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mloop.errors import MloopError
from mloop.orchestration.config import LoopConfig
from mloop.orchestration.rollout import RolloutDecision
from mloop.orchestration.scheduler import Scheduler, TickReport
from mloop.serving.app import ModelService, ServeConfig, create_app
from mloop.serving.predictor import InputError
from mloop.workspace import Workspace

__all__ = ["LoopEvent", "Replay", "replay_stream"]


@dataclass
class LoopEvent:
    """Something the loop did while the stream played: a trigger fired, a run ended, a rollout step."""

    row: int
    window: int
    kind: str
    detail: str
    version: int | None = None
    run_id: str | None = None
    trigger: str | None = None
    at: float = field(default_factory=time.time)  # wall clock, for latency measurements

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Replay:
    """What the loop answered for each row, and everything it did."""

    predictions: list[Any]
    scores: list[float | None]
    versions: list[int | None]
    events: list[LoopEvent] = field(default_factory=list)
    refused_rows: int = 0
    refused_labels: int = 0

    @property
    def retrains(self) -> int:
        """Retraining runs started, whatever became of them (each cost its training)."""
        return sum(e.kind == "run" for e in self.events)

    @property
    def failed_runs(self) -> int:
        """Runs that ended in an error, not with a model or a refusal by a validation gate."""
        return sum(e.kind == "run" and e.detail == "failed" for e in self.events)

    @property
    def promotions(self) -> int:
        return sum(e.kind == "promote" for e in self.events)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (Python scalars, NaN → null), the way a client would send them."""
    columns = {}
    for name in frame.columns:
        values = frame[name].tolist()
        columns[name] = [
            None
            if v is None or v is pd.NaT or (isinstance(v, float) and math.isnan(v))
            else v.isoformat()  # dates and times travel as ISO-8601 text, as JSON has no time type
            if isinstance(v, datetime.date)
            else v
            for v in values
        ]
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


class _Channel:
    """How requests reach the service: a direct call, or real HTTP on loopback."""

    def __init__(self, service: ModelService, port: int | None) -> None:
        self.service = service
        self.client = None
        if port is not None:
            from mloop.serving.server import JsonClient

            self.client = JsonClient(port)

    def predict(self, rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
        if self.client is None:
            return self.service.predict(rows, key)
        status, body = self.client.post("/predict", {"instances": rows}, {"X-Request-Key": key})
        if status != 200:
            error = (body or {}).get("error", {})
            raise InputError(error.get("message", f"HTTP {status}"), field=error.get("field"))
        return dict(body)

    def feedback(self, items: list[dict[str, Any]]) -> int:
        if self.client is None:
            return self.service.feedback(items)
        status, body = self.client.post("/feedback", {"feedback": items})
        if status != 200:
            error = (body or {}).get("error", {})
            raise InputError(error.get("message", f"HTTP {status}"), field=error.get("field"))
        return int(body["accepted"])

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def replay_stream(
    workspace: Workspace,
    stream: pd.DataFrame,
    target: str,
    *,
    model: str,
    window_rows: int,
    config: LoopConfig,
    batch_rows: int = 200,
    http: bool = False,
    log_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
    on_event: Callable[[LoopEvent], None] | None = None,
) -> Replay:
    """Send ``stream`` (features + ``target``) to ``model``'s service batch by batch, label every
    answer, and let the scheduler react after each window (rollouts after each batch)."""
    root = log_dir or workspace.prediction_log_dir
    policy = config.policy(model)
    serve = ServeConfig(
        model=model,
        canary_fraction=policy.canary_fraction if policy else 0.0,
        poll_interval_s=3600.0,  # no watcher thread: react() refreshes after every registry change
        flush_interval_s=3600.0,  # the replay flushes at the moments that matter
        max_batch_rows=max(batch_rows, 1),
    )
    server = None
    if http:
        from mloop.serving.server import serve_in_thread

        app = create_app(workspace, serve, log_root=root)
        server = serve_in_thread(app)
        service: ModelService = app.state.service
    else:
        service = ModelService(workspace, serve, root)
        service.start()
    channel = _Channel(service, server.port if server else None)
    scheduler = Scheduler(workspace, config, log_dir=root)
    out = Replay([None] * len(stream), [None] * len(stream), [None] * len(stream))
    features = stream.drop(columns=[target])
    labels = stream[target].tolist()

    def note(event: LoopEvent) -> None:
        out.events.append(event)
        if on_event is not None:
            on_event(event)

    last_window = max(len(stream) - 1, 0) // window_rows
    refusals: set[str] = set()

    def react(row: int, tick: TickReport | None, decisions: list[RolloutDecision]) -> None:
        # the window from which a decision serves (one taken after the last batch: the last window)
        window = min(row // window_rows, last_window)
        if tick is not None:
            for ev in tick.events:
                note(LoopEvent(row, window, "trigger", _evidence_text(ev.evidence), trigger=ev.trigger))
            for run_id, status in tick.runs:
                note(LoopEvent(row, window, "run", status, run_id=run_id))
            for name, message in tick.errors.items():
                note(LoopEvent(row, window, "error", f"{name}: {message}"))
            decisions = [*decisions, *tick.rollouts]
        for d in decisions:
            if d.action in ("canary", "promote", "rollback"):
                note(LoopEvent(row, window, d.action, d.reason, version=d.version))
        if any(d.action not in ("none", "wait") for d in decisions) or (tick is not None and tick.runs):
            service.refresh()  # an alias may have moved (a wait moves none)

    try:
        starts = [
            lo
            for w in range(0, len(stream), window_rows)
            for lo in range(w, min(w + window_rows, len(stream)), batch_rows)
        ]
        for lo in starts:  # batches never straddle a window: the scheduler sees whole windows
            hi = min(lo + batch_rows, (lo // window_rows + 1) * window_rows, len(stream))
            try:
                answer = channel.predict(_records(features.iloc[lo:hi]), f"batch-{lo}")
            except InputError as exc:
                out.refused_rows += hi - lo
                answer = None
                reason = re.sub(r"^row \d+: ", "", str(exc))
                if reason not in refusals:  # each reason once: the report says why rows went unanswered
                    refusals.add(reason)
                    note(LoopEvent(lo, lo // window_rows, "refused", f"from row {lo}: {reason}"))
            if answer is not None:
                _keep(out, lo, answer)
                items = [
                    {"prediction_id": pid, "label": labels[lo + i]}
                    for i, pid in enumerate(answer["prediction_ids"])
                ]
                try:
                    channel.feedback(items)
                except MloopError:
                    out.refused_labels += len(items)
            if progress is not None:
                progress(hi - lo)
            # after every batch, as a live scheduler ticking every few seconds would: monitoring
            # windows follow the production version's own traffic, not the replay's windows
            if service.log is not None:
                service.log.flush()
            react(hi, scheduler.tick(), [])
    finally:
        channel.close()
        if server is not None:
            server.stop()
        else:
            service.stop()
    return out


def _keep(out: Replay, lo: int, answer: dict[str, Any]) -> None:
    classes = answer.get("classes")
    probabilities = answer.get("probabilities")
    positive = 1 if classes is not None and len(classes) == 2 else None
    for i, prediction in enumerate(answer["predictions"]):
        out.predictions[lo + i] = prediction
        out.versions[lo + i] = answer["version"]
        if probabilities is not None and positive is not None:
            out.scores[lo + i] = probabilities[i][positive]


def _evidence_text(evidence: dict[str, Any]) -> str:
    if "detail" in evidence:
        return str(evidence["detail"])
    window = evidence.get("window")
    if isinstance(window, dict) and "drift_share" in window:
        return f"drift share {window['drift_share']:.2f}: {', '.join(window.get('drifted', [])[:5])}"
    if "new_files" in evidence:
        return f"{evidence['count']} new file(s)"
    return str(evidence.get("reason", evidence))[:200]
