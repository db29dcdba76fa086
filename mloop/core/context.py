"""What a running step may tell the runner: metrics and params, through a tiny context API.

The values are collected while the step runs and recorded with the step's outcome in one transaction.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from mloop.errors import MloopError, ParameterError

__all__ = [
    "StepContext",
    "current_input_artifact",
    "current_run_id",
    "current_workspace",
    "log_input",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
]


@dataclass
class StepContext:
    """Metrics and params logged by the step currently running in this thread."""

    run_id: str
    step: str
    workspace: object = None  # opaque here: mloop.steps.workspace() gives it back its type
    inputs: dict[str, Any] = field(default_factory=dict)
    metrics: list[tuple[str, float, int]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    used: dict[str, Any] = field(default_factory=dict)  # name → NewArtifact read besides the inputs
    abandoned: Any = None  # a threading.Event the runner sets once the step ran past its timeout


_CURRENT: ContextVar[StepContext | None] = ContextVar("mloop_step_context", default=None)


@contextmanager
def step_context(
    run_id: str,
    step: str,
    workspace: object = None,
    inputs: dict[str, Any] | None = None,
    abandoned: Any = None,
) -> Iterator[StepContext]:
    ctx = StepContext(run_id, step, workspace, dict(inputs or {}), abandoned=abandoned)
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


def _current(what: str) -> StepContext:
    ctx = _CURRENT.get()
    if ctx is None:
        raise MloopError(
            f"mloop.{what}() was called outside a running step; use Workspace.start_run() instead"
        )
    return ctx


def current_run_id() -> str:
    """The id of the run the current step belongs to."""
    return _current("current_run_id").run_id


def current_input_artifact(name: str) -> Any:
    """The stored artifact (ArtifactRef) an input of the current step was read from, if any."""
    return _current("current_input_artifact").inputs.get(name)


def current_workspace() -> object:
    """The workspace running the current step, for steps that use the registry (in-process only)."""
    ctx = _current("current_workspace")
    if ctx.workspace is None:
        raise MloopError(
            f"step {ctx.step!r} needs the workspace (model registry); run it with the in-process executor"
        )
    if ctx.abandoned is not None and ctx.abandoned.is_set():
        # its run already failed: a model it registered or promoted now would ship from a failed run
        raise MloopError(
            f"step {ctx.step!r} ran past its timeout and its run has failed: it may not use the "
            "workspace any more"
        )
    return ctx.workspace


def log_metric(key: str, value: float, step: int = 0) -> None:
    """Record a metric of the running step (``step`` orders values of one key, e.g. epochs)."""
    _current("log_metric").metrics.append((key, _number(key, value), int(step)))


def log_metrics(metrics: Mapping[str, float], step: int = 0) -> None:
    """Record several metrics of the running step at once."""
    ctx = _current("log_metrics")
    ctx.metrics.extend((k, _number(k, v), int(step)) for k, v in metrics.items())


def log_input(name: str, artifact: Any) -> None:
    """Record that the running step read something that is not one of its inputs (a source file, a
    database table, a feature-view version), given as a ``NewArtifact``, so lineage shows it as an
    input of this execution."""
    ctx = _current("log_input")
    if name in ctx.used:
        raise ParameterError(f"step {ctx.step!r} already logged an input named {name!r}", field=name)
    ctx.used[name] = artifact


def log_param(key: str, value: Any) -> None:
    """Record a JSON-serialisable parameter the running step chose (e.g. a tuned hyperparameter)."""
    _current("log_param").params[key] = value


def log_params(params: Mapping[str, Any]) -> None:
    """Record several parameters of the running step at once."""
    _current("log_params").params.update(params)


def _number(key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"metric {key!r}: value {value!r} is not a number", field=key) from exc
    if math.isnan(number):
        raise ParameterError(f"metric {key!r}: value is NaN", field=key)
    return number
