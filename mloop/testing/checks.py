"""Assertions for pipeline CI: the model converged, nothing is NaN/inf, each step wrote what it should,
and the lineage of a run is whole.

Every failure is a :class:`CheckFailed` (an ``AssertionError``, so pytest reports it as a failed test)
whose message and attributes name the check, the step and the offending value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mloop.core.graph import OutputRef
from mloop.core.pipeline import Pipeline
from mloop.core.runner import RunResult
from mloop.entities import StepStatus
from mloop.stores.base import LineageStore

__all__ = ["CheckFailed", "assert_artifacts", "assert_converges", "assert_finite", "assert_lineage"]


class CheckFailed(AssertionError):
    """A CI check failed: ``check`` (converges, finite, artifacts, lineage), ``step`` and ``value``."""

    def __init__(self, check: str, step: str | None, value: Any, detail: str) -> None:
        self.check, self.step, self.value, self.detail = check, step, value, detail
        where = f" at step {step!r}" if step else ""
        super().__init__(f"check {check} failed{where}: {detail} (value: {_short(value)})")

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "step": self.step, "value": _short(self.value), "detail": self.detail}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _step_value(run: RunResult, step: str | None) -> tuple[str, Any]:
    if step is None:
        raise TypeError("give step=NAME to check a step's output of a run")
    if step not in run.outputs:
        raise CheckFailed("artifacts", step, sorted(run.outputs), "the run has no output of this step")
    outputs = run.outputs[step]
    name = "output" if "output" in outputs else next(iter(outputs))
    return step, run.load(step, name)


def assert_converges(obj: Any, *, step: str | None = None) -> None:
    """The fit converged: an sklearn estimator's ``n_iter_`` is below its ``max_iter``, or a loss curve
    (a sequence, or an estimator's ``loss_curve_``) ends lower than it starts and is finite.

    ``obj`` may be a RunResult with ``step=`` naming the step whose output is the model.
    """
    if isinstance(obj, RunResult):
        step, obj = _step_value(obj, step)
    curve = getattr(obj, "loss_curve_", None)
    if curve is None and isinstance(obj, Sequence | np.ndarray) and not isinstance(obj, str):
        curve = obj
    n_iter, max_iter = getattr(obj, "n_iter_", None), getattr(obj, "max_iter", None)
    if n_iter is not None and isinstance(max_iter, int | float):
        worst = int(np.max(np.asarray(n_iter)))
        if worst >= max_iter:
            raise CheckFailed(
                "converges",
                step,
                worst,
                f"{type(obj).__name__} stopped at max_iter={max_iter} without converging (n_iter_={worst})",
            )
        return
    if curve is not None:
        losses = [float(x) for x in curve]
        if not losses or not all(math.isfinite(x) for x in losses):
            raise CheckFailed("converges", step, losses, "the loss curve is empty or not finite")
        if len(losses) > 1 and not losses[-1] < losses[0]:
            raise CheckFailed(
                "converges", step, losses[-1], f"the loss did not decrease (first {losses[0]:.6g})"
            )
        return
    raise CheckFailed(
        "converges", step, type(obj).__name__, "no n_iter_/max_iter or loss curve to judge convergence by"
    )


def _non_finite(value: Any, path: str) -> tuple[str, Any] | None:
    """The first non-finite number in ``value`` (with where it sits), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | np.number):
        return None if math.isfinite(float(value)) else (path, value)
    if isinstance(value, pd.DataFrame):
        for col in value.columns:
            found = _non_finite(value[col], f"{path}[{col!r}]")
            if found:
                return found
        return None
    if isinstance(value, pd.Series | np.ndarray):
        arr = np.asarray(value)
        if arr.dtype.kind in "fc":
            bad = ~np.isfinite(arr)
            if value.__class__ is pd.Series:  # nullable data columns may hold missing values by design
                bad &= ~pd.isna(value).to_numpy()
            if bad.any():
                index = tuple(int(i) for i in np.argwhere(bad)[0])
                return f"{path}{list(index)}", arr[index]
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _non_finite(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _non_finite(item, f"{path}[{i}]")
            if found:
                return found
        return None
    for attr in ("coef_", "intercept_", "feature_importances_", "metrics"):  # fitted models, evaluations
        if hasattr(value, attr):
            found = _non_finite(getattr(value, attr), f"{path}.{attr}")
            if found:
                return found
    return None


def assert_finite(value: Any, *, step: str | None = None, what: str = "value") -> None:
    """No NaN or infinity in predictions, probabilities, metrics or artifacts.

    ``value`` may be an array, a DataFrame, a dict of metrics, a fitted model (its coefficients), or a
    RunResult: then every output of every step (or only ``step``'s) is checked. A table's missing
    values are legitimate input, so NaN in a DataFrame column fails only where a step introduced it: a
    numeric column of a step's output holding NaN/inf that is new, or that none of the step's input
    tables had NaN/inf in (the failure names the step, the column and the count). For a step that
    reads no table but loads CSV/Parquet files named by its parameters, the files are its inputs; NaN
    the file already had is the data's own.
    """
    if isinstance(value, RunResult):
        for node, outputs in value.outputs.items():
            if step is not None and node != step:
                continue
            inputs = [value.load(n, o) for n, o in value.upstream.get(node, []) if n in value.outputs]
            tables = [t for t in inputs if isinstance(t, pd.DataFrame)]
            if not tables:  # a step that loads its data from files: those files are what it read
                tables = _files_read(value, node)
            for name in outputs:
                out = value.load(node, name)
                if isinstance(out, pd.DataFrame) and tables:
                    _introduced(out, tables, node, name)
                assert_finite(out, step=node, what=name)
        return
    found = _non_finite(value, what)
    if found is not None:
        raise CheckFailed("finite", step, found[1], f"{found[0]} is not finite")


def _files_read(run: RunResult, node: str) -> list[pd.DataFrame]:
    """The CSV/Parquet files a step's string parameters name (relative paths from the current
    folder, as the step opened them): a feature step that loads a file and computes ``log(x)`` in
    the same step introduced the NaN its output holds where the file had none."""
    try:
        params = run.step(node).params
    except KeyError:
        return []
    tables = []
    for value in params.values():
        if not isinstance(value, str) or not value.lower().endswith((".csv", ".parquet")):
            continue
        path = Path(value)
        if not path.is_file():
            continue
        try:
            tables.append(pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path))
        except (OSError, ValueError):
            continue
    return tables


