"""Several schedulers on one workspace, a database outage, logs: one run per event, and no exits.

The daemons are real ``mloop scheduler run`` processes; the outage is a TCP proxy in front of
PostgreSQL that the test takes down and brings back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from commands import mloop_command
from tcp_proxy import TcpProxy

import mloop
from mloop.orchestration.config import LoopConfig
from mloop.orchestration.scheduler import Scheduler

BATCH = """
import json, os, time
from pathlib import Path
import mloop

time.sleep(float(os.environ.get("IMPORT_DELAY", "0")))  # a pipeline whose import takes a while


@mloop.step
def record(files: list[str] | str, note: str) -> int:
    names = [files] if isinstance(files, str) else files
    out = Path(os.environ["MARK_DIR"]) / f"run-{time.time_ns()}-{os.getpid()}.json"
    # whole or not at all: the test reads the marks while other runs are writing theirs
    partial = out.with_name("." + out.name)
    partial.write_text(json.dumps(names))
    partial.rename(out)
    return len(names)


@mloop.pipeline
def batch(files: list[str] | str = "", note: str = "") -> None:
    record(files, note)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "batch.py").write_text(BATCH)
    (tmp_path / "marks").mkdir()
    (tmp_path / "inbox").mkdir()
    return tmp_path


def _toml(project: Path, **scheduler: float) -> None:
    settings = {"tick_s": 0.2, "lease_s": 3, "heartbeat_s": 0.5, "max_backoff_s": 1, **scheduler}
    (project / "mloop.toml").write_text(
        "[scheduler]\n"
        + "".join(f"{k} = {v}\n" for k, v in settings.items())
        + f"""
[[triggers]]
name = "inbox"
kind = "new_data"
path = "{project / "inbox"}"
pattern = "*.csv"
param = "files"
pipeline = "{project / "batch.py"}:batch"

[[triggers]]
name = "by-hand"
kind = "manual"
pipeline = "{project / "batch.py"}:batch"
params = {{ note = "fired" }}
"""
    )


def _env(project: Path, metadata_url: str, import_delay: float = 0) -> dict[str, str]:
    return {
        **os.environ,
        "MARK_DIR": str(project / "marks"),
        "IMPORT_DELAY": str(import_delay),
        "MLOOP_METADATA_URL": metadata_url,
    }


class Daemon:
    """One ``mloop scheduler run`` process; its stderr is collected line by line as it comes."""

    def __init__(self, project: Path, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [*mloop_command(), "scheduler", "run", "--workspace", str(project / ".mloop"), *args],
            cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self.signalled = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def started(self) -> bool:
        return any(", lease " in line for line in self.lines)  # the start line: triggers, policies, lease

    def terminate(self) -> None:
        """One SIGTERM (a second one, while it shuts down, would kill it)."""
        if self.proc.poll() is None and not self.signalled:
            self.proc.send_signal(signal.SIGTERM)
            self.signalled = True

    def stop(self, timeout: float = 120) -> str:
        """SIGTERM, wait, and the whole stderr (SIGKILL if it does not stop in time)."""
        self.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)
        return "".join(self.lines)


@contextmanager
def _daemons(project: Path, env: dict[str, str], count: int, *args: str) -> Iterator[list[Daemon]]:
    """``count`` scheduler daemons on the project's workspace, all started; stopped after, in any case."""
    daemons: list[Daemon] = []
    try:
        daemons.extend(Daemon(project, env, *args) for _ in range(count))
        _wait_for(lambda: all(d.started() or d.proc.poll() is not None for d in daemons), what="daemons")
        for d in daemons:
            assert d.proc.poll() is None, "".join(d.lines)[-3000:]
        yield daemons
    finally:
        for d in daemons:
            d.stop()


def _stop(daemons: list[Daemon]) -> list[str]:
    """SIGTERM every daemon; their stderr, each checked for a clean exit."""
    for d in daemons:
        d.terminate()
    logs = []
    for d in daemons:
        log = d.stop()
        assert d.proc.returncode == 0, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        logs.append(log)
    return logs


