"""``mloop server start`` as a real process: tokens required, --no-auth on loopback, no secret logged."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from commands import mloop_command

from mloop.auth import create_token
from mloop.workspace import Workspace


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(ws_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    env = {**os.environ, "MLOOP_WORKSPACE": str(ws_dir)}
    proc = subprocess.Popen(
        [*mloop_command(), "server", "start", "--port", str(port), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            httpx.get(url + "/api/v1/openapi.json", timeout=2)
            return proc, url
        except httpx.TransportError:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


@pytest.mark.parametrize("no_auth", [False, True])
def test_server_start(tmp_path: Path, no_auth: bool) -> None:
    ws_dir = tmp_path / "ws"
    with Workspace.open(ws_dir) as ws:
        secret, _ = create_token(ws.tokens, "ops", "viewer", created_by="test")
    proc, url = _serve(ws_dir, *(["--no-auth"] if no_auth else []))
    try:
        anonymous = httpx.get(url + "/api/v1/models", timeout=10)
        assert anonymous.status_code == (200 if no_auth else 401)
        ok = httpx.get(url + "/api/v1/whoami", headers={"Authorization": f"Bearer {secret}"}, timeout=10)
        assert ok.status_code == 200
        assert ok.json()["name"] == ("local (no auth)" if no_auth else "ops")
        bad = httpx.get(
            url + "/api/v1/runs",
            params={"where": "metric.x>>1"},
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert bad.status_code == 400
        index = httpx.get(url + "/", timeout=10)
        assert index.status_code == 200 and "/static/app.js" in index.text
        assert httpx.get(url + "/static/app.js", timeout=10).status_code == 200
    finally:
        stdout, stderr = _stop(proc)
    assert proc.returncode == 0  # SIGTERM is a requested, graceful stop (uvicorn re-raised it: 143)
    assert secret not in stdout + stderr
    assert ("WITHOUT authentication" in stderr) == no_auth


def test_server_start_logs_json_lines(tmp_path: Path) -> None:
    """A daemon's output is its log: with --log-format json every stderr line is one JSON object."""
    ws_dir = tmp_path / "ws"
    Workspace.open(ws_dir).close()
    proc, url = _serve(ws_dir, "--log-format", "json")
    try:
        assert httpx.get(url + "/api/v1/models", timeout=10).status_code == 401
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as sock:
            sock.sendall(b"GARBAGE\r\n\r\n")  # uvicorn logs it: in its own plain-text format before
            assert sock.recv(100).startswith(b"HTTP/1.1 400")
    finally:
        _, stderr = _stop(proc)
    assert proc.returncode == 0
    records = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert any(r["logger"] == "uvicorn.error" and "Invalid HTTP request" in r["message"] for r in records)
    started = next(r for r in records if r["message"].startswith("team server on"))
    assert started["logger"] == "mloop.server" and started["url"] == url and started["auth"] is True


def test_server_start_refuses_an_unknown_log_format(tmp_path: Path) -> None:
    done = subprocess.run(
        [*mloop_command(), "server", "start", "--log-format", "xml", "--workspace", str(tmp_path / "ws")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: --log-format 'xml'")


def test_server_start_on_a_taken_port_is_one_error_line(tmp_path: Path) -> None:
    """As `serve` does: a taken port is one `error:` line and exit 2, not uvicorn's ERROR and exit 3."""
    ws_dir = tmp_path / "ws"
    Workspace.open(ws_dir).close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*mloop_command(), "server", "start", "--port", str(port), "--workspace", str(ws_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2 and done.stderr == f"error: port {port} on 127.0.0.1 is already in use\n"
