"""The runner on a real dask.distributed cluster, selected by configuration only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sample_pipelines as sp

import mloop

distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed (mloop[dask])")


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
    ) as cluster:
        yield cluster.scheduler_address


def test_pipeline_runs_on_dask_workers(tmp_path: Path, scheduler: str) -> None:
    data = tmp_path / "numbers.txt"
    data.write_text("1 2 3")
    executor = scheduler.replace("tcp://", "dask://")
    with mloop.Workspace.open(tmp_path / "ws", executor=executor) as ws:
        result = ws.run(sp.numbers, path=str(data), factor=2.0)
        assert result.load("total") == 12.0
        assert {s.status for s in result.steps} == {mloop.StepStatus.SUCCEEDED}
        again = ws.run(sp.numbers, path=str(data), factor=2.0)
        assert {s.status for s in again.steps} == {mloop.StepStatus.CACHED}


def test_unreachable_scheduler_is_a_clear_error(tmp_path: Path) -> None:
    with (
        mloop.Workspace.open(tmp_path / "ws", executor="dask://127.0.0.1:1?timeout=1") as ws,
        pytest.raises(
            mloop.errors.MloopError, match=r"cannot connect to the Dask scheduler at tcp://127\.0\.0\.1:1:"
        ),
    ):
        ws.run(sp.arithmetic)


@pytest.mark.parametrize("timeout", ["soon", "0", "-1", "nan", "1e9"])
def test_a_bad_connect_timeout_names_the_executor(tmp_path: Path, timeout: str) -> None:
    with (
        mloop.Workspace.open(tmp_path / "ws", executor=f"dask://127.0.0.1:1?timeout={timeout}") as ws,
        pytest.raises(mloop.errors.ConfigurationError, match="timeout must be a number of seconds") as info,
    ):
        ws.run(sp.arithmetic)
    assert info.value.field == "executor"


def test_a_step_past_its_timeout_fails_its_run_on_dask_too(tmp_path: Path, scheduler: str) -> None:
    import time

    executor = scheduler.replace("tcp://", "dask://")
    with mloop.Workspace.open(tmp_path / "ws", executor=executor) as ws:
        started = time.monotonic()
        with pytest.raises(mloop.errors.StepFailedError) as failed:
            ws.run(sp.sleepy, seconds=20.0)
        assert time.monotonic() - started < 15
    assert failed.value.step == "sleeps" and failed.value.error_type == "StepTimeoutError"