def _wait_for(predicate: Callable[[], bool], timeout: float = 180, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _drop(inbox: Path, name: str) -> None:
    """A new file, appearing whole (written under a hidden name, then renamed)."""
    (inbox / f".{name}").write_text("x\n1\n")
    (inbox / f".{name}").rename(inbox / name)


def _marked(project: Path) -> list[str]:
    files: list[str] = []
    for mark in (project / "marks").glob("run-*.json"):
        files.extend(json.loads(mark.read_text()))
    return files


def _runs_of(project: Path, metadata_url: str) -> tuple[list[mloop.Run], list[mloop.TriggerEvent]]:
    with mloop.Workspace.open(project / ".mloop", metadata_url=metadata_url) as ws:
        return ws.runs(mloop.RunQuery(pipeline="batch", limit=1000)), ws.triggers.events(limit=1000)


def _files_of(run: mloop.Run) -> list[str]:
    files = run.params.get("files", [])
    return [files] if isinstance(files, str) else list(files)


@pytest.mark.slow
def test_fire_beside_a_running_daemon_starts_exactly_one_run(project: Path, metadata_url: str) -> None:
    _toml(project)
    env = _env(project, metadata_url, import_delay=2)
    with _daemons(project, env, 1) as procs:
        _wait_for(lambda: _evaluated(project, metadata_url), what="the daemon's first pass")
        fired = subprocess.run(
            [*mloop_command(), "scheduler", "fire", "by-hand", "--workspace", str(project / ".mloop")],
            cwd=project, env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert fired.returncode == 0, fired.stderr
        time.sleep(3)  # a daemon that wrongly took the event over would be running it by now
        _stop(procs)
    runs, events = _runs_of(project, metadata_url)
    [event] = [e for e in events if e.trigger == "by-hand"]
    assert [r.id for r in runs] == [event.run_id]
    assert (event.status, event.attempts) == ("succeeded", 1)
    assert len(list((project / "marks").glob("run-*.json"))) == 1


def _evaluated(project: Path, metadata_url: str) -> bool:
    with mloop.Workspace.open(project / ".mloop", metadata_url=metadata_url) as ws:
        return ws.triggers.state("inbox").evaluated_at is not None


@pytest.mark.slow
def test_three_daemons_run_every_event_and_every_file_exactly_once(project: Path, metadata_url: str) -> None:
    _toml(project)
    env = _env(project, metadata_url, import_delay=2)
    inbox = project / "inbox"
    names = [f"f{i:02d}.csv" for i in range(50)]
    with _daemons(project, env, 3, "--log-format", "json") as procs:
        for i, name in enumerate(names):
            _drop(inbox, name)
            time.sleep(0.15 if i % 10 else 1.5)  # bursts and pauses
        _wait_for(lambda: len(_marked(project)) >= 50, what="every file to be processed")
        time.sleep(4)  # past a lease: a wrongly reclaimed event would run again now
        logs = _stop(procs)
    marked = Counter(Path(f).name for f in _marked(project))
    assert sorted(marked) == names and set(marked.values()) == {1}  # every file in exactly one run
    runs, events = _runs_of(project, metadata_url)
    fired = [e for e in events if e.trigger == "inbox"]
    assert all((e.status, e.attempts) == ("succeeded", 1) for e in fired), [
        (e.status, e.attempts) for e in fired
    ]
    assert sorted(r.id for r in runs) == sorted(e.run_id for e in fired if e.run_id)  # one run per event
    assert Counter(f for r in runs for f in _files_of(r)) == Counter(str(inbox / n) for n in names)
    owners = {e.owner for e in fired}
    assert len(owners) >= 2, "the work should have been shared between the daemons"
    records = [json.loads(line) for log in logs for line in log.splitlines() if line.startswith("{")]
    assert any("fired" in r["message"] and r.get("trigger") == "inbox" for r in records)
    assert any(r.get("status") == "succeeded" and r.get("run_id") for r in records)


@pytest.fixture
def proxied(postgres_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A PostgreSQL URL that goes through a proxy the test can take down."""
    url = sa.engine.make_url(postgres_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        yield proxy, url.set(port=proxy.port).render_as_string(hide_password=False)


@pytest.mark.slow  # chaos (the database drops away): the slow tier
def test_a_scheduler_rides_out_a_database_outage(project: Path, proxied: tuple[TcpProxy, str]) -> None:
    proxy, url = proxied
    os.environ["MARK_DIR"] = str(project / "marks")
    config = LoopConfig.parse(
        {
            "tick_s": 0.1,
            "max_backoff_s": 0.5,
            "triggers": [
                {
                    "name": "inbox",
                    "kind": "new_data",
                    "path": str(project / "inbox"),
                    "param": "files",
                    "pipeline": f"{project / 'batch.py'}:batch",
                }
            ],
        }
    )
    ws = mloop.Workspace.open(project / "ws", metadata_url=url)
    scheduler = Scheduler(ws, config)
    daemon = threading.Thread(target=scheduler.serve_forever, daemon=True)
    try:
        daemon.start()
        _drop(project / "inbox", "before.csv")
        _wait_for(lambda: [e.status for e in ws.triggers.events()] == ["succeeded"], what="the first run")
        proxy.down()
        _drop(project / "inbox", "during.csv")
        _wait_for(lambda: scheduler.last_error is not None, what="the outage to be noticed")
        assert "unavailable" in scheduler.last_error and daemon.is_alive()  # type: ignore[operator]
        time.sleep(2)
        assert daemon.is_alive()
        proxy.up()
        _wait_for(lambda: len(_marked(project)) == 2, what="the file that arrived during the outage")
        _wait_for(lambda: scheduler.last_error is None, what="last_error to clear")
        assert ws.triggers.state("inbox").last_error is None
    finally:
        scheduler.stop()
        daemon.join(60)
        ws.close()
        os.environ.pop("MARK_DIR", None)
    assert not daemon.is_alive()
    assert sorted(Path(f).name for f in _marked(project)) == ["before.csv", "during.csv"]


@pytest.mark.slow  # chaos: the daemon starts before its database does
def test_a_daemon_started_before_its_database_waits_for_it(
    project: Path, proxied: tuple[TcpProxy, str]
) -> None:
    proxy, url = proxied
    _toml(project)
    proxy.down()
    daemon = Daemon(project, _env(project, url))
    try:
        _wait_for(
            lambda: "trying again" in "".join(daemon.lines) or daemon.proc.poll() is not None,
            what="the daemon to wait for the database",
        )
        assert daemon.proc.poll() is None, "".join(daemon.lines)  # it exited 2 ("cannot connect") before
        proxy.up()
        _wait_for(daemon.started, what="the daemon to start once the database answers")
        _drop(project / "inbox", "late.csv")
        _wait_for(lambda: len(_marked(project)) == 1, what="the file to be processed")
        daemon.terminate()
        log = daemon.stop()
    finally:
        daemon.stop()
    assert daemon.proc.returncode == 0 and "Traceback" not in log, log[-3000:]


@pytest.mark.slow
def test_the_daemon_keeps_running_through_an_outage_and_processes_each_file_once(
    project: Path, proxied: tuple[TcpProxy, str]
) -> None:
    proxy, url = proxied
    outage_s = float(os.environ.get("MLOOP_TEST_OUTAGE_S", "8"))
    _toml(project)
    env = _env(project, url)
    inbox = project / "inbox"
    with _daemons(project, env, 1, "--log-format", "json") as [daemon]:
        _drop(inbox, "a0.csv")
        _wait_for(
            lambda: [e.status for e in _runs_of(project, url)[1]] == ["succeeded"], what="the first run"
        )
        proxy.down()
        for i in range(1, 6):
            _drop(inbox, f"a{i}.csv")
            time.sleep(outage_s / 5)
        assert daemon.proc.poll() is None, "the daemon exited during the outage"
        proxy.up()
        _wait_for(lambda: len(set(_marked(project))) == 6, what="the files that arrived during the outage")
        time.sleep(4)  # past a lease: a duplicate would show now
        [log] = _stop([daemon])
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    failed = [r for r in records if "pass failed" in r["message"]]
    assert failed and all(r["level"] == "error" for r in failed)
    assert all("retrying in" in r["message"] for r in failed)
    assert any("metadata store unavailable" in r["message"] for r in failed)
    assert any("recovered" in r["message"] for r in records)
    runs, _ = _runs_of(project, url)
    done = Counter(f for r in runs if r.status == mloop.RunStatus.SUCCEEDED for f in _files_of(r))
    assert done == Counter(str(inbox / f"a{i}.csv") for i in range(6))  # each file in one succeeded run


def test_fire_with_bad_parameters_prints_one_error_line(project: Path) -> None:
    _toml(project)
    (project / "mloop.toml").write_text(
        (project / "mloop.toml").read_text().replace('params = { note = "fired" }', "params = { nope = 1 }")
    )
    done = subprocess.run(
        [*mloop_command(), "scheduler", "fire", "by-hand", "--workspace", str(project / ".mloop")],
        cwd=project, env=_env(project, f"sqlite:///{project / 'meta.db'}"), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "nope" in done.stderr and "Traceback" not in done.stderr
