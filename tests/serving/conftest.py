"""A served model over real HTTP on 127.0.0.1 (uvicorn in a thread)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import mloop

uvicorn = pytest.importorskip("uvicorn", reason="serving needs mloop[serve]")
httpx = pytest.importorskip("httpx", reason="serving tests need httpx")

from mloop.serving.app import ServeConfig, create_app  # noqa: E402
from mloop.serving.server import header_timeout_protocol  # noqa: E402


class Served:
    def __init__(self, url: str, service: object, client: httpx.Client) -> None:
        self.url, self.service, self.client = url, service, client


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    servers: list[tuple[uvicorn.Server, threading.Thread, httpx.Client]] = []

    def start(ws: mloop.Workspace, **options: object) -> Served:
        app = create_app(
            ws,
            ServeConfig(model="clf", poll_interval_s=0.1, flush_interval_s=0.2, **options),
            log_root=tmp_path / "log",
        )
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        # the protocol `mloop serve` runs (header timeout, requests in flight, one write per answer)
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="on", http=header_timeout_protocol())
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60  # generous: a busy machine starts slowly
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            assert thread.is_alive(), "server thread died"
            time.sleep(0.02)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        servers.append((server, thread, client))
        return Served(f"http://127.0.0.1:{port}", app.state.service, client)

    yield start
    for server, thread, client in servers:
        client.close()
        server.should_exit = True
        thread.join(timeout=20)
