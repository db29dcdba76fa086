"""The scheduler: triggers fire once per event, runs record their evidence, failures and crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from commands import mloop_command

import mloop
from mloop.entities import RunStatus
from mloop.errors import NotFoundError
from mloop.orchestration.config import LoopConfig
from mloop.orchestration.scheduler import Scheduler

JOB = """
import os, time
from pathlib import Path
import mloop

@mloop.step
def record(tag: str, data: str) -> dict:
    marks = Path(os.environ["MARK_DIR"])
    (marks / f"{tag}-{time.time_ns()}").write_text(data)
    if (marks / "slow").exists():
        time.sleep(120)
    if tag == "boom":
        raise RuntimeError("the pipeline broke")
    if (marks / "broken").exists():
        raise RuntimeError("broken until the file is removed")
    return {"tag": tag, "data": data}

@mloop.pipeline
def job(tag: str = "x", data: str = "") -> None:
    record(tag, data)
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "job.py").write_text(JOB)
    (tmp_path / "marks").mkdir()
    (tmp_path / "inbox").mkdir()
    monkeypatch.setenv("MARK_DIR", str(tmp_path / "marks"))
    return tmp_path


def marks(project: Path, tag: str) -> list[str]:
    return sorted(p.read_text() for p in (project / "marks").glob(f"{tag}-*"))


def config(project: Path, *triggers: dict) -> LoopConfig:
    return LoopConfig.parse({"triggers": [{"pipeline": f"{project / 'job.py'}:job", **t} for t in triggers]})


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 2, 59, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_schedule_fires_once_per_due_time(workspace: mloop.Workspace, project: Path) -> None:
    clock = Clock()
    cfg = config(
        project, {"name": "nightly", "kind": "schedule", "cron": "0 3 * * *", "params": {"tag": "n"}}
    )
    scheduler = Scheduler(workspace, cfg, clock=clock)
    assert scheduler.tick().runs == []  # the first pass only learns when it is next due
    assert scheduler.status()[0]["next_due_at"] == datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    clock.now += timedelta(minutes=2)
    first = scheduler.tick()
    assert [s for _, s in first.runs] == ["succeeded"]
    assert scheduler.tick().runs == []  # the same due time never fires twice
    run = workspace.metadata.get_run(first.runs[0][0])
    assert run.trigger == "schedule"
    params = workspace.metadata.get_params(run.id)
    assert params["trigger.name"] == "nightly" and params["trigger.event"].startswith(
        "schedule/2026-12-02T03:00"
    )
    event = workspace.triggers.event_of_run(run.id)
    assert event is not None and event.evidence["cron"] == "0 3 * * *" and event.status == "succeeded"
    clock.now += timedelta(days=1)
    assert len(scheduler.tick().runs) == 1


def test_new_files_fire_once_with_the_files_as_a_parameter(workspace: mloop.Workspace, project: Path) -> None:
    inbox = project / "inbox"
    cfg = config(
        project,
        {"name": "inbox", "kind": "new_data", "path": str(inbox), "pattern": "*.csv", "param": "data",
         "params": {"tag": "new"}},
    )  # fmt: skip
    scheduler = Scheduler(workspace, cfg)
    scheduler.check()
    assert scheduler.tick().runs == []
    (inbox / "a.csv").write_text("x\n1\n")
    (inbox / "ignored.txt").write_text("not watched")
    assert len(scheduler.tick().runs) == 1
    assert marks(project, "new") == [str(inbox / "a.csv")]
    assert scheduler.tick().runs == []  # seen
    (inbox / "b.csv").write_text("x\n2\n")
    assert len(scheduler.tick().runs) == 1
    assert marks(project, "new")[-1] == str(inbox / "b.csv")
    assert [e.status for e in workspace.triggers.events("inbox")] == ["succeeded", "succeeded"]


