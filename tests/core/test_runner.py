"""Running pipelines: results, cache behaviour, failures and resume, parallel branches."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import sample_pipelines as sp

import mloop
from mloop.core.loader import load_pipeline
from mloop.errors import ArtifactCorruptedError, StepFailedError
from mloop.stores.base import RunQuery


def statuses(result: mloop.RunResult) -> dict[str, str]:
    return {s.name: s.status.value for s in result.steps}


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "numbers.txt"
    path.write_text("1 2 3 4")
    return path


def test_run_records_results_metrics_and_lineage(any_workspace: mloop.Workspace, data_file: Path) -> None:
    result = any_workspace.run(sp.numbers, path=str(data_file), factor=2.0)
    assert result.run.status == mloop.RunStatus.SUCCEEDED
    assert result.load("total") == 20.0
    np.testing.assert_array_equal(result.load("as_array"), [1, 2, 3, 4])
    assert set(statuses(result).values()) == {"succeeded"}
    [metric] = any_workspace.metadata.get_metrics(result.run.id, "rows")
    assert metric.value == 4 and metric.step_run_id == result.step("total").id
    graph = any_workspace.lineage(result.outputs["total"]["output"].id)
    assert {s.name for s in graph.steps.values()} == {"total", "scale", "read_numbers"}
    [source] = [a for a in graph.artifacts.values() if a.type == "file"]
    assert source.uri == data_file.resolve().as_uri()
    down = any_workspace.lineage(source.id, "downstream")
    assert {s.name for s in down.steps.values()} == {"read_numbers", "scale", "total", "as_array"}


def test_lineage_names_the_path_each_run_read_of_the_same_bytes(
    any_workspace: mloop.Workspace, data_file: Path
) -> None:
    """A byte-identical copy is the same artifact, recorded at the first path: the run that read
    the copy was shown reading the original (which may since be gone, or in another project)."""
    copy = data_file.with_name("copy.txt")
    copy.write_bytes(data_file.read_bytes())
    first = any_workspace.run(sp.numbers, path=str(data_file))
    second = any_workspace.run(sp.numbers, path=str(copy), factor=2.0)
    graph = any_workspace.lineage(second.run.id).to_dict()
    [source] = [a for a in graph["artifacts"] if a["type"] == "file"]
    assert source["uri"] == data_file.resolve().as_uri()  # one artifact, its first path
    assert [e["uri"] for e in graph["edges"] if "uri" in e] == [copy.resolve().as_uri()]
    assert all("uri" not in e for e in any_workspace.lineage(first.run.id).to_dict()["edges"])
    events = any_workspace.metadata.events(step_run_ids=[second.step("read_numbers").id], kind="input")
    assert [e.uri for e in events] == [copy.resolve().as_uri()]


def test_second_identical_run_is_fully_cached(workspace: mloop.Workspace, data_file: Path) -> None:
    first = workspace.run(sp.numbers, path=str(data_file))
    second = workspace.run(sp.numbers, path=str(data_file))
    assert set(statuses(second).values()) == {"cached"}
    assert second.outputs == first.outputs  # re-linked, not copied
    assert second.step("total").cached_from == first.step("total").id
    third = workspace.run(sp.numbers, path=str(data_file))
    assert third.step("total").cached_from == first.step("total").id  # points at the real execution


def test_changing_a_parameter_reruns_only_the_affected_steps(
    workspace: mloop.Workspace, data_file: Path
) -> None:
    workspace.run(sp.numbers, path=str(data_file))
    result = workspace.run(sp.numbers, path=str(data_file), factor=3.0)
    assert statuses(result) == {
        "read_numbers": "cached", "as_array": "cached", "scale": "succeeded", "total": "succeeded"
    }  # fmt: skip
    assert result.load("total") == 30.0


def test_changing_input_file_bytes_reruns_its_descendants(
    workspace: mloop.Workspace, data_file: Path
) -> None:
    workspace.run(sp.numbers, path=str(data_file))
    data_file.write_text("1 2 3 5")
    result = workspace.run(sp.numbers, path=str(data_file))
    assert set(statuses(result).values()) == {"succeeded"}
    assert result.load("total") == 11.0
    moved = data_file.with_name("copy.txt")
    moved.write_bytes(data_file.read_bytes())
    assert set(statuses(workspace.run(sp.numbers, path=str(moved))).values()) == {"cached"}  # same bytes


def test_a_list_of_files_is_keyed_by_each_files_bytes(any_workspace: mloop.Workspace, tmp_path: Path) -> None:
    # a list[Path] was keyed by the names alone: a file rewritten under its name gave the old result
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("1 2")
    b.write_text("3")
    first = any_workspace.run(sp.many_numbers, paths=[str(a), str(b)])
    assert first.load("total") == 6.0
    assert set(statuses(any_workspace.run(sp.many_numbers, paths=[str(a), str(b)])).values()) == {"cached"}
    a.write_text("1 2 10")
    changed = any_workspace.run(sp.many_numbers, paths=[str(a), str(b)])
    assert changed.step("read_many").status.value == "succeeded" and changed.load("total") == 16.0
    swapped = any_workspace.run(sp.many_numbers, paths=[str(b), str(a)])  # order is part of the key
    assert swapped.step("read_many").status.value == "succeeded"
    assert any_workspace.run(sp.many_numbers, paths=[]).load("total") == 0.0
    # each file is an input of the step, at the path it was read from
    events = any_workspace.metadata.events(step_run_ids=[changed.step("read_many").id], kind="input")
    assert sorted(e.uri for e in events) == sorted(p.resolve().as_uri() for p in (a, b))
    missing = r"input 'paths\[1\]': file .*gone.txt does not exist"
    with pytest.raises(mloop.errors.ParameterError, match=missing):
        any_workspace.run(sp.many_numbers, paths=[str(a), str(tmp_path / "gone.txt")])


def test_no_cache_executes_everything(workspace: mloop.Workspace, data_file: Path) -> None:
    workspace.run(sp.numbers, path=str(data_file))
    result = workspace.run(sp.numbers, path=str(data_file), cache=False)
    assert set(statuses(result).values()) == {"succeeded"}


MODULE = """
import mloop

