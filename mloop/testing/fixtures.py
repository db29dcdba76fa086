"""Running pipelines and steps on a sample, and the pytest plugin (fixtures) built on them.

The plugin is registered through the ``pytest11`` entry point, so installing mloop makes the
``mloop_workspace`` and ``mloop_sample_file`` fixtures available to any project's tests.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mloop.core.pipeline import Pipeline
from mloop.core.runner import RunResult
from mloop.core.step import Step
from mloop.errors import ParameterError
from mloop.testing.checks import assert_finite, assert_lineage
from mloop.testing.sample import write_sample
from mloop.workspace import Workspace

__all__ = [
    "integration_run",
    "mloop_sample_file",
    "mloop_workspace",
    "run_pipeline",
    "run_step",
    "temp_workspace",
]


def temp_workspace(directory: str | Path | None = None) -> Workspace:
    """A fresh embedded workspace (SQLite + artifact folder) under ``directory`` or a new temp folder."""
    root = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="mloop-test-"))
    return Workspace.open(root / ".mloop", metadata_url="", artifact_url="")


def run_pipeline(
    workspace: Workspace,
    pipeline: Pipeline,
    *,
    sample: pd.DataFrame | None = None,
    data_param: str = "data",
    **params: Any,
) -> RunResult:
    """Run ``pipeline`` in ``workspace`` (no cache, trigger ``ci``); ``sample`` is written to a file in
    the workspace and passed as the ``data_param`` parameter."""
    if sample is not None:
        if data_param not in pipeline.signature.parameters:
            raise ParameterError(
                f"pipeline {pipeline.name!r} has no parameter {data_param!r} to pass the sample in",
                field="data_param",
            )
        folder = (workspace.root or Path(tempfile.mkdtemp())) / "samples"
        params[data_param] = str(write_sample(sample, folder / f"{pipeline.name}-{len(sample)}.csv"))
    return workspace.run(pipeline, cache=False, trigger="ci", **params)


def run_step(step: Step, /, *args: Any, **kwargs: Any) -> Any:
    """Call one step's function directly on in-memory values (a unit test of the step's logic)."""
    return step.fn(*args, **kwargs)


def integration_run(
    workspace: Workspace,
    pipeline: Pipeline,
    *,
    sample: pd.DataFrame | None = None,
    data_param: str = "data",
    **params: Any,
) -> RunResult:
    """Run the whole pipeline on the sample, then check its lineage end to end and that every output
    is finite. Returns the run for further checks."""
    result = run_pipeline(workspace, pipeline, sample=sample, data_param=data_param, **params)
    assert_lineage(workspace.metadata, result, pipeline)
    assert_finite(result)
    return result


@pytest.fixture
def mloop_workspace(tmp_path: Path) -> Iterator[Workspace]:
    """A throw-away embedded workspace in the test's temporary directory, closed afterwards."""
    ws = temp_workspace(tmp_path)
    try:
        yield ws
    finally:
        ws.close()


@pytest.fixture
def mloop_sample_file(tmp_path: Path) -> Callable[[pd.DataFrame, str], Path]:
    """A function writing a sample DataFrame to a file in the test's temporary directory."""

    def write(df: pd.DataFrame, name: str = "sample.csv") -> Path:
        return write_sample(df, tmp_path / name)

    return write
