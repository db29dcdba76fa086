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
    # request line + headers larger than this get a 431 and the connection is closed; httptools
    # itself buffers a header of any size (uvicorn's h11_max_incomplete_event_size is h11's only)
    max_header_bytes = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        # when the awaited request's headers are due (loop time); None while none is awaited. The
        # timer is not re-armed per request (a call_later and a cancel, ~2 µs each time): when it
        # fires it closes the connection if the headers are late, waits again if they are not yet
        # due, and stops if no request is being received.
        self._headers_due: float | None = None
        self._header_bytes = 0  # bytes received while the current request's headers are incomplete
        self._parsed_header_bytes = 0  # the current request's URL and headers, as parsed
        self._headers_too_large = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._headers_due is None or self.transport is None or self.transport.is_closing():
            return  # headers complete (a body in the same read is not counted), or closed
        self._header_bytes += len(data)  # headers still incomplete: httptools is buffering them
        if self._header_bytes > self.max_header_bytes:
            self._send_431()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._parsed_header_bytes = 0
        if self._headers_due is None:
            self._await_headers()

    def on_url(self, url: bytes) -> None:
        self._parsed_header_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed_header_bytes += len(name) + len(value) + 4
        if self._parsed_header_bytes > self.max_header_bytes:  # complete headers within one read
            self._headers_too_large = True
            raise ValueError("request headers too large")  # stops the parser: send_400_response
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        if self._headers_too_large:
            self._send_431()
        else:
            super().send_400_response(msg)

    def _send_431(self) -> None:
        if self.transport.is_closing():
            return
        message = b'{"error":"the request headers exceed %d bytes"}' % self.max_header_bytes
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(message), message)
        )
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._one_write = _OneWrite(transport, self.loop)
        self._await_headers()

    def on_headers_complete(self) -> None:
        self._headers_due = None
        self._header_bytes = 0
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