def helper(x):
    return x + {offset}

@mloop.step
def first(n: int) -> int:
    \"\"\"{doc}\"\"\"
    return helper(n)  # {comment}

@mloop.step
def second(n: int) -> int:
    return n * {factor}

@mloop.step
def combine(a: int, b: int) -> int:
    return a + b

@mloop.pipeline
def pipe(n: int = 1):
    combine(first(n), second(n))
"""


def _load(tmp_path: Path, **fmt: object) -> mloop.Pipeline:
    values = {"offset": 1, "factor": 2, "doc": "doc", "comment": "c"} | fmt
    path = tmp_path / "user_pipeline.py"
    path.write_text(textwrap.dedent(MODULE.format(**values)))
    return load_pipeline(f"{path}:pipe")


def test_code_changes_rerun_exactly_the_affected_steps(workspace: mloop.Workspace, tmp_path: Path) -> None:
    workspace.run(_load(tmp_path))
    docs_only = workspace.run(_load(tmp_path, doc="a much longer docstring", comment="another comment"))
    assert set(statuses(docs_only).values()) == {"cached"}
    step_changed = workspace.run(_load(tmp_path, factor=3))
    assert statuses(step_changed) == {"first": "cached", "second": "succeeded", "combine": "succeeded"}
    helper_changed = workspace.run(_load(tmp_path, factor=3, offset=10))
    assert statuses(helper_changed) == {"first": "succeeded", "second": "cached", "combine": "succeeded"}
    assert helper_changed.load("combine") == 11 + 3


def test_a_running_run_is_not_resumed(workspace: mloop.Workspace, data_file: Path) -> None:
    # --resume of a run still in progress started a second execution of its steps beside it
    live = workspace.metadata.create_run(
        sp.numbers.name, params={"path": str(data_file)}, trigger="manual", code_commit=None, code_hash="x"
    )
    with pytest.raises(mloop.errors.ConflictError, match=f"run {live.id} is still running"):
        workspace.run(sp.numbers, resume=live.id)
    runs = workspace.metadata.search_runs(RunQuery(pipeline=sp.numbers.name))
    assert [r.id for r in runs] == [live.id]  # nothing else was recorded


def test_failing_step_is_recorded_and_resume_continues(workspace: mloop.Workspace, tmp_path: Path) -> None:
    flag = tmp_path / "fail"
    flag.write_text("yes")

    @mloop.step
    def prepare(n: int) -> int:
        return n + 1

    @mloop.step
    def fragile(n: int, flag_path: str) -> int:
        if Path(flag_path).read_text() == "yes":
            raise ValueError("flaky upstream service")
        return n * 10

    @mloop.pipeline
    def pipe(n: int = 1, flag_path: str = ""):
        fragile(prepare(n), flag_path)

    with pytest.raises(
        StepFailedError, match="step 'fragile' failed: ValueError: flaky upstream service"
    ) as info:
        workspace.run(pipe, flag_path=str(flag))
    failed = workspace.metadata.get_run(info.value.run_id)
    assert failed.status == mloop.RunStatus.FAILED and "flaky upstream service" in (failed.error or "")
    steps = {s.name: s for s in workspace.metadata.list_steps(failed.id)}
    assert steps["fragile"].error_type == "ValueError"
    assert steps["fragile"].error_message == "flaky upstream service"
    assert "raise ValueError" in (steps["fragile"].error_traceback or "")
    assert steps["prepare"].status == mloop.StepStatus.SUCCEEDED

    flag.write_text("no")
    resumed = workspace.run(pipe, resume=failed.id)
    assert resumed.run.resumed_from == failed.id and resumed.run.params == failed.params
    assert statuses(resumed) == {"prepare": "cached", "fragile": "succeeded"}
    assert resumed.load("fragile") == 20


def test_parallel_branches_run_concurrently(workspace: mloop.Workspace) -> None:
    started = time.perf_counter()
    result = workspace.run(sp.two_branches)  # each branch waits on a 2-party barrier
    assert set(statuses(result).values()) == {"succeeded"}
    assert time.perf_counter() - started < 10


def test_sequential_executor_cannot_pass_the_barrier(tmp_path: Path) -> None:
    with mloop.Workspace.open(tmp_path / "one", max_workers=1) as ws, pytest.raises(StepFailedError):
        ws.run(sp.two_branches, n=5)
    sp.BARRIER.reset()


def test_output_without_serializer_fails_the_step(workspace: mloop.Workspace) -> None:
    @mloop.step
    def make() -> object:
        return object()

    @mloop.pipeline
    def pipe():
        make()

    with pytest.raises(
        StepFailedError,
        match=r"step 'make' output 'output': no serializer for a value of type builtins.object",
    ):
        workspace.run(pipe)


def test_corrupted_artifact_is_refused_on_read(workspace: mloop.Workspace, data_file: Path) -> None:
    result = workspace.run(sp.numbers, path=str(data_file))
    ref = result.outputs["total"]["output"]
    Path(ref.uri).write_bytes(b"123.0")
    with pytest.raises(ArtifactCorruptedError, match="corrupted"):
        result.load("total")


def test_corrupted_cached_output_is_recomputed_and_repaired(
    workspace: mloop.Workspace, data_file: Path
) -> None:
    first = workspace.run(sp.numbers, path=str(data_file), factor=2.0)
    ref = first.outputs["total"]["output"]
    Path(ref.uri).write_bytes(b"9" * ref.size)  # same size, wrong bytes
    again = workspace.run(sp.numbers, path=str(data_file), factor=2.0)
    assert again.step("total").status == mloop.StepStatus.SUCCEEDED  # not re-linked from the cache
    assert again.step("scale").status == mloop.StepStatus.CACHED
    assert again.load("total") == 20.0 and first.load("total") == 20.0  # the bytes were rewritten


def test_no_cache_run_repairs_a_corrupted_output(workspace: mloop.Workspace, data_file: Path) -> None:
    first = workspace.run(sp.numbers, path=str(data_file))
    Path(first.outputs["total"]["output"].uri).write_bytes(b"123.0")
    with pytest.raises(ArtifactCorruptedError):
        first.load("total")
    again = workspace.run(sp.numbers, path=str(data_file), cache=False)
    assert first.load("total") == again.load("total")


def test_deleted_artifact_bytes_are_recomputed_not_reused(
    workspace: mloop.Workspace, data_file: Path
) -> None:
    first = workspace.run(sp.numbers, path=str(data_file), factor=2.0)
    Path(first.outputs["scale"]["output"].uri).unlink()
    again = workspace.run(sp.numbers, path=str(data_file), factor=2.0)
    assert again.step("scale").status == mloop.StepStatus.SUCCEEDED
    assert again.step("read_numbers").status == mloop.StepStatus.CACHED


def test_log_metric_outside_a_step_is_an_error() -> None:
    with pytest.raises(mloop.errors.MloopError, match="outside a running step"):
        mloop.log_metric("x", 1.0)


def test_in_place_mutation_never_leaks_between_consumers(workspace: mloop.Workspace) -> None:
    import pandas as pd

    @mloop.step
    def make() -> pd.DataFrame:
        return pd.DataFrame({"x": [1.0, 2.0]})

    @mloop.step
    def vandal(df: pd.DataFrame) -> float:
        df["x"] = 0.0  # mutates its input in place
        return 0.0

    @mloop.step
    def reader(df: pd.DataFrame) -> float:
        return float(df["x"].sum())

    @mloop.pipeline
    def pipe():
        df = make()
        vandal(df)
        reader(df)

    result = workspace.run(pipe, cache=False)
    assert result.load("reader") == 3.0
    assert result.load("make")["x"].tolist() == [1.0, 2.0]


# step timeouts --------------------------------------------------------------------------------------

_RELEASE = threading.Event()  # what a hung step waits for; set by each test once it has asserted


@mloop.step(timeout=0.5)
def _hangs(x: int) -> int:
    _RELEASE.wait(120)
    return x


@mloop.step
def _hangs_without_timeout(x: int) -> int:
    _RELEASE.wait(120)
    return x


@mloop.step(timeout=30)
def _quick(x: int) -> int:
    return x + 1


@mloop.pipeline
def hung(x: int) -> None:
    _quick(x)
    _hangs(x)


@mloop.pipeline
def hung_by_default(x: int) -> None:
    _hangs_without_timeout(x)


def test_a_step_past_its_timeout_fails_its_run_without_waiting_for_it(workspace: mloop.Workspace) -> None:
    """A hung step (a fit that never converges, a stalled read) held its run, and the scheduler
    that started it, forever: nothing ever failed it while its heartbeat kept it alive."""
    _RELEASE.clear()
    started = time.monotonic()
    try:
        with pytest.raises(StepFailedError) as failed:
            workspace.run(hung, x=1)
        took = time.monotonic() - started
    finally:
        _RELEASE.set()
    assert took < 60, took  # the step waits 120 s: failing sooner means the run did not wait for it
    assert failed.value.step == "_hangs" and failed.value.error_type == "StepTimeoutError"
    assert "timeout of 0.5 s" in failed.value.message
    [run] = workspace.runs()
    steps = {s.name: s for s in workspace.metadata.list_steps(run.id)}
    assert run.status == mloop.RunStatus.FAILED and "StepTimeoutError" in (run.error or "")
    assert steps["_hangs"].status.value == "failed" and steps["_hangs"].error_type == "StepTimeoutError"
    assert steps["_quick"].status.value == "succeeded"  # the branch beside it finished as usual


def test_the_workspace_timeout_bounds_steps_without_their_own(tmp_path: Path) -> None:
    _RELEASE.clear()
    try:
        with mloop.Workspace.open(tmp_path / "ws", step_timeout_s=0.5) as ws:
            with pytest.raises(StepFailedError) as failed:
                ws.run(hung_by_default, x=1)
            assert ws.run(sp.numbers, path=str(_numbers(tmp_path)), factor=2.0).load("total") == 20.0
    finally:
        _RELEASE.set()
    assert failed.value.error_type == "StepTimeoutError" and "0.5 s" in failed.value.message


def _numbers(folder: Path) -> Path:
    path = folder / "numbers.txt"
    path.write_text("1 2 3 4")
    return path


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("-inf"), "10m", True, 1j])
def test_a_timeout_that_is_not_a_positive_duration_is_refused(timeout: object) -> None:
    with pytest.raises(mloop.errors.PipelineDefinitionError) as refused:
        mloop.step(timeout=timeout)(lambda x: x)  # type: ignore[arg-type]
    assert refused.value.field == "timeout" and "positive number of seconds" in refused.value.message


def test_a_timeout_is_any_real_number_of_seconds_and_a_huge_one_is_no_limit() -> None:
    from datetime import timedelta

    def timeout_s(timeout: object) -> float | None:
        return mloop.step(timeout=timeout)(lambda x: x).timeout_s  # type: ignore[arg-type]

    assert timeout_s(timedelta(minutes=2)) == 120.0 and timeout_s(np.int64(5)) == 5.0
    # a step opts out of the workspace's step_timeout_s with math.inf; 1e10 s crashed a wait
    for unlimited in (float("inf"), timedelta.max, 1e10, 10**400):
        assert timeout_s(unlimited) == float("inf")


_REFUSED: list[str] = []


@mloop.step(timeout=0.5)
def _late(x: int) -> int:
    _RELEASE.wait(120)
    try:  # after its timeout: the run has failed, so a model it registered now would ship from it
        mloop.steps.workspace()
    except mloop.MloopError as exc:
        _REFUSED.append(exc.message)
    return x


@mloop.step
def _after(x: int) -> int:
    return x


@mloop.pipeline
def late_then_queued(x: int) -> None:
    _after(_late(x))
    _quick(x)


@mloop.step(timeout=1)
def _brief(x: int) -> int:
    time.sleep(0.2)
    return x


@mloop.step
def _long(x: int) -> int:
    time.sleep(1.5)
    return x


@mloop.pipeline
def queued_behind_a_long_step(x: int) -> None:
    _long(x)
    _brief(x)


def test_a_timed_out_step_may_not_use_the_workspace_and_queued_steps_never_start(tmp_path: Path) -> None:
    """One worker: the queued step waited behind the abandoned thread, so the run hung after its
    step's timeout; and the abandoned step could still register and promote a model."""
    _RELEASE.clear()
    _REFUSED.clear()
    try:
        with mloop.Workspace.open(tmp_path / "ws", max_workers=1) as ws:
            started = time.monotonic()
            with pytest.raises(StepFailedError) as failed:
                ws.run(late_then_queued, x=1)
            assert time.monotonic() - started < 60 and failed.value.step == "_late"
            [run] = ws.runs()
            steps = {s.name: s.status.value for s in ws.metadata.list_steps(run.id)}
            assert steps == {"_late": "failed", "_quick": "skipped"}  # _after never became ready
            _RELEASE.set()
            deadline = time.monotonic() + 30
            while not _REFUSED and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        _RELEASE.set()
    assert _REFUSED and "ran past its timeout" in _REFUSED[0]


def test_a_step_waiting_in_the_queue_is_not_timed(tmp_path: Path) -> None:
    with mloop.Workspace.open(tmp_path / "ws", max_workers=1) as ws:
        result = ws.run(queued_behind_a_long_step, x=1)  # waits 1.5 s for the worker, runs 0.2 s
    assert {s.status.value for s in result.steps} == {"succeeded"}


def test_a_step_opts_out_of_the_workspace_timeout_with_no_limit(tmp_path: Path) -> None:
    @mloop.step(timeout=float("inf"))
    def unlimited(x: int) -> int:
        time.sleep(1)
        return x

    @mloop.pipeline
    def p(x: int) -> None:
        unlimited(x)

    with mloop.Workspace.open(tmp_path / "ws", step_timeout_s=0.3) as ws:
        assert {s.status.value for s in ws.run(p, x=1).steps} == {"succeeded"}
