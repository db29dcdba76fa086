"""`mloop serve` as a real process: start-up, SIGTERM flush, SIGKILL loss bound, skew from its log."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest
from commands import mloop_command
from serving_helpers import fit, register, training_data

import mloop
from mloop.monitoring.log import read_log

COLS = ["a", "b"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ws_dir(tmp_path: Path) -> Path:
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        df = training_data()
        ws.promote("clf", register(ws, fit(df, COLS), df, COLS).version)
    return tmp_path / "ws"


# every `mloop serve` a test started (with its stderr file); the fixture below reaps them
_STARTED: list[tuple[subprocess.Popen, IO[bytes]]] = []


@pytest.fixture(autouse=True)
def _no_server_outlives_its_test() -> Iterator[None]:
    """Kill the process group of every server a test started, whether the test passed or failed (a
    failed assertion before the test's own SIGTERM must not leave `mloop serve --workers 2` running)."""
    yield
    while _STARTED:
        proc, errors = _STARTED.pop()
        with contextlib.suppress(ProcessLookupError):  # workers too, even if the parent already exited
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        errors.close()


def stderr_of(proc: subprocess.Popen) -> str:
    """What a server started by :func:`start` has written to stderr so far."""
    errors = next(f for p, f in _STARTED if p is proc)
    errors.seek(0)
    return errors.read().decode(errors="replace")


def start(ws_dir: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    exe = mloop_command()
    errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed by the reaping fixture)
    proc = subprocess.Popen(
        [*exe, "serve", "clf", "--port", str(port), "--workspace", str(ws_dir), *extra],
        stdout=subprocess.DEVNULL,
        stderr=errors,  # a file, not a pipe: a server that logs a lot never blocks on a full pipe
        start_new_session=True,  # its own process group: workers are reaped with it
    )
    _STARTED.append((proc, errors))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # a busy machine can take a minute to import and load
    while True:
        if proc.poll() is not None:
            errors.seek(0)
            raise AssertionError(f"server exited: {errors.read().decode(errors='replace')}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.1)


def serve_until_it_exits(ws_dir: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``mloop serve clf`` that is expected to stop at start-up (its output, its exit code)."""
    return subprocess.run(
        [*mloop_command(), "serve", "clf", "--port", str(free_port()), "--workspace", str(ws_dir), *options],
        capture_output=True,
        text=True,
        timeout=120,
    )


def rows(n: int) -> list[dict]:
    return training_data(9, n)[COLS].to_dict("records")


def test_sigterm_flushes_every_prediction(ws_dir: Path) -> None:
    proc, url = start(ws_dir, "--flush-interval", "60")  # nothing is flushed until shutdown
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            answered = sum(
                len(c.post("/predict", json={"instances": rows(3)}).json()["prediction_ids"])
                for _ in range(100)
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    assert proc.returncode == 0  # a graceful stop on request is a clean exit, as with several workers
    assert read_log(ws_dir / "prediction-log", "clf").num_rows == answered == 300


@pytest.mark.slow  # chaos (a SIGKILLed server): the slow tier
def test_sigkill_loses_at_most_one_flush_interval(ws_dir: Path) -> None:
    interval = 0.5
    proc, url = start(ws_dir, "--flush-interval", str(interval))
    answered, started = 0, time.monotonic()
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            while time.monotonic() - started < 2.5:
                answered += len(c.post("/predict", json={"instances": [rows(1)[0]]}).json()["prediction_ids"])
    finally:
        proc.kill()
        proc.wait(timeout=30)
    rate = answered / (time.monotonic() - started)
    logged = read_log(ws_dir / "prediction-log", "clf").num_rows
    lost = answered - logged
    assert 0 <= lost <= rate * interval * 1.5 + 5, (answered, logged, rate)


def test_serving_skew_from_the_log(ws_dir: Path) -> None:
    proc, url = start(ws_dir)
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            shifted = [{"a": r["a"] + 2.0, "b": r["b"]} for r in rows(400)]
            c.post("/predict", json={"instances": shifted})
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    # training statistics recorded with the version: register them as a signature would
    with mloop.Workspace.open(ws_dir) as ws:
        df = training_data()
        stats = ws.store_artifact(mloop.compute_statistics(df[COLS]))
        version = ws.register_model("skewed", fit(df, COLS), signature={"training_statistics": stats.id})
        from mloop.monitoring.skew import logged_input_statistics

        serving = logged_input_statistics(ws_dir / "prediction-log", "clf")
        report = mloop.training_serving_skew(ws.load_artifact(stats.id), serving)
        assert report.kind == "skew" and report.drifted_features == ["a"] and version.version == 1
    out = subprocess.run(
        [
            *mloop_command(),
            "models",
            "skew",
            "clf@production",
            "--workspace",
            str(ws_dir),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "has no training statistics" in out.stderr


def test_serving_an_unknown_alias_fails_fast(ws_dir: Path) -> None:
    exe = mloop_command()
    done = subprocess.run(
        [*exe, "serve", "clf", "--alias", "canary", "--workspace", str(ws_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        done.returncode == 2
        and done.stderr.strip() == "error: model 'clf' has no alias 'canary' (aliases: production)"
    )


@pytest.mark.slow  # several server processes: the slow tier
def test_several_workers_serve_and_all_flush(ws_dir: Path) -> None:
    proc, url = start(ws_dir, "--workers", "2", "--flush-interval", "60")
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            assert c.get("/docs").status_code == 200 and "/predict" in c.get("/openapi.json").json()["paths"]
            answered = [c.post("/predict", json={"instances": rows(2)}).json() for _ in range(60)]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    assert all(a["version"] == 1 for a in answered)
    assert read_log(ws_dir / "prediction-log", "clf").num_rows == 120  # every worker flushed on shutdown


def test_a_busy_port_is_one_error_line_and_exit_2(ws_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*mloop_command(), "serve", "clf", "--port", str(port), "--workspace", str(ws_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: port {port} on 127.0.0.1 is already in use"
    assert "serving" not in done.stdout + done.stderr


def test_logs_go_to_stderr_as_json(ws_dir: Path) -> None:
    import json

    proc, url = start(ws_dir, "--log-format", "json", "--log-level", "info", "--max-body-bytes", "2048")
    try:
        too_big = httpx.post(f"{url}/predict", content=b"x" * 4096, timeout=10)
        assert too_big.status_code == 413 and "limit of 2048 bytes" in too_big.json()["error"]["message"]
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as sock:
            sock.sendall(b"GARBAGE\r\n\r\n")  # uvicorn logs it (in its own plain text before)
            assert sock.recv(100).startswith(b"HTTP/1.1 400")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    err = stderr_of(proc)
    assert proc.returncode == 0
    records = [json.loads(line) for line in err.splitlines()]  # every line: uvicorn's and the start line
    assert any(r["logger"] == "mloop.serving" and "v1 loaded" in r["message"] for r in records), err
    assert any(r["message"].startswith("serving clf@production on") for r in records), err
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)


def test_a_corrupted_production_model_is_named_as_corrupted(ws_dir: Path) -> None:
    """Not 'has no alias production': the CLI says which version is corrupted, before any worker starts,
    and an app started on it says the same."""
    from mloop.errors import ArtifactCorruptedError
    from mloop.serving.app import ServeConfig
    from mloop.serving.service import ModelService

    with mloop.Workspace.open(ws_dir) as ws:
        version = ws.model_version("clf@production")
        art = ws.metadata.get_artifact(version.artifact_id)
        Path(art.uri.removeprefix("file://")).write_bytes(b"\0" * art.size)
        service = ModelService(ws, ServeConfig(model="clf", log_predictions=False, compiled=False))
        with pytest.raises(ArtifactCorruptedError, match=r"clf v1 \(clf@production\)"):
            service.refresh()
    done = serve_until_it_exits(ws_dir)
    assert done.returncode == 1, done.stderr  # ArtifactCorruptedError's exit code
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model clf v1 (clf@production)"), done.stderr
    assert "corrupted" in lines[0] and "no alias" not in lines[0]


def _gone(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/v2/health/live", timeout=2)
        except httpx.TransportError:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow  # a two-worker start, then a shutdown by the workers themselves
def test_workers_stop_and_flush_when_their_supervisor_is_sigkilled(ws_dir: Path) -> None:
    """Orphaned workers kept serving and held the port; a restart then failed with 'already in use'."""
    proc, url = start(ws_dir, "--workers", "2", "--flush-interval", "60")
    with httpx.Client(base_url=url, timeout=60) as c:
        for _ in range(10):
            assert c.post("/predict", json={"instances": rows(2)}).status_code == 200
    proc.send_signal(signal.SIGKILL)  # the supervisor only: its workers are left behind
    proc.wait(timeout=30)
    assert _gone(url, 60), "the workers outlived their supervisor"
    deadline = time.monotonic() + 60  # the socket closes first; the flush follows in the shutdown
    while read_log(ws_dir / "prediction-log", "clf").num_rows < 20:  # they stopped as on SIGTERM
        assert time.monotonic() < deadline, "the workers did not flush their records"
        time.sleep(0.2)


@pytest.mark.slow  # one service start
def test_a_service_stops_when_the_process_that_started_it_is_sigkilled(ws_dir: Path, tmp_path: Path) -> None:
    """What a load test does: the candidate's service names its launcher (MLOOP_PARENT_PID), so a
    SIGKILLed scheduler does not leave the candidate serving."""
    port = free_port()
    launcher = tmp_path / "launcher.py"
    launcher.write_text(
        "import os, subprocess, sys, time\n"
        f"cmd = {[*mloop_command(), 'serve', 'clf', '--port', str(port), '--workspace', str(ws_dir)]!r}\n"
        "subprocess.Popen(cmd, env={**os.environ, 'MLOOP_PARENT_PID': str(os.getpid())},\n"
        "                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "time.sleep(600)\n",
        encoding="utf-8",
    )
    parent = subprocess.Popen([sys.executable, str(launcher)], start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "service did not become ready"
            time.sleep(0.2)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        assert _gone(url, 60), "the service outlived the process that started it"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)


def test_a_shadow_of_the_served_alias_is_refused_and_a_missing_one_is_warned(ws_dir: Path) -> None:
    done = subprocess.run(
        [*mloop_command(), "serve", "clf", "--workspace", str(ws_dir), "--shadow", "production"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.strip() == (
        "error: --shadow 'production' is the alias being served: a shadow must be another alias"
    )
    proc, _url = start(ws_dir, "--shadow", "nope")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert "warning: model 'clf' has no alias 'nope' yet" in stderr_of(proc)


@pytest.mark.slow  # several server processes: the slow tier
def test_metrics_under_several_workers_count_every_request_and_never_go_back(ws_dir: Path) -> None:
    """Each worker had its own counters: 12 scrapes after 5 requests each read 5, 9, 10, 14, 15, 20,
    19, 25, 30, 24, 35, 29 (60 sent)."""
    from prometheus_client.parser import text_string_to_metric_families

    def answered(text: str) -> float:
        families = {f.name: f for f in text_string_to_metric_families(text)}
        return sum(s.value for s in families["mloop_requests"].samples if s.name == "mloop_requests_total")

    proc, url = start(ws_dir, "--workers", "2")
    seen: list[float] = []
    try:
        for _ in range(12):
            for _ in range(5):  # a new connection each time: the workers share them
                assert (
                    httpx.post(f"{url}/predict", json={"instances": rows(1)}, timeout=60).status_code == 200
                )
            scrape = httpx.get(f"{url}/metrics", timeout=60)
            assert scrape.status_code == 200
            seen.append(answered(scrape.text))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    assert seen == [5.0 * (i + 1) for i in range(12)], seen


def test_a_production_model_that_does_not_load_is_an_error_line_not_a_traceback(
    ws_dir: Path, tmp_path: Path
) -> None:
    """Its class's module is gone where it is served: uvicorn printed its startup traceback, ending in
    "has no alias 'production' to serve"."""
    module = tmp_path / "gone_model.py"
    module.write_text("from sklearn.dummy import DummyClassifier\n\nclass Gone(DummyClassifier):\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import gone_model  # type: ignore[import-not-found]

        df = training_data()
        with mloop.Workspace.open(ws_dir) as ws:
            ws.promote("clf", register(ws, gone_model.Gone().fit(df[COLS], df["y"]), df, COLS).version)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("gone_model", None)
    module.unlink()
    for options in ((), ("--workers", "2")):  # one worker loads it before uvicorn; several, the supervisor
        done = serve_until_it_exits(ws_dir, *options)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("error: "), done.stderr
        assert "gone_model" in done.stderr.strip().splitlines()[-1], done.stderr


def test_auth_predictions_closes_feedback_too(ws_dir: Path) -> None:
    # labels drive retraining: /feedback stayed open on loopback while /predict needed a token
    done = serve_until_it_exits(ws_dir, "--no-auth", "--auth-predictions")
    assert done.returncode == 2 and done.stderr.startswith("error: --auth-predictions with --no-auth")
    assert done.stderr.count("\n") == 1, done.stderr
    proc, url = start(ws_dir, "--auth-predictions")
    try:
        label = {"prediction_id": "01M98TK6PT9303MN3NREQNMJRW-0", "label": 1}
        assert httpx.post(f"{url}/feedback", json=label, timeout=30).status_code == 401
        assert httpx.post(f"{url}/predict", json={"instances": rows(1)}, timeout=30).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
