"""A monitoring trigger that cannot fire before its model's log grows is skipped by the passes in
between (no lease, no state read or write), and fires exactly where a full evaluation would."""

from __future__ import annotations

from pathlib import Path

from loop_helpers import MODEL, serve_rows, service, stream, train_first

import mloop
from mloop.orchestration.config import LoopConfig
from mloop.orchestration.scheduler import Scheduler


def _config(tmp_path: Path) -> LoopConfig:
    pipeline = f"{tmp_path / 'noop.py'}:noop"
    (tmp_path / "noop.py").write_text(
        "import mloop\n\n@mloop.step\ndef nothing() -> int:\n    return 0\n\n"
        "@mloop.pipeline\ndef noop(since: str = '') -> None:\n    nothing()\n"
    )
    return LoopConfig.parse(
        {
            "triggers": [
                {"name": "drift", "kind": "drift", "model": MODEL, "window": 200, "pipeline": pipeline},
                {"name": "worse", "kind": "degradation", "model": MODEL, "window": 200, "pipeline": pipeline},
            ]
        }
    )


def test_a_trigger_waiting_for_a_window_is_skipped_until_the_log_has_it(
    workspace: mloop.Workspace, tmp_path: Path
) -> None:
    rows = stream(1400, drift_at=800, seed=4)
    train_first(workspace, rows.iloc[:600], tmp_path)
    log_dir = tmp_path / "log"
    svc = service(workspace, log_dir)
    scheduler = Scheduler(workspace, _config(tmp_path), log_dir=log_dir)
    other = Scheduler(workspace, _config(tmp_path), log_dir=log_dir)  # a second daemon, no memory

    serve_rows(svc, rows.iloc[600:750])  # 150 rows: no complete window of 200
    first = scheduler.tick()
    assert "worse" in first.checks and "drift" in first.checks
    evaluated = {n: workspace.triggers.state(n).evaluated_at for n in ("drift", "worse")}

    second = scheduler.tick()  # nothing new: skipped, and says what it said before
    assert second.checks == first.checks
    assert {n: workspace.triggers.state(n).evaluated_at for n in evaluated} == evaluated

    other.tick()  # a scheduler without that memory still evaluates (and writes its state)
    assert workspace.triggers.state("worse").evaluated_at > evaluated["worse"]
    evaluated = {n: workspace.triggers.state(n).evaluated_at for n in ("drift", "worse")}

    serve_rows(svc, rows.iloc[750:790])  # 190 rows: still short of a window
    scheduler.tick()
    assert {n: workspace.triggers.state(n).evaluated_at for n in evaluated} == evaluated

    serve_rows(svc, rows.iloc[790:800])  # 200: the first window is complete, judged at once
    third = scheduler.tick()
    assert workspace.triggers.state("worse").evaluated_at > evaluated["worse"]
    assert workspace.triggers.state("worse").watermark["index"] == 0
    assert not third.events

    for lo in range(800, 1400, 100):
        serve_rows(svc, rows.iloc[lo : lo + 100])
        scheduler.tick()
    svc.stop()


def _firings(folder: Path, *, remember: bool) -> list[tuple[int, str, str]]:
    rows = stream(1600, drift_at=900, seed=5)
    with mloop.Workspace.open(folder / "ws") as ws:
        train_first(ws, rows.iloc[:600], folder)
        svc = service(ws, folder / "log")
        scheduler = Scheduler(ws, _config(folder), log_dir=folder / "log")
        fired = []
        for lo in range(600, 1600, 50):
            serve_rows(svc, rows.iloc[lo : lo + 50])
            if not remember:
                scheduler._quiet.clear()
            report = scheduler.tick()
            fired += [(lo, e.trigger, e.event_key.split("@")[0]) for e in report.events]
        svc.stop()
    return fired


def test_skipping_quiet_passes_fires_at_the_same_rows_as_evaluating_every_pass(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    skipping = _firings(tmp_path / "a", remember=True)
    assert skipping, "the concept flip must fire a trigger"
    assert skipping == _firings(tmp_path / "b", remember=False)


def test_a_trigger_waits_out_a_canary_without_evaluating_until_an_alias_moves(
    workspace: mloop.Workspace, tmp_path: Path
) -> None:
    rows = stream(1200, drift_at=700, seed=6)
    train_first(workspace, rows.iloc[:600], tmp_path)
    log_dir = tmp_path / "log"
    svc = service(workspace, log_dir)
    scheduler = Scheduler(workspace, _config(tmp_path), log_dir=log_dir)
    workspace.promote(MODEL, 1, "canary", reason="a canary under way")

    serve_rows(svc, rows.iloc[600:900])  # a complete window: without the canary it would be judged
    first = scheduler.tick()
    assert first.checks["worse"].startswith("waiting:"), first.checks
    evaluated = {n: workspace.triggers.state(n).evaluated_at for n in ("drift", "worse")}
    serve_rows(svc, rows.iloc[900:1100])
    second = scheduler.tick()  # the canary still holds: skipped, saying what it said
    assert second.checks == first.checks
    assert {n: workspace.triggers.state(n).evaluated_at for n in evaluated} == evaluated

    workspace.remove_alias(MODEL, "canary", reason="decided")
    third = scheduler.tick()  # the alias moved: judged again, on the windows it has
    assert not third.checks["worse"].startswith("waiting:"), third.checks
    assert workspace.triggers.state("worse").evaluated_at > evaluated["worse"]
    assert workspace.triggers.state("worse").watermark["index"] >= 0
    svc.stop()
