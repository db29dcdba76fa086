"""A connection that does not finish sending its request headers in time is closed.

uvicorn times out idle keep-alive connections and the app times out slow bodies (408), but nothing
times out a request whose headers trickle in: 800 half-sent requests would hold 800 connections
forever. This subclass of uvicorn's httptools protocol gives a connection's first request, and
each one after it, ``header_timeout_s`` from when it begins to complete its headers; one timer per
connection checks it.

It also tells the app how busy the server is: each request's scope carries uvicorn's set of request
tasks in flight under :data:`~mloop.serving.batching.IN_FLIGHT`, so a request that is alone is
predicted at once instead of waiting a turn of the event loop for partners that are not coming.

And it answers in one write: uvicorn writes a response's status line and headers, then its body,
as two sends, and on a busy machine the first wakes the client only for it to sleep again until the
second (the header write was a fifth of the service's time at concurrency 1 in a py-spy profile).
What a request's cycle writes during one turn of the event loop goes out as one send at the end
of that turn (:class:`_OneWrite`).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mloop.serving.batching import IN_FLIGHT

__all__ = ["HeaderTimeoutProtocol"]


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """Closes connections whose request headers take longer than ``header_timeout_s``."""

    header_timeout_s = float(os.environ.get("MLOOP_HEADER_TIMEOUT_S", "10"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        # when the awaited request's headers are due (loop time); None while none is awaited. The
        # timer is not re-armed per request (a call_later and a cancel, ~2 µs each time): when it
        # fires it closes the connection if the headers are late, waits again if they are not yet
        # due, and stops if no request is being received.
        self._headers_due: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._one_write = _OneWrite(transport, self.loop)
        self._await_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._headers_due is None:
            self._await_headers()

    def on_headers_complete(self) -> None:
        self._headers_due = None
        self.scope[IN_FLIGHT] = self.tasks  # type: ignore[literal-required]  # the live set, not a count
        # the request's cycle is built here and takes self.transport: it gets the coalescing one,
        # everything else (flow control, timeouts, upgrades) keeps the real transport
        real = self.transport
        self.transport = self._one_write  # type: ignore[assignment]
        try:
            super().on_headers_complete()
        finally:
            self.transport = real

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_due = None
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        self._headers_due = self.loop.time() + self.header_timeout_s
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._check)

    def _check(self) -> None:
        self._header_timer = None
        due = self._headers_due
        if due is None:  # no request is being received: the next one arms the timer again
            return
        left = due - self.loop.time()
        if left > 0:
            self._header_timer = self.loop.call_later(left, self._check)
        elif not self.transport.is_closing():
            self.transport.close()


class _OneWrite:
    """A transport whose writes during one turn of the event loop are sent together, at its end.

    A response's head and body (and a ``100 Continue``) are held for at most the rest of the turn
    that wrote them; closing sends what is held first. Everything but ``write`` and ``close`` is the
    real transport's.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self._flush)
        self._held.append(data)

    def _flush(self) -> None:
        held, self._held = self._held, []
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
