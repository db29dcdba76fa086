"""Crash and concurrency behaviour with real processes."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sample_pipelines as sp

import mloop


def test_sigkilled_run_is_marked_failed_on_next_open(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    script = tmp_path / "slow.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        import mloop

        @mloop.step
        def slow(n: int) -> int:
            Path({str(marker)!r}).write_text("x")
            time.sleep(60)
            return n

        @mloop.pipeline
        def pipe(n: int = 1):
            slow(n)

        with mloop.Workspace.open(sys.argv[1]) as ws:
            ws.run(pipe)
    """)
    )
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "ws")])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the child exited early"
            assert time.monotonic() < deadline, "the step never started"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        [run] = ws.runs()
        assert run.status == mloop.RunStatus.FAILED
        assert f"process {proc.pid}" in (run.error or "") and "died" in (run.error or "")
        [step] = ws.metadata.list_steps(run.id)
        assert step.status == mloop.StepStatus.FAILED and step.error_type == "StaleRun"


@pytest.mark.slow
def test_eight_processes_share_one_workspace(tmp_path: Path, metadata_url: str) -> None:
    workers, runs = 8, 5
    root = str(tmp_path / "shared")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        results = pool.map(sp.concurrent_worker, [(root, metadata_url, w, runs) for w in range(workers)])
    ids = [run_id for worker_ids in results for run_id in worker_ids]
    assert len(set(ids)) == workers * (runs + 1)
    with mloop.Workspace.open(root, metadata_url=metadata_url) as ws:
        recorded = ws.runs(mloop.RunQuery(limit=1000))
        assert {r.id for r in recorded} == set(ids)
        assert all(r.status == mloop.RunStatus.SUCCEEDED for r in recorded)
        for run in recorded:
            if run.pipeline == "tracking":
                assert len(ws.metadata.get_metrics(run.id, "loss")) == 20
                continue
            steps = ws.metadata.list_steps(run.id)
            assert sorted(s.name for s in steps) == ["add", "seed", "seed_b", "square"]
            n = run.params["n"]
            events = ws.metadata.events(step_run_ids=[s.id for s in steps if s.name == "add"], kind="output")
            [out] = events
            art = ws.metadata.get_artifact(out.artifact_id)
            assert ws.artifacts.get(art.digest) == str(n * n + n).encode()


@pytest.mark.slow
def test_eight_processes_register_and_move_aliases(tmp_path: Path, metadata_url: str) -> None:
    workers, per_worker = 8, 6
    root = str(tmp_path / "shared")
    mloop.Workspace.open(root, metadata_url=metadata_url).close()  # schema first: the race is the registry's
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        results = pool.map(sp.registry_worker, [(root, metadata_url, w, per_worker) for w in range(workers)])
    numbers = sorted(n for worker in results for n in worker)
    assert numbers == list(range(1, workers * per_worker + 1))  # unique and gap-free
    with mloop.Workspace.open(root, metadata_url=metadata_url) as ws:
        registry = ws.registry
        versions = registry.versions("shared")
        assert [v.version for v in versions] == numbers
        history = registry.history("shared")
        assert len(history) == workers * per_worker  # every move recorded
        for alias in ("production", "canary"):
            moves = [e for e in history if e.alias == alias]
            # each move starts from the holder the previous move left: one holder at every moment
            assert all(a.to_version == b.from_version for a, b in itertools.pairwise(moves))
            assert moves[0].from_version is None
            assert registry.get("shared", alias=alias).version == moves[-1].to_version


def test_open_tracking_run_heartbeats_and_is_not_marked_stale(tmp_path: Path) -> None:
    """A tracking run that logs rarely stays running: its heartbeat (every stale_after_s / 4) keeps it
    alive for other processes that open the workspace and fail stale runs."""
    with mloop.Workspace.open(tmp_path / "ws", stale_after_s=2.0) as ws, ws.start_run("live") as tr:
        started = ws.metadata.get_run(tr.id)
        for i in range(2):
            tr.log_metric("loss", 1.0 / (i + 1), step=i)
            time.sleep(2.0)  # longer than stale_after_s between two log calls
        with mloop.Workspace.open(tmp_path / "ws", stale_after_s=2.0) as other:
            run = other.metadata.get_run(tr.id)
            assert run.status == mloop.RunStatus.RUNNING, run.error
    assert ws_run_status(tmp_path / "ws", tr.id) == mloop.RunStatus.SUCCEEDED
    assert started.status == mloop.RunStatus.RUNNING


def ws_run_status(path: Path, run_id: str) -> mloop.RunStatus:
    with mloop.Workspace.open(path) as ws:
        return ws.metadata.get_run(run_id).status


@mloop.step
def sleepy(n: int) -> int:
    time.sleep(4.0)
    return n


@mloop.pipeline
def sleepy_pipeline(n: int = 1):
    sleepy(n)


def test_pipeline_runs_heartbeat_well_inside_a_short_stale_limit(tmp_path: Path) -> None:
    """The heartbeat interval follows stale_after_s (at most a quarter of it), whatever heartbeat_s says."""
    import threading

    results: list[mloop.RunResult] = []
    with mloop.Workspace.open(tmp_path / "ws", stale_after_s=2.0) as ws:
        worker = threading.Thread(target=lambda: results.append(ws.run(sleepy_pipeline)))
        worker.start()
        time.sleep(3.0)
        with mloop.Workspace.open(tmp_path / "ws", stale_after_s=2.0) as other:
            [run] = other.runs()
            assert run.status == mloop.RunStatus.RUNNING, run.error
        worker.join(timeout=60)
    assert results and results[0].run.status == mloop.RunStatus.SUCCEEDED
