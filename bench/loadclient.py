"""A load generator's HTTP/1.1 client: one keep-alive connection on a raw socket.

Python's ``http.client`` and ``httpx`` spend ~0.1–2 ms of the client's own CPU per request (header
parsing through ``email.parser``, response objects, pools); on a 2-core machine that CPU is taken
from the server being measured, and at concurrency 1 it is a third of mloop's round trip. Load
generators such as wrk send prepared bytes and read the answer by its Content-Length; this does the
same in Python, so the benchmarks measure the servers rather than the client. Both tools in a
benchmark are always driven by the same client.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

__all__ = ["KeepAlive"]


class KeepAlive:
    """One keep-alive connection to ``127.0.0.1:port``; ``headers`` go with every request."""

    def __init__(self, port: int, headers: Mapping[str, str] | None = None, timeout: float = 60) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fixed = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.buffer = b""

    def prepare(
        self, method: str, target: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> bytes:
        """The request's bytes, to send again and again with :meth:`send`."""
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        length = f"Content-Length: {len(body)}\r\n" if body or method in ("POST", "PUT") else ""
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{self.fixed}{extra}{length}\r\n"
        return head.encode("latin-1") + body

    def request(
        self, method: str, target: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        """Send one request and read its answer: ``(status, body)``."""
        return self.send(self.prepare(method, target, body, headers))

    def send(self, request: bytes) -> tuple[int, bytes]:
        """Send prepared bytes and read the answer: ``(status, body)``."""
        self.sock.sendall(request)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4 :]
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if "content-length" in fields:
            return status, self._take(int(fields["content-length"]))
        if fields.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                while (eol := self.buffer.find(b"\r\n")) < 0:
                    self._fill()
                size = int(self.buffer[:eol].split(b";")[0], 16)
                self.buffer = self.buffer[eol + 2 :]
                chunk = self._take(size + 2)[:size]
                if size == 0:
                    return status, b"".join(chunks)
                chunks.append(chunk)
        raise RuntimeError(f"an answer with neither Content-Length nor chunks: {head!r}")

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def _fill(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> KeepAlive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