@pytest.mark.parametrize("fsspec_url", [False, True], ids=["folder", "fsspec-url"])
def test_a_file_still_being_written_waits_until_it_settles(
    workspace: mloop.Workspace, project: Path, fsspec_url: bool
) -> None:
    # a file copied in slowly fired once per pass as it grew (7 runs for one file); through fsspec
    # (s3://…, here file://…) the listing's time was not read, so settle held nothing
    inbox = project / "inbox"
    cfg = config(
        project,
        {"name": "inbox", "kind": "new_data", "path": inbox.as_uri() if fsspec_url else str(inbox),
         "pattern": "*.csv", "param": "data", "params": {"tag": "settle"}, "settle": "1s"},
    )  # fmt: skip
    scheduler = Scheduler(workspace, cfg)
    scheduler.check()
    growing = inbox / "a.csv"
    growing.write_text("x\n1\n")
    assert scheduler.tick().runs == []  # modified just now: still being written
    assert "1 still being written" in workspace.triggers.state("inbox").last_result
    with growing.open("a") as fh:
        fh.write("2\n")
    assert scheduler.tick().runs == []
    old = time.time() - 5
    os.utime(growing, (old, old))  # it has not changed for a while: whole
    assert len(scheduler.tick().runs) == 1
    assert marks(project, "settle") == [growing.as_uri() if fsspec_url else str(growing)]
    assert scheduler.tick().runs == []  # seen once, whole


LIST_JOB = """
import os, json, time
from pathlib import Path
import mloop

@mloop.step
def record(files: list) -> int:
    (Path(os.environ["MARK_DIR"]) / f"list-{time.time_ns()}").write_text(json.dumps(files))
    return len(files)

@mloop.pipeline
def job(files: list[str]) -> None:
    record(files)
"""


def test_new_files_reach_a_list_parameter_as_a_list_and_a_one_file_parameter_is_told(
    workspace: mloop.Workspace, project: Path
) -> None:
    """One new file used to reach the pipeline as a string and several as a list: a ``list[str]``
    parameter failed on one file, a ``str`` one on several (with a type error about the value)."""
    (project / "lists.py").write_text(LIST_JOB)
    inbox = project / "inbox"
    cfg = LoopConfig.parse(
        {
            "triggers": [
                {"name": "many", "kind": "new_data", "path": str(inbox), "param": "files",
                 "pipeline": f"{project / 'lists.py'}:job"},
                {"name": "one", "kind": "new_data", "path": str(inbox), "param": "data",
                 "pipeline": f"{project / 'job.py'}:job", "params": {"tag": "one"}},
            ]
        }
    )  # fmt: skip
    scheduler = Scheduler(workspace, cfg)
    scheduler.check()
    assert scheduler.tick().runs == []
    (inbox / "a.csv").write_text("1")
    assert [s for _, s in scheduler.tick().runs] == ["succeeded", "succeeded"]
    assert marks(project, "list") == [json.dumps([str(inbox / "a.csv")])]
    (inbox / "b.csv").write_text("2")
    (inbox / "c.csv").write_text("3")
    report = scheduler.tick()
    assert [s for _, s in report.runs] == ["succeeded"]  # the list parameter's run
    assert json.loads(marks(project, "list")[-1]) == [str(inbox / "b.csv"), str(inbox / "c.csv")]
    assert "2 new files arrived in one pass, but parameter 'data'" in report.errors["one"]
    assert "annotate it list[Path]" in report.errors["one"]


def test_new_rows_past_the_watermark(workspace: mloop.Workspace, project: Path) -> None:
    url = f"sqlite:///{project / 'source.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE events (id INTEGER PRIMARY KEY, v REAL)"))
        conn.execute(sa.text("INSERT INTO events (v) VALUES (1), (2)"))
    cfg = config(
        project,
        {
            "name": "rows",
            "kind": "new_data",
            "table": "events",
            "column": "id",
            "url": url,
            "params": {"tag": "r"},
        },
    )
    scheduler = Scheduler(workspace, cfg)
    first = scheduler.tick()
    assert len(first.runs) == 1 and first.events[0].evidence["rows"] == 2
    assert scheduler.tick().runs == []
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO events (v) VALUES (3)"))
    again = scheduler.tick()
    assert again.events[0].evidence["after"] == 2 and again.events[0].evidence["until"] == 3
    engine.dispose()


def test_cooldown_records_but_does_not_run(workspace: mloop.Workspace, project: Path) -> None:
    inbox = project / "inbox"
    cfg = config(
        project,
        {"name": "inbox", "kind": "new_data", "path": str(inbox), "param": "data", "cooldown": "1h",
         "params": {"tag": "c"}},
    )  # fmt: skip
    scheduler = Scheduler(workspace, cfg)
    (inbox / "a.csv").write_text("1")
    assert len(scheduler.tick().runs) == 1
    (inbox / "b.csv").write_text("2")
    assert scheduler.tick().runs == []
    statuses = [e.status for e in workspace.triggers.events("inbox")]
    assert statuses == ["suppressed", "succeeded"]


