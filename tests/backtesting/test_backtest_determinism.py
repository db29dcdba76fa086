"""The same history gives the same decisions: a replay on an idle machine and one with every core
kept busy produce the same events and figures (DESIGN.md: "Decisions in a replay depend only on the
data, the configuration and the seed")."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from typing import Any

import pytest
from loop_helpers import stream

from mloop.backtesting.backtest import BacktestReport, backtest


def _spin() -> None:  # pragma: no cover - runs in the helper processes
    while True:
        pass


class Burners:
    """CPU-burning processes, one per core, started on request."""

    def __init__(self) -> None:
        self.processes: list[Any] = []

    def start(self) -> int:
        context = multiprocessing.get_context("spawn")
        self.processes = [context.Process(target=_spin, daemon=True) for _ in range(os.cpu_count() or 2)]
        for p in self.processes:
            p.start()
        return len(self.processes)

    def stop(self) -> None:
        for p in self.processes:
            p.kill()
        for p in self.processes:
            p.join(timeout=10)


@pytest.fixture
def busy_machine() -> Iterator[Burners]:
    """Burners the test starts when it wants every core busy; killed when it ends, pass or fail."""
    burners = Burners()
    try:
        yield burners
    finally:
        burners.stop()
        assert not any(p.is_alive() for p in burners.processes)


def _decisions(report: BacktestReport) -> dict[str, Any]:
    """Everything a replay decided; not the run ids (fresh identifiers) nor wall-clock times."""
    data = report.to_dict()
    events = [{k: v for k, v in e.items() if k != "run_id"} for e in data["events"]]
    keep = ("loop", "static", "every_window", "recovered_gain", "metric", "triggers", "rollout")
    return {"events": events, **{k: data[k] for k in keep}}


@pytest.mark.slow
@pytest.mark.timeout(1800)  # long replays; a loaded machine slows them, never changes them
def test_a_replay_decides_the_same_on_an_idle_and_on_a_busy_machine(busy_machine: Burners) -> None:
    frame = stream(2400, drift_at=1300, seed=21)
    quiet = _decisions(backtest(frame, "y", windows=6))
    assert any(e["kind"] == "run" for e in quiet["events"]), "the replay must exercise retraining"
    assert busy_machine.start() >= 1
    loaded = _decisions(backtest(frame, "y", windows=6))
    assert loaded == quiet
