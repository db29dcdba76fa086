"""HTTP limits: body size enforced while the body streams in, slow bodies timed out, deep JSON and
long values refused with short messages, on every protocol."""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path

import pytest
from serving_helpers import fit, register, training_data

import mloop

COLS = ["a", "b"]


@pytest.fixture
def ws(tmp_path: Path):
    with mloop.Workspace.open(tmp_path / "ws") as workspace:
        df = training_data()
        workspace.promote("clf", register(workspace, fit(df, COLS), df, COLS).version)
        yield workspace


def raw_request(port: int, head: str, parts: list[bytes], timeout: float = 30) -> tuple[int, bytes, int]:
    """Send ``head`` then ``parts`` until the server answers; (status, body, bytes of parts sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        sent = 0
        for part in parts:
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(part)
        sock.shutdown(socket.SHUT_WR) if sent == sum(map(len, parts)) else None
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    return int(head_bytes.split()[1]), body, sent


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_a_declared_huge_body_is_refused_before_it_is_sent(ws, serve) -> None:
    served = serve(ws, max_body_bytes=1024 * 1024)
    port = int(served.url.rsplit(":", 1)[1])
    head = (
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {100 * 1024**2}\r\n\r\n"
    )
    status, body, _ = raw_request(port, head, [])
    assert status == 413 and "exceeds the limit of 1048576 bytes" in json.loads(body)["error"]["message"]


def test_a_chunked_body_is_cut_off_while_it_streams(ws, serve) -> None:
    served = serve(ws, max_body_bytes=256 * 1024)
    port = int(served.url.rsplit(":", 1)[1])
    head = "POST /v2/models/clf/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"x" * 64 * 1024
    parts = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"] * 1600  # 100 MB if it were all read
    status, body, sent = raw_request(port, head, parts)
    assert status == 413 and json.loads(body) == {"error": "the body exceeds the limit of 262144 bytes"}
    assert sent < 50 * 1024**2, "the server read far past its limit"


def test_a_slow_body_gets_408(ws, serve) -> None:
    served = serve(ws, read_timeout_s=0.5)
    port = int(served.url.rsplit(":", 1)[1])
    head = (
        "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode() + b'{"inputs": ')  # then nothing more
        answer = sock.recv(65536)
    assert answer.split()[1] == b"408"
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error_code"] == "REQUEST_TIMEOUT"


@pytest.mark.parametrize("path", ["/predict", "/v2/models/clf/infer", "/invocations", "/feedback"])
def test_deep_json_and_long_values_get_short_4xx(ws, serve, path: str) -> None:
    served = serve(ws)
    deep = served.client.post(path, content=b'{"instances": ' + b"[" * 100 + b"]" * 100 + b"}",
                              headers={"content-type": "application/json"})  # fmt: skip
    assert 400 <= deep.status_code < 500 and "nests deeper than 32" in deep.text
    long = "x" * 1_000_000
    bodies = {
        "/predict": {"instances": [{"a": long, "b": 1.0}]},
        "/v2/models/clf/infer": {"inputs": [{"name": long, "shape": [1], "datatype": "FP64", "data": [1.0]}]},
        "/invocations": {"inputs": [{"a": long, "b": 1.0}]},
        "/feedback": {"prediction_id": long, "label": 1},
    }
    response = served.client.post(path, json=bodies[path])
    assert 400 <= response.status_code < 500 and len(response.content) < 1200, response.text[:2000]
    digits = served.client.post(path, content=b'{"instances": [{"a": ' + b"9" * 5000 + b"}]}",
                                headers={"content-type": "application/json"})  # fmt: skip
    assert 400 <= digits.status_code < 500 and "integer of more than 4300 digits" in digits.text
    assert "sys." not in digits.text  # Python's hint to developers is not the caller's concern


@pytest.mark.parametrize("path", ["/predict", "/v2/models/clf/infer", "/invocations", "/feedback"])
def test_a_compressed_body_is_a_415_that_names_the_encoding(ws, serve, path: str) -> None:
    import gzip

    served = serve(ws)
    body = {"/feedback": {"prediction_id": "x", "label": 1}}.get(path, {"instances": [{"a": 1.0, "b": 2.0}]})
    if path.startswith("/v2"):
        body = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]}]}
    raw = json.dumps(body).encode()
    for encoding in ("gzip", "Deflate", "br, gzip"):
        response = served.client.post(
            path,
            content=gzip.compress(raw),
            headers={"content-type": "application/json", "content-encoding": encoding},
        )
        assert response.status_code == 415, (encoding, response.status_code, response.text[:300])
        assert encoding.lower() in response.text and response.headers["accept-encoding"] == "identity"
    # two headers mean their values joined: identity, then gzip, is gzip
    twice = [
        ("content-type", "application/json"),
        ("content-encoding", "identity"),
        ("content-encoding", "gzip"),
    ]
    assert served.client.post(path, content=gzip.compress(raw), headers=twice).status_code == 415
    plain = served.client.post(path, content=raw, headers={"content-type": "application/json",
                                                           "content-encoding": "identity"})  # fmt: skip
    assert plain.status_code != 415, plain.text


def test_half_sent_headers_are_cut_off(ws) -> None:
    import threading
    import time

    import uvicorn

    from mloop.serving._slow_clients import HeaderTimeoutProtocol
    from mloop.serving.app import ServeConfig, create_app

    class Quick(HeaderTimeoutProtocol):
        header_timeout_s = 0.5

    app = create_app(ws, ServeConfig(model="clf", log_predictions=False))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", http=Quick))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.02)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
            slow.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never the rest
            assert slow.recv(1024) == b"", "the server kept a half-sent request open"
        with socket.create_connection(("127.0.0.1", port), timeout=30) as ok:  # others are still served
            ok.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert ok.recv(1024).split()[1] == b"200"
            time.sleep(0.7)  # past the first timeout: a later request gets its own time
            ok.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert ok.recv(1024).split()[1] == b"200"
            started = time.monotonic()
            ok.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # a later request, half-sent
            assert ok.recv(1024) == b"", "the server kept a half-sent later request open"
            assert time.monotonic() - started >= 0.4
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def test_one_row_requests_are_answered_while_a_large_body_is_being_handled(ws, serve) -> None:
    """A large request is parsed and predicted off the event loop: one-row requests sent after its body
    has been sent are answered before it is (on the event loop, none could be answered until it was)."""
    import threading
    import time

    import httpx

    served = serve(ws, max_batch_rows=200_000, max_body_bytes=64 * 1024 * 1024)
    port = int(served.url.rsplit(":", 1)[1])
    body = json.dumps({"instances": training_data(7, 150_000)[COLS].to_dict("records")}).encode()  # ~8 MB
    head = (
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sent, done = threading.Event(), {}

    def send_big() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=300) as sock:
            sock.sendall(head.encode() + body)  # returns once the server has taken (nearly) all of it
            sent.set()
            reply = b""
            while b"\r\n" not in reply:
                reply += sock.recv(65536)
        done["big"] = time.monotonic()
        done["status"] = reply.split(b" ", 2)[1]

    sender = threading.Thread(target=send_big, daemon=True)
    sender.start()
    assert sent.wait(timeout=120)
    small = {"instances": training_data(5, 1)[COLS].to_dict("records")}
    answered = []
    with httpx.Client(base_url=served.url, timeout=120) as client:
        while "big" not in done and len(answered) < 5:
            assert client.post("/predict", json=small).status_code == 200
            answered.append(time.monotonic())
    sender.join(timeout=300)
    assert done.get("status") == b"200", done
    assert sum(t < done["big"] for t in answered) >= 3, (answered, done)


def _answer(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        # refused before everything was sent: the answer is still there to read
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and len(data) >= data.index(b"\r\n\r\n") + 4 + _length(data):
                break
        return data


def test_request_headers_beyond_64_kib_are_a_431(ws, serve) -> None:
    """httptools buffers a header of any size (a 60 MB header was answered 200 after 4.5 s)."""
    port = int(serve(ws).url.rsplit(":", 1)[1])
    one_big = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    many = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"X-N: 0123456789\r\n" * 5000 + b"\r\n"
    for request in (one_big, many):
        answer = _answer(port, request)
        assert answer.split()[1] == b"431", answer[:200]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"].startswith("the request headers")
    near = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 60_000 + b"\r\n\r\n"
    assert _answer(port, near).split()[1] == b"200"
    body = json.dumps({"instances": training_data(3, 5)[COLS].to_dict("records")}).encode() + b" " * 200_000
    head = "POST /predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: "
    head += str(len(body))
    assert _answer(port, head.encode() + b"\r\n\r\n" + body).split()[1] == b"200"  # a body is not a header