def test_a_failing_run_is_recorded_and_the_scheduler_carries_on(
    workspace: mloop.Workspace, project: Path
) -> None:
    cfg = config(
        project,
        {"name": "broken", "kind": "manual", "params": {"tag": "boom"}},
        {"name": "fine", "kind": "manual", "params": {"tag": "ok"}},
    )
    scheduler = Scheduler(workspace, cfg)
    broken = scheduler.fire("broken", "testing")
    [(run_id, status)] = broken.runs
    assert status == "failed" and workspace.metadata.get_run(run_id).status == RunStatus.FAILED
    assert workspace.triggers.events("broken")[0].status == "failed"
    assert [s for _, s in scheduler.fire("fine").runs] == ["succeeded"]
    with pytest.raises(NotFoundError, match="no trigger named 'nope'"):
        scheduler.fire("nope")


def _start(project: Path, ws: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*mloop_command(), "scheduler", "run", "--workspace", str(ws), *args],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MARK_DIR": str(project / "marks")},
    )


def _toml(project: Path) -> None:
    (project / "mloop.toml").write_text(
        f"""
[scheduler]
lease_s = 2

[[triggers]]
name = "inbox"
kind = "new_data"
path = "{project / "inbox"}"
param = "data"
pipeline = "{project / "job.py"}:job"
params = {{ tag = "k" }}
"""
    )


