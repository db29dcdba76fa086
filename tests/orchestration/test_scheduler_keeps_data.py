"""No firing loses its data: triggers sharing a pipeline, cool-downs, edited crons, pipelines that
fail to load. Each test drives the real scheduler on a SQLite workspace with real files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import mloop
from mloop.orchestration.config import LoopConfig
from mloop.orchestration.scheduler import Scheduler

PIPE = """
import json, os, time
from pathlib import Path
import mloop

@mloop.step
def read(data: list[str]) -> int:
    (Path(os.environ["MARK_DIR"]) / f"read-{time.time_ns()}").write_text(json.dumps(data))
    return len(data)

@mloop.pipeline
def training(data: list[str]) -> None:
    read(data)
"""


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 2, 59, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "pipe.py").write_text(PIPE)
    for folder in ("marks", "inA", "inB"):
        (tmp_path / folder).mkdir()
    monkeypatch.setenv("MARK_DIR", str(tmp_path / "marks"))
    return tmp_path


def read_files(project: Path) -> list[list[str]]:
    """The files each run read, in the order the runs ran."""
    return [json.loads(p.read_text()) for p in sorted((project / "marks").glob("read-*"))]


def landing(project: Path, name: str, folder: str, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "kind": "new_data",
        "path": str(project / folder),
        "pattern": "*.csv",
        "param": "data",
        "pipeline": f"{project / 'pipe.py'}:training",
        **extra,
    }


def seen(workspace: mloop.Workspace, trigger: str) -> set[str]:
    return set(workspace.triggers.state(trigger).watermark.get("files", {}))


def test_two_new_data_triggers_of_one_pipeline_each_run_their_own_files(
    workspace: mloop.Workspace, project: Path
) -> None:
    """Events were merged on (pipeline, trigger params): landB's file was marked seen, never run.
    Triggers whose runs are the same (the same files to the same parameter) still share one."""
    triggers = [
        landing(project, "landA", "inA"),
        landing(project, "landB", "inB"),
        landing(project, "alsoA", "inA"),
    ]
    scheduler = Scheduler(workspace, LoopConfig.parse({"triggers": triggers}))
    scheduler.check()
    assert scheduler.tick().runs == []
    (project / "inA" / "a.csv").write_text("1")
    (project / "inB" / "b.csv").write_text("2")
    report = scheduler.tick()
    assert [s for _, s in report.runs] == ["succeeded", "succeeded"], report.errors
    scheduler.tick()
    assert sorted(read_files(project)) == [[str(project / "inA" / "a.csv")], [str(project / "inB" / "b.csv")]]
    assert [e.status for e in workspace.triggers.events("landB")] == ["succeeded"]
    [shared] = workspace.triggers.events("alsoA")
    assert shared.status == "suppressed" and shared.evidence["coalesced_with"] == "landA"


def test_files_arriving_during_a_cooldown_run_once_it_ends(workspace: mloop.Workspace, project: Path) -> None:
    clock = Clock()
    cfg = LoopConfig.parse({"triggers": [landing(project, "inbox", "inA", cooldown="1h")]})
    scheduler = Scheduler(workspace, cfg, clock=clock)
    inbox = project / "inA"
    (inbox / "a.csv").write_text("1")
    assert len(scheduler.tick().runs) == 1
    clock.now += timedelta(minutes=10)
    (inbox / "b.csv").write_text("2")
    report = scheduler.tick()
    assert report.runs == [] and "cooling down" in report.checks["inbox"]
    assert str(inbox / "b.csv") not in seen(workspace, "inbox")  # held, not consumed
    clock.now += timedelta(minutes=10)
    (inbox / "c.csv").write_text("3")
    assert scheduler.tick().runs == []
    assert Scheduler(workspace, cfg, clock=clock).tick().runs == []  # another scheduler holds them too
    clock.now += timedelta(minutes=41)  # the cool-down is over
    report = scheduler.tick()
    assert [s for _, s in report.runs] == ["succeeded"], report.errors
    assert read_files(project)[-1] == [str(inbox / "b.csv"), str(inbox / "c.csv")]
    assert scheduler.tick().runs == []
    assert "no new files" in workspace.triggers.state("inbox").last_result
    # each held batch is still recorded (suppressed), under a key of its own
    statuses = [e.status for e in workspace.triggers.events("inbox")]
    assert statuses == ["succeeded", "suppressed", "suppressed", "succeeded"]


def _write_job(project: Path) -> None:
    """``job.py``: a pipeline of one step that does nothing worth caching."""
    (project / "job.py").write_text(
        "import mloop\n\n@mloop.step\ndef nothing(tag: str) -> str:\n    return tag\n\n"
        "@mloop.pipeline\ndef job(tag: str = 'x') -> None:\n    nothing(tag)\n"
    )


def test_a_schedule_due_during_its_cooldown_runs_once_the_cooldown_ends(
    workspace: mloop.Workspace, project: Path
) -> None:
    clock = Clock()
    _write_job(project)
    trigger = {"name": "nightly", "kind": "schedule", "cron": "0 3 * * *", "cooldown": "2h",
               "pipeline": f"{project / 'job.py'}:job"}  # fmt: skip
    scheduler = Scheduler(workspace, LoopConfig.parse({"triggers": [trigger]}), clock=clock)
    scheduler.tick()  # learns it is due at 03:00
    assert [s for _, s in scheduler.fire("nightly", "by hand").runs] == ["succeeded"]  # at 02:59
    clock.now += timedelta(minutes=5)
    assert scheduler.tick().runs == []  # due, but cooling down until 04:59
    clock.now += timedelta(hours=2)
    report = scheduler.tick()
    assert [e.event_key for e in report.events] == ["schedule/2026-12-02T03:00:00+00:00"]
    assert [s for _, s in report.runs] == ["succeeded"]
    assert workspace.triggers.state("nightly").next_due_at == datetime(2026, 12, 3, 3, 0, tzinfo=UTC)


def test_editing_a_cron_expression_recomputes_the_next_due_time(
    workspace: mloop.Workspace, project: Path
) -> None:
    clock = Clock()
    _write_job(project)

    def scheduler(cron: str) -> Scheduler:
        trigger = {"name": "t", "kind": "schedule", "cron": cron, "pipeline": f"{project / 'job.py'}:job"}
        return Scheduler(workspace, LoopConfig.parse({"triggers": [trigger]}), clock=clock)

    leap = scheduler("0 0 29 2 *")
    leap.tick()
    assert leap.status()[0]["next_due_at"] == datetime(2028, 2, 29, tzinfo=UTC)
    every_minute = scheduler("* * * * *")  # the file was edited, the scheduler restarted
    every_minute.tick()
    assert every_minute.status()[0]["next_due_at"] == datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    clock.now += timedelta(minutes=1)
    assert [s for _, s in every_minute.tick().runs] == ["succeeded"]
    back = scheduler("0 0 29 2 *")  # and back: not a minute's schedule any more
    back.tick()
    assert back.status()[0]["next_due_at"] == datetime(2028, 2, 29, tzinfo=UTC)


BROKEN = "import mloop\n\ndef training(data: list[str]) -> None\n    pass\n"


def test_files_whose_pipeline_fails_to_load_are_kept_and_retried_with_backoff(
    workspace: mloop.Workspace, project: Path
) -> None:
    clock = Clock()
    cfg = LoopConfig.parse({"tick_s": 10, "triggers": [landing(project, "inbox", "inA")]})
    scheduler = Scheduler(workspace, cfg, clock=clock)
    scheduler.tick()
    (project / "pipe.py").write_text(BROKEN)  # the user is editing it
    (project / "inA" / "a.csv").write_text("1")
    report = scheduler.tick()
    assert report.runs == [] and "SyntaxError" in report.errors["inbox"]
    assert workspace.triggers.events("inbox") == []  # no event consumed the file
    assert seen(workspace, "inbox") == set()
    assert "SyntaxError" in (workspace.triggers.state("inbox").last_error or "")
    (project / "pipe.py").write_text(PIPE)
    assert scheduler.tick().runs == []  # backing off: the next try is after 20 s
    clock.now += timedelta(seconds=21)
    report = scheduler.tick()
    assert [s for _, s in report.runs] == ["succeeded"], report.errors
    assert read_files(project) == [[str(project / "inA" / "a.csv")]]
    assert workspace.triggers.state("inbox").last_error is None


def test_a_restarted_scheduler_retries_files_whose_pipeline_failed_to_load(
    workspace: mloop.Workspace, project: Path
) -> None:
    cfg = LoopConfig.parse({"triggers": [landing(project, "inbox", "inA")]})
    Scheduler(workspace, cfg).tick()
    (project / "pipe.py").write_text(BROKEN)
    (project / "inA" / "a.csv").write_text("1")
    assert "SyntaxError" in Scheduler(workspace, cfg).tick().errors["inbox"]
    (project / "pipe.py").write_text(PIPE)
    report = Scheduler(workspace, cfg).tick()  # `mloop scheduler run --once` again, say
    assert [s for _, s in report.runs] == ["succeeded"], report.errors
    assert read_files(project) == [[str(project / "inA" / "a.csv")]]


def test_files_refused_by_a_one_file_parameter_are_kept_until_it_takes_a_list(
    workspace: mloop.Workspace, project: Path
) -> None:
    one = PIPE.replace("def training(data: list[str])", "def training(data: str)").replace(
        "read(data)\n", "read([data])\n"
    )
    (project / "pipe.py").write_text(one)
    cfg = LoopConfig.parse({"triggers": [landing(project, "inbox", "inA")]})
    Scheduler(workspace, cfg).tick()
    (project / "inA" / "a.csv").write_text("1")
    (project / "inA" / "b.csv").write_text("2")
    refused = Scheduler(workspace, cfg).tick()
    assert "2 new files arrived in one pass" in refused.errors["inbox"]
    assert "annotate it list[Path] to receive them all" in refused.errors["inbox"]
    assert seen(workspace, "inbox") == set()
    (project / "pipe.py").write_text(PIPE)
    report = Scheduler(workspace, cfg).tick()
    assert [s for _, s in report.runs] == ["succeeded"], report.errors
    assert read_files(project) == [[str(project / "inA" / "a.csv"), str(project / "inA" / "b.csv")]]