def _non_finite_count(column: pd.Series) -> int:
    values = column.to_numpy(dtype=float, na_value=np.nan)
    return int((~np.isfinite(values)).sum())


def _numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _introduced(out: pd.DataFrame, inputs: Sequence[pd.DataFrame], step: str, name: str) -> None:
    """CheckFailed for the first numeric column of ``out`` with NaN/inf its step introduced."""
    for col in out.columns:
        if not _numeric(out[col]):
            continue
        count = _non_finite_count(out[col])
        if not count:
            continue
        before = [t[col] for t in inputs if col in t.columns]
        if any((_non_finite_count(c) if _numeric(c) else int(c.isna().sum())) for c in before):
            continue  # already missing in what the step read: not the step's doing
        how = "a new column" if not before else "its inputs had none there"
        raise CheckFailed(
            "finite",
            step,
            count,
            f"output {name!r} column {col!r} has {count} NaN/inf value(s) the step introduced ({how})",
        )


def _shape_ok(actual: tuple[int, ...], expected: Sequence[int | None]) -> bool:
    return len(actual) == len(expected) and all(
        e is None or a == e for a, e in zip(actual, expected, strict=True)
    )


def assert_artifacts(run: RunResult, expected: Mapping[str, Any]) -> None:
    """Each step produced the outputs declared in ``expected``.

    ``expected`` maps a step to a type (its single output), to ``(type, shape)`` with ``None`` as a
    wildcard dimension, or to a dict of output name → either of those.
    """
    for step, spec in expected.items():
        if step not in run.outputs:
            raise CheckFailed("artifacts", step, sorted(run.outputs), "the step produced no outputs")
        specs = spec if isinstance(spec, Mapping) else {"output": spec}
        for output, want in specs.items():
            if output not in run.outputs[step]:
                raise CheckFailed(
                    "artifacts", step, sorted(run.outputs[step]), f"output {output!r} is missing"
                )
            kind, shape = want if isinstance(want, tuple) else (want, None)
            value = run.load(step, output)
            if kind is not None and not isinstance(value, kind):
                raise CheckFailed(
                    "artifacts",
                    step,
                    type(value).__name__,
                    f"output {output!r} should be a {getattr(kind, '__name__', kind)}",
                )
            if shape is not None:
                actual = tuple(getattr(value, "shape", (len(value),) if hasattr(value, "__len__") else ()))
                if not _shape_ok(actual, shape):
                    raise CheckFailed(
                        "artifacts", step, actual, f"output {output!r} should have shape {tuple(shape)}"
                    )


def assert_lineage(metadata: LineageStore, run: RunResult, pipeline: Pipeline) -> None:
    """The run is whole end to end: every step succeeded (or was cached), wrote its outputs, and read
    exactly the artifacts its upstream steps wrote in this run."""
    steps = {s.name: s for s in run.steps}
    for name, node in pipeline.graph.nodes.items():
        s = steps.get(name)
        if s is None:
            raise CheckFailed("lineage", name, None, "the step has no execution in the run")
        if s.status not in (StepStatus.SUCCEEDED, StepStatus.CACHED):
            raise CheckFailed("lineage", name, s.status.value, "the step did not succeed")
        outputs = {e.name: e.artifact_id for e in metadata.events(step_run_ids=[s.id], kind="output")}
        for out in node.step.outputs:
            if out not in outputs:
                raise CheckFailed("lineage", name, sorted(outputs), f"no output event for {out!r}")
        read = {e.name: e.artifact_id for e in metadata.events(step_run_ids=[s.id], kind="input")}
        for arg, source in node.inputs.items():
            if not isinstance(source, OutputRef):
                continue
            upstream = run.outputs.get(source.node, {}).get(source.output)
            if upstream is None or read.get(arg) != upstream.id:
                raise CheckFailed(
                    "lineage",
                    name,
                    read.get(arg),
                    f"input {arg!r} is not linked to {source.node}.{source.output} of this run",
                )
