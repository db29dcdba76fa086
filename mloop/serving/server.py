"""Run a service app under uvicorn in a background thread on 127.0.0.1, and talk to it.

For the demo and ``mloop backtest --http``: real HTTP on loopback, in the same process, stopped
cleanly (the lifespan flushes the prediction log). ``mloop serve`` runs uvicorn in the foreground.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["JsonClient", "RunningServer", "run_foreground", "serve_in_thread"]


class RunningServer:
    """A uvicorn server in a thread; ``stop()`` shuts it down and waits for the lifespan to end."""

    def __init__(self, server: Any, thread: threading.Thread, port: int) -> None:
        self.server, self.thread, self.port = server, thread, port
        self.url = f"http://127.0.0.1:{port}"

    def stop(self, timeout: float = 30) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=timeout)


def serve_in_thread(app: Any, *, start_timeout: float = 30) -> RunningServer:
    """Start ``app`` on a free loopback port; returns once it answers."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="mloop-http")
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the prediction service did not start")
        time.sleep(0.02)
    return RunningServer(server, thread, port)


class JsonClient:
    """A keep-alive JSON client over ``http.client`` (no third-party HTTP library needed)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 60) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode()
        head = {"Content-Type": "application/json", **(headers or {})}
        for attempt in (1, 2):
            try:
                self.conn.request("POST", path, data, head)
                response = self.conn.getresponse()
                return response.status, json.loads(response.read() or b"null")
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                # the server closed an idle keep-alive connection before the request reached it
                self.conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def header_timeout_protocol() -> Any:
    """uvicorn's httptools protocol, closing a connection whose request headers do not arrive
    within ``HEADER_TIMEOUT_S`` (uvicorn itself waits forever for half-sent headers); ``"auto"``
    when httptools is not installed."""
    try:
        from mloop.serving._slow_clients import HeaderTimeoutProtocol
    except ImportError:
        return "auto"
    return HeaderTimeoutProtocol


def run_foreground(app: str, **options: Any) -> None:
    """Run ``app`` (an import string) under uvicorn in this process until SIGTERM or SIGINT, as
    ``uvicorn.run`` does, but a requested stop exits 0 whatever the number of workers: after its
    graceful shutdown one uvicorn server re-raised the signal and died by it (status 143), while its
    multi-process supervisor exited 0."""
    import uvicorn

    options.setdefault("log_config", None)  # uvicorn's records go to mloop's handler (configure_logging)
    if options.get("workers", 1) > 1:
        uvicorn.run(app, **options)
        return

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                self._captured_signals.clear()  # the stop was asked for and done: not a death by signal

    config = uvicorn.Config(app, **options)
    server = Server(config)
    server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's own status for a server that never started
