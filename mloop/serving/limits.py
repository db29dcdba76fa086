"""HTTP limits every protocol shares: body size, read time, JSON nesting and string validity.

A body is read chunk by chunk and refused with 413 as soon as it passes ``max_body_bytes`` (never
read whole first); a client that sends it slower than ``read_timeout_s`` gets 408. JSON deeper than
``max_depth`` or holding a lone surrogate (``"\\ud800"``, which no UTF-8 store can hold) is refused
before any model sees it. Messages quote at most ~200 characters of what was sent (:func:`clip`).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
from typing import Any

from starlette.requests import ClientDisconnect, Request

from mloop.errors import (
    BodyTooLargeError,
    InputError,
    NotFiniteError,
    ReadTimeoutError,
    UnsupportedEncodingError,
    UnsupportedMediaTypeError,
)
from mloop.names import decimal

__all__ = [
    "check_finite",
    "clip",
    "json_only",
    "media_type",
    "parse_json",
    "read_body",
]

QUOTE_CHARS = 200
LARGEST = 1e300  # numbers beyond overflow a model's arithmetic (NaN answers): refused up front
_SURROGATE = re.compile("[\ud800-\udfff]")


def media_type(content_type: str | None, default: str = "application/json") -> tuple[str, dict[str, str]]:
    """The media type (lower case) and its parameters; names are case-insensitive and a value may be
    quoted (RFC 9110 8.3). A charset other than UTF-8 is refused: bodies are read as UTF-8."""
    mime, *options = [part.strip() for part in (content_type or default).split(";")]
    params = {
        key.strip().lower(): value.strip().strip('"') for key, _, value in (o.partition("=") for o in options)
    }
    if params.get("charset", "utf-8").lower() != "utf-8":
        raise UnsupportedMediaTypeError(
            f"bodies are read as UTF-8, got charset {clip(params['charset'], 40)!r}", field="content-type"
        )
    return mime.lower(), params


def json_only(content_type: str | None) -> None:
    """mloop's own endpoints read JSON: ``application/json`` (or ``…+json``), or no content type."""
    mime, params = media_type(content_type)
    if not (mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))):
        raise UnsupportedMediaTypeError(
            f"send the body as Content-Type: application/json (curl: -H 'content-type: application/json'), "
            f"got {clip(content_type or '', 80)!r}",
            field="content-type",
        )
    if set(params) - {"charset"}:
        raise UnsupportedMediaTypeError(
            f"unrecognized content type parameters: {', '.join(sorted(params))}", field="content-type"
        )


def json_or_binary(content_type: str | None) -> None:
    """The v2 inference protocol reads JSON, or JSON followed by binary tensor data (its binary
    extension, ``application/octet-stream``); no content type reads as JSON (Triton's client sends
    none)."""
    mime, _ = media_type(content_type)
    if mime != "application/octet-stream":
        json_only(content_type)


def clip(text: str, limit: int = QUOTE_CHARS) -> str:
    """``text`` cut to about ``limit`` characters in the middle (a message's end often says what was
    wrong), saying how much was left out."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}…({len(text) - 2 * half} characters)…{text[-half:]}"


async def read_body(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    """The body, refused early when it is (or declares it will be) larger than ``max_bytes``.

    Read from the ASGI messages directly under one ``asyncio.timeout``: anyio's ``fail_after`` and
    Starlette's ``stream()`` generator cost ~8 µs per request, as much as validating a row.
    """
    # every Content-Encoding header, as one list (two headers mean what their values joined by ", " do)
    encoding = ", ".join(request.headers.getlist("content-encoding")).strip().lower()
    if any(part.strip() not in ("identity", "") for part in encoding.split(",")):
        raise UnsupportedEncodingError(
            f"Content-Encoding {clip(encoding, 40)!r} is not accepted: send the body uncompressed",
            field="content-encoding",
        )
    declared = request.headers.get("content-length", "")
    length = decimal(declared, 18)
    if length is not None and length > max_bytes:
        raise BodyTooLargeError(
            f"the body ({length} bytes) exceeds the limit of {max_bytes} bytes", field="body"
        )
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] != "http.request":  # http.disconnect
                    raise ClientDisconnect()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > max_bytes:
                    raise BodyTooLargeError(f"the body exceeds the limit of {max_bytes} bytes", field="body")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError as exc:
        raise ReadTimeoutError(f"the body was not received within {timeout_s:g} s", field="body") from exc
    except ClientDisconnect as exc:
        raise ReadTimeoutError("the client disconnected before sending its body", field="body") from exc
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json(raw: bytes | str, max_depth: int) -> Any:
    """The JSON value of ``raw``; refuses invalid JSON, nesting deeper than ``max_depth``, lone
    surrogates in any string (keys included) and numbers beyond ±1e300 (the field is the key
    the number is under)."""
    try:
        value = _DECODER.decode(_text(raw))
    except RecursionError as exc:
        raise InputError(f"the JSON nests deeper than {max_depth} levels", field="body") from exc
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        if "integer string conversion" in str(exc):  # Python's own limit; its hint is for developers
            raise InputError(
                f"the body holds an integer of more than {sys.get_int_max_str_digits()} digits", field="body"
            ) from exc
        raise InputError(clip(f"the body is not valid JSON: {exc}"), field="body") from exc
    _check_value(value, max_depth)
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


# built once: json.loads with an option builds a new decoder for every body (~1.5 µs)
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _text(raw: bytes | str) -> str:
    """What ``json.loads`` decodes: UTF-8, -16 or -32 bytes as text; a leading BOM is an error."""
    text = raw if isinstance(raw, str) else raw.decode(json.detect_encoding(raw), "surrogatepass")
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return text


def _check_value(value: Any, max_depth: int) -> None:
    """One iterative walk: depth, strings that are not valid Unicode, numbers out of range."""
    if not isinstance(value, dict | list):
        _check_scalar(value)
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise InputError(f"the JSON nests deeper than {max_depth} levels", field="body")
        # the common values (in-range floats, ASCII keys) are checked inline: a call per value was
        # a third of parsing a one-row body
        if isinstance(node, dict):
            for key, item in node.items():
                if not key.isascii():
                    _check_string(key)
                kind = type(item)
                if kind is float:
                    if not -LARGEST <= item <= LARGEST:
                        _check_scalar(item, key)
                elif kind is dict or kind is list:
                    stack.append((item, depth + 1))
                else:
                    _check_scalar(item, key)
        else:
            for item in node:
                kind = type(item)
                if kind is float:
                    if not -LARGEST <= item <= LARGEST:
                        _check_scalar(item)
                elif kind is dict or kind is list:
                    stack.append((item, depth + 1))
                else:
                    _check_scalar(item)


def _check_scalar(value: Any, field: str = "body") -> None:
    if isinstance(value, str):
        _check_string(value)
    elif isinstance(value, float | int) and not isinstance(value, bool) and not -LARGEST <= value <= LARGEST:
        shown = clip(repr(value), 40)
        raise InputError(f"{shown} is not a finite number within ±{LARGEST:g}", field=clip(field, 100))


def _check_string(text: str) -> None:
    if not text.isascii() and _SURROGATE.search(text):
        raise InputError(
            f"the string {clip(ascii(text), 60)} holds a lone surrogate (not valid Unicode)", field="body"
        )


def check_finite(predictions: list[Any], probabilities: list[list[float]] | None) -> None:
    """Refuse an answer that is not a finite number (NaN or ±inf cannot be served or logged)."""
    for values in (predictions, *(probabilities or ())):
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise NotFiniteError(
                    f"the model's answer is not a finite number ({v}); the inputs are likely too large",
                    field="instances",
                )
