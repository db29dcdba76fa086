"""A seeded workspace and the team server over it on 127.0.0.1 (uvicorn in a thread, real HTTP)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import mloop

uvicorn = pytest.importorskip("uvicorn", reason="the team server needs mloop[serve]")
httpx = pytest.importorskip("httpx", reason="team server tests need httpx")

from sample_pipelines import arithmetic  # noqa: E402

from mloop.auth import create_token  # noqa: E402
from mloop.server.app import create_server_app  # noqa: E402


@dataclass
class Seeded:
    """What the seeded workspace holds, by name."""

    runs: list[str]
    model_run: str
    tokens: dict[str, str]


def seed_workspace(ws: mloop.Workspace) -> Seeded:
    """Three pipeline runs, twenty tracking runs with params and metrics, a model of two versions."""
    runs = []
    for n in (2, 3, 4):
        runs.append(ws.run(arithmetic, n=n).run.id)
    for i in range(20):
        with ws.start_run("sweep", {"lr": [0.1, 0.01][i % 2], "depth": i % 5}) as tr:
            tr.log_metrics({"accuracy": i / 20, "loss": 1 - i / 20})
    model_run = runs[-1]
    steps = ws.metadata.list_steps(model_run)
    add = next(s for s in steps if s.name == "add")
    output = ws.metadata.events(step_run_ids=[add.id], kind="output")[0]
    v1 = ws.register_model("churn", ws.metadata.get_artifact(output.artifact_id), run_id=model_run)
    ws.register_model("churn", {"weights": [1, 2]}, run_id=runs[0])
    ws.promote("churn", v1.version, "production", reason="first")
    store = ws.tokens
    tokens = {
        role: create_token(store, f"{role}-token", role, created_by="test")[0] for role in mloop_roles()
    }
    return Seeded(runs, model_run, tokens)


def mloop_roles() -> tuple[str, ...]:
    from mloop.auth import ROLES

    return ROLES


@dataclass
class Server:
    url: str
    ws: mloop.Workspace
    seeded: Seeded

    def client(self, role: str | None = "viewer") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.seeded.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def _starter() -> tuple[Callable[..., str], list[tuple[uvicorn.Server, threading.Thread]]]:
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(ws: mloop.Workspace, *, auth: bool = True) -> str:
        app = create_server_app(ws, auth=auth)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            assert thread.is_alive(), "server thread died"
            time.sleep(0.02)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    return start, servers


def _stop(servers: list[tuple[uvicorn.Server, threading.Thread]]) -> None:
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture
def start_server() -> Iterator[Callable[..., str]]:
    """Start ``create_server_app(ws, auth=…)`` on a free loopback port; stopped after the test."""
    start, servers = _starter()
    try:
        yield start
    finally:
        _stop(servers)


@pytest.fixture
def server(tmp_path: Path, start_server: Callable[..., str]) -> Iterator[Server]:
    """The team server (auth on) over a seeded embedded workspace."""
    ws = mloop.Workspace.open(tmp_path / "ws")
    try:
        seeded = seed_workspace(ws)
        yield Server(start_server(ws), ws, seeded)
    finally:
        ws.close()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One seeded server for the tests of a module that only read (seeding takes about a second)."""
    start, servers = _starter()
    ws = mloop.Workspace.open(tmp_path_factory.mktemp("shared") / "ws")
    try:
        seeded = seed_workspace(ws)
        yield Server(start(ws), ws, seeded)
    finally:
        _stop(servers)
        ws.close()
