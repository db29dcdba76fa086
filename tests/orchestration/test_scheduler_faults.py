"""A fault inside a pass is one trigger's recorded error, never the daemon's end; last_error clears."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from commands import mloop_command

import mloop
from mloop.orchestration.config import LoopConfig
from mloop.orchestration.scheduler import Scheduler

JOB = """
import os, time
from pathlib import Path
import mloop

@mloop.step
def record(data: str) -> str:
    (Path(os.environ["MARK_DIR"]) / f"m-{time.time_ns()}").write_text(str(data))
    return str(data)

@mloop.pipeline
def job(data: str = "") -> None:
    record(data)
"""


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_failing_trigger_is_recorded_and_the_others_keep_running(
    workspace: mloop.Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "job.py").write_text(JOB)
    (tmp_path / "marks").mkdir()
    (tmp_path / "inbox").mkdir()
    monkeypatch.setenv("MARK_DIR", str(tmp_path / "marks"))
    source = f"sqlite:///{tmp_path / 'source.db'}"
    pipeline = f"{tmp_path / 'job.py'}:job"
    config = LoopConfig.parse(
        {
            "tick_s": 0.1,
            "max_backoff_s": 0.5,
            "triggers": [
                # a foreign exception inside evaluation (no such SQLAlchemy dialect)
                {
                    "name": "foreign",
                    "kind": "new_data",
                    "table": "t",
                    "column": "id",
                    "url": "nosuchdb://x",
                    "pipeline": pipeline,
                },
                # an mloop error until the table appears
                {
                    "name": "rows",
                    "kind": "new_data",
                    "table": "events",
                    "column": "id",
                    "url": source,
                    "pipeline": pipeline,
                },
                {
                    "name": "inbox",
                    "kind": "new_data",
                    "path": str(tmp_path / "inbox"),
                    "param": "data",
                    "pipeline": pipeline,
                },
            ],
        }
    )
    sa.create_engine(source).dispose()
    scheduler = Scheduler(workspace, config)
    daemon = threading.Thread(target=scheduler.serve_forever, daemon=True)
    daemon.start()
    try:
        _wait_for(lambda: scheduler.status()[1]["last_error"] is not None, "the rows trigger to fail")
        (tmp_path / "inbox" / "a.csv").write_text("1")
        _wait_for(
            lambda: (scheduler.status()[2]["last_event"] or {}).get("status") == "succeeded",
            "the inbox trigger's run",
        )
        rows = {r["name"]: r for r in scheduler.status()}
        assert "NoSuchModuleError" in rows["foreign"]["last_error"]
        assert "no table 'events'" in rows["rows"]["last_error"]
        assert rows["inbox"]["last_error"] is None and rows["inbox"]["last_event"]["status"] == "succeeded"
        engine = sa.create_engine(source)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE events (id INTEGER PRIMARY KEY)"))
        engine.dispose()
        _wait_for(lambda: scheduler.status()[1]["last_error"] is None, "the rows trigger's error to clear")
        assert daemon.is_alive()
    finally:
        scheduler.stop()
        daemon.join(60)
    assert not daemon.is_alive()


def test_unknown_log_options_are_one_error_line(tmp_path: Path) -> None:
    for option, value in (("--log-level", "loud"), ("--log-format", "xml")):
        done = subprocess.run(
            [*mloop_command(), "scheduler", "run", option, value, "--workspace", str(tmp_path / "ws")],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"error: {option} '{value}'") and done.stderr.count("\n") == 1