def _wait_for(predicate: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.slow
def test_sigkill_mid_run_then_restart_fires_again_exactly_once(project: Path) -> None:
    _toml(project)
    ws = project / ".mloop"
    (project / "marks" / "slow").write_text("")
    (project / "inbox" / "batch.csv").write_text("1")
    daemon = _start(project, ws, "--tick", "0.2")
    _wait_for(lambda: marks(project, "k"))  # the run is inside its step
    daemon.kill()
    daemon.wait(timeout=30)
    (project / "marks" / "slow").unlink()
    time.sleep(2.5)  # an event is taken over only once its holder's lease (2 s here) has expired
    restarted = subprocess.run(
        [*mloop_command(), "scheduler", "run", "--once", "--workspace", str(ws)],
        cwd=project, capture_output=True, text=True, timeout=120,
        env={**os.environ, "MARK_DIR": str(project / "marks")},
    )  # fmt: skip
    assert restarted.returncode == 0, restarted.stderr
    again = subprocess.run(
        [*mloop_command(), "scheduler", "run", "--once", "--workspace", str(ws)],
        cwd=project, capture_output=True, text=True, timeout=120,
        env={**os.environ, "MARK_DIR": str(project / "marks")},
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    with mloop.Workspace.open(ws) as w:
        runs = w.runs(mloop.RunQuery(pipeline="job"))
        assert sorted(r.status.value for r in runs) == ["failed", "succeeded"]  # nothing duplicated
        [event] = w.triggers.events("inbox")
        assert (event.status, event.attempts) == ("succeeded", 2)
        assert event.run_id == next(r.id for r in runs if r.status == RunStatus.SUCCEEDED)
    assert len(marks(project, "k")) == 2  # the interrupted attempt and exactly one more


@pytest.mark.slow
def test_sigterm_stops_gracefully_and_status_reports(project: Path) -> None:
    _toml(project)
    ws = project / ".mloop"
    daemon = _start(project, ws, "--tick", "0.2")
    (project / "inbox" / "a.csv").write_text("1")
    _wait_for(lambda: marks(project, "k"))
    time.sleep(0.5)
    daemon.send_signal(signal.SIGTERM)
    _, stderr = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, stderr
    assert "SIGTERM received" in stderr and "scheduler: stopped" in stderr and "Traceback" not in stderr
    status = subprocess.run(
        [*mloop_command(), "scheduler", "status", "--json", "--workspace", str(ws)],
        cwd=project, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    [row] = json.loads(status.stdout)
    assert row["name"] == "inbox" and row["last_event"]["status"] == "succeeded"
    assert "no new files" in row["result"]


def test_cli_refuses_bad_configuration(project: Path) -> None:
    (project / "mloop.toml").write_text('[[triggers]]\nname = "t"\nkind = "schedule"\ncron = "every day"\n'
                                        f'pipeline = "{project / "job.py"}:job"\n')  # fmt: skip
    done = subprocess.run(
        [*mloop_command(), "scheduler", "run", "--once", "--workspace", str(project / ".mloop")],
        cwd=project, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "cron" in done.stderr and "Traceback" not in done.stderr
    (project / "mloop.toml").write_text(
        f'[[triggers]]\nname = "t"\nkind = "new_data"\npath = "{project / "gone"}"\n'
        f'pipeline = "{project / "job.py"}:job"\n'
    )
    done = subprocess.run(
        [*mloop_command(), "scheduler", "run", "--once", "--workspace", str(project / ".mloop")],
        cwd=project, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "does not exist" in done.stderr and done.stderr.count("\n") == 1


def test_one_pass_exits_1_when_its_run_failed(project: Path) -> None:
    """``scheduler run --once`` from cron: a pass whose run failed must not look like a good one."""
    _toml(project)
    (project / "mloop.toml").write_text((project / "mloop.toml").read_text().replace('"k"', '"boom"'))
    (project / "inbox" / "a.csv").write_text("1")

    def one_pass() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*mloop_command(), "scheduler", "run", "--once", "--workspace", str(project / ".mloop")],
            cwd=project, capture_output=True, text=True, timeout=120,
            env={**os.environ, "MARK_DIR": str(project / "marks")},
        )  # fmt: skip

    failed = one_pass()
    assert failed.returncode == 1, failed.stderr
    assert "the pipeline broke" in failed.stderr and "Traceback" not in failed.stderr
    assert failed.stderr.count("ERROR mloop.scheduler: inbox:") == 0, failed.stderr  # was said twice
    assert "the pass met 1 problem: run " in failed.stderr
    quiet = one_pass()  # nothing new: a clean pass
    assert quiet.returncode == 0, quiet.stderr


def test_a_failed_event_is_run_again_with_its_files_once_its_cause_is_fixed(project: Path) -> None:
    """A new_data event whose run failed had consumed its files (the watermark moved past them), and
    nothing could bring them back but firing by hand with the paths retyped."""
    (project / "mloop.toml").write_text(
        f"""
[[triggers]]
name = "inbox"
kind = "new_data"
path = "{project / "inbox"}"
pattern = "*.csv"
param = "data"
pipeline = "{project / "job.py"}:job"
params = {{ tag = "retry" }}
"""
    )
    env = {**os.environ, "MARK_DIR": str(project / "marks")}
    ws = ["--workspace", str(project / ".mloop")]

    def mloop_(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*mloop_command(), *argv, *ws], cwd=project, env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    (project / "marks" / "broken").write_text("")
    (project / "inbox" / "a.csv").write_text("x\n1\n")
    assert mloop_("scheduler", "run", "--once").returncode == 1  # the run failed
    assert mloop_("scheduler", "run", "--once").returncode == 0  # and the file is seen: nothing fires
    listed = mloop_("scheduler", "events", "--status", "failed", "--json")
    [failed] = json.loads(listed.stdout)
    assert failed["params"] == {"data": str(project / "inbox" / "a.csv")} and failed["attempts"] == 1
    assert failed["why"] == "1 new file(s) under " + str(project / "inbox")  # what it saw, in words
    table = mloop_("scheduler", "events")
    assert table.returncode == 0 and "why" in table.stdout  # a column of its own in the table
    (project / "marks" / "broken").unlink()
    retried = mloop_("scheduler", "retry", failed["id"], "--json")
    assert retried.returncode == 0, retried.stderr
    [run] = json.loads(retried.stdout)["runs"]
    assert run["status"] == "succeeded"
    assert marks(project, "retry")[-1] == str(project / "inbox" / "a.csv")
    [event] = json.loads(mloop_("scheduler", "events", "--json").stdout)
    assert (event["id"], event["status"], event["attempts"], event["run_id"]) == (
        failed["id"],
        "succeeded",
        2,
        run["run_id"],
    )
    again = mloop_("scheduler", "retry", failed["id"])  # succeeded: nothing to run again
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "is succeeded" in again.stderr
    bad_format = mloop_("scheduler", "retry", failed["id"], "--log-format", "bogus")
    assert (
        bad_format.returncode == 2
        and bad_format.stderr.count("\n") == 1
        and "--log-format" in bad_format.stderr
    )
    bad = mloop_("scheduler", "events", "--status", "broken")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not an event status" in bad.stderr
    for odd in ("01nosuchevent", "\udcff\udcfe", "../x"):  # any case; bytes that are no UTF-8 text
        refused = subprocess.run(
            [*mloop_command(), "scheduler", "retry", os.fsencode(odd), *ws],
            cwd=project, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert refused.returncode == 2 and refused.stderr.startswith("error: no trigger event"), (
            refused.stderr
        )
    unknown = mloop_("scheduler", "retry", "01NOSUCHEVENT")
    assert unknown.returncode == 2 and "no trigger event '01NOSUCHEVENT'" in unknown.stderr


@pytest.mark.parametrize("by_url", [False, True], ids=["workspace-db", "metadata-url"])
def test_a_daemon_whose_workspace_is_deleted_under_it_stops_saying_so(
    project: Path, monkeypatch: pytest.MonkeyPatch, by_url: bool
) -> None:
    """``rm -rf .mloop`` under a running daemon: SQLite went on writing to the deleted file, so the
    daemon's runs and events were seen by no one, and a new workspace at the same place knew nothing
    of a daemon that still fired on its inbox. A SQLite file named by ``metadata_url`` too."""
    import shutil

    _toml(project)
    ws = project / ".mloop"
    database = project / "db"
    if by_url:
        database.mkdir()
        monkeypatch.setenv("MLOOP_METADATA_URL", f"sqlite:///{database / 'meta.db'}")
    daemon = _start(project, ws, "--tick", "0.2")
    (project / "inbox" / "a.csv").write_text("1")
    _wait_for(lambda: marks(project, "k"))
    shutil.rmtree(database if by_url else ws)
    try:
        _, err = daemon.communicate(timeout=60)
    finally:
        daemon.kill()
    assert daemon.returncode == 1, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "workspace database" in lines[0] and "was deleted" in lines[0], err
    assert "Traceback" not in err
    database.mkdir(exist_ok=True)
    with mloop.Workspace.open(ws) as fresh:  # a workspace made again at the same place is its own
        fresh.check_intact()


def test_a_retry_that_would_drop_the_files_or_cannot_start_is_refused_before_it_takes_the_event(
    workspace: mloop.Workspace, project: Path
) -> None:
    """A pipeline whose parameter was renamed since took the retry without the event's files and
    marked it succeeded; a retry that could not start (the trigger removed) used up an attempt."""
    inbox = project / "inbox"
    spec = {"name": "inbox", "kind": "new_data", "path": str(inbox), "pattern": "*.csv", "param": "data",
            "params": {"tag": "strict"}}  # fmt: skip
    (project / "marks" / "broken").write_text("")
    (inbox / "a.csv").write_text("x\n1\n")
    Scheduler(workspace, config(project, spec)).tick()
    [event] = workspace.triggers.events("inbox")
    assert event.status == "failed"
    (project / "marks" / "broken").unlink()
    (project / "job.py").write_text(
        JOB.replace("data: str", "files: str").replace("record(tag, data)", "record(tag, files)")
    )
    renamed = Scheduler(workspace, config(project, {**spec, "param": "files"}))
    with pytest.raises(mloop.errors.ParameterError, match=r"parameter 'data', which .* no longer takes"):
        renamed.retry(event.id)
    with pytest.raises(NotFoundError, match="no trigger named 'inbox'"):
        Scheduler(workspace, config(project, {**spec, "name": "other"})).retry(event.id)
    assert workspace.triggers.event(event.id).attempts == 1  # neither took it
    (project / "job.py").write_text(JOB)

    def interrupted(event: object, run: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C while the retried run starts

    with pytest.raises(KeyboardInterrupt):
        Scheduler(workspace, config(project, spec), on_run=interrupted).retry(event.id)
    after = workspace.triggers.event(event.id)
    assert (after.status, after.attempts) == ("failed", 2)  # not left "running" for good
    assert [s for _, s in Scheduler(workspace, config(project, spec)).retry(event.id).runs] == ["succeeded"]
    assert marks(project, "strict")[-1] == str(inbox / "a.csv")
