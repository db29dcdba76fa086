"""Adaptive micro-batching: concurrent requests share model calls, and each still gets its own answer,
its own prediction ids and log records, its own error, and its own canary or shadow routing."""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from commands import mloop_command
from serving_helpers import fit, register, training_data
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

import mloop
from mloop.errors import NotFiniteError
from mloop.monitoring.log import read_log
from mloop.serving.batching import Batcher
from mloop.serving.config import ServeConfig, serve_defaults
from mloop.serving.service import ModelService
from mloop.serving.traffic import choose

COLS = ["a", "b"]


@pytest.fixture
def ws(tmp_path: Path):
    with mloop.Workspace.open(tmp_path / "ws") as workspace:
        df = training_data()
        workspace.promote("clf", register(workspace, fit(df, COLS), df, COLS).version)
        yield workspace


def distinct_rows(n: int) -> list[dict]:
    return training_data(11, n)[COLS].to_dict("records")


def calls_and_requests(text: str) -> tuple[float, float, float]:
    """(model calls, requests they answered, calls that answered exactly one request) from /metrics."""

    def value(name: str) -> float:
        found = re.search(rf'^{name}{{model="clf"(?:,le="1.0")?}} (\S+)$', text, re.M)
        assert found, f"{name} not in /metrics"
        return float(found.group(1))

    return (
        value("mloop_model_call_requests_count"),
        value("mloop_model_call_requests_sum"),
        float(
            re.search(r'^mloop_model_call_requests_bucket{le="1.0",model="clf"} (\S+)$', text, re.M).group(1)
        ),
    )


def hammer(url: str, bodies: list[dict], threads: int = 12) -> list[tuple[dict, int, dict]]:
    """Each body posted once to /predict, from ``threads`` concurrent keep-alive clients."""
    import httpx

    out: list[tuple[dict, int, dict]] = []
    lock = threading.Lock()

    def client(mine: list[dict]) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            for body in mine:
                r = c.post("/predict", json=body)
                with lock:
                    out.append((body, r.status_code, r.json()))

    workers = [threading.Thread(target=client, args=(bodies[i::threads],)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return out


def test_concurrent_requests_each_get_their_own_answer_ids_and_log_records(ws, serve) -> None:
    served = serve(ws)
    sample = distinct_rows(240)
    bodies = [{"instances": [row]} for row in sample[:200]] + [
        {"instances": sample[200 + 4 * i : 204 + 4 * i]} for i in range(10)
    ]
    answered = hammer(served.url, bodies)
    assert len(answered) == 210 and {status for _, status, _ in answered} == {200}
    model = ws.load_model("clf@production")
    ids = []
    for body, _, answer in answered:
        frame = pd.DataFrame(body["instances"])
        assert answer["predictions"] == model.predict(frame).tolist()
        assert np.allclose(answer["probabilities"], model.predict_proba(frame), atol=1e-6)
        assert len(answer["prediction_ids"]) == len(body["instances"])
        ids += answer["prediction_ids"]
    assert len(set(ids)) == 240  # no id handed out twice, none shared by two requests
    calls, requests, _ = calls_and_requests(served.client.get("/metrics").text)
    assert requests == 210 and 1 <= calls <= 210  # every request answered by exactly one model call

    served.service.log.flush()
    log = read_log(tmp_log(served), "clf").to_pandas().set_index("prediction_id")
    for body, _, answer in answered:  # each id's record holds its own request's inputs and answer
        together = zip(body["instances"], answer["prediction_ids"], answer["predictions"], strict=True)
        for row, pid, predicted in together:
            assert (log.at[pid, "input.a"], log.at[pid, "input.b"]) == (row["a"], row["b"])
            assert log.at[pid, "prediction"] == predicted


def tmp_log(served) -> Path:
    return served.service.log.root.parent


def calls(service: ModelService) -> tuple[float, float]:
    """(requests answered, model calls) so far, from the service's metrics registry."""
    sample = service.metrics.registry.get_sample_value
    return (
        sample("mloop_model_call_requests_sum", {"model": "clf"}) or 0.0,
        sample("mloop_model_call_requests_count", {"model": "clf"}) or 0.0,
    )


def test_requests_that_arrive_together_share_one_model_call(ws, tmp_path: Path) -> None:
    """Deterministic: requests ready in one turn of the event loop form one batch, whatever the load."""
    service = ModelService(ws, ServeConfig(model="clf", flush_interval_s=0.2), tmp_path / "log")
    service.start()
    try:
        sample = distinct_rows(10)
        batcher = Batcher(service, 64)

        async def together() -> list[dict]:
            return await asyncio.gather(*(batcher.predict([row]) for row in sample))

        answers = asyncio.run(together())
        assert calls(service) == (10, 1)  # one model call answered all 10
        alone = [service.predict([row]) for row in sample]
        assert [a["predictions"] for a in answers] == [a["predictions"] for a in alone]
        assert [a["probabilities"] for a in answers] == [a["probabilities"] for a in alone]
        assert len({a["prediction_ids"][0] for a in answers + alone}) == 20

        async def lone() -> dict:
            return await batcher.predict([sample[0]])

        assert asyncio.run(lone())["predictions"] == alone[0]["predictions"]  # no partner needed

        async def too_many() -> list[dict]:  # 64 rows at most per call: 3 x 30 rows → 2 calls
            return await asyncio.gather(*(batcher.predict(distinct_rows(30)) for _ in range(3)))

        before = calls(service)
        asyncio.run(too_many())
        after = calls(service)
        assert (after[0] - before[0], after[1] - before[1]) == (3, 2)
    finally:
        service.stop()


def test_a_failing_row_fails_only_its_own_request(tmp_path: Path) -> None:
    """A row the model cannot predict (an unseen category the encoder refuses) and a row whose answer
    is not finite each fail alone; the requests batched with them are answered."""
    df = training_data()
    df["y"] = df["a"] * 2 + df["b"]
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        stats = mloop.compute_statistics(df[["a", "b", "city"]])
        encoder = ColumnTransformer(
            [("city", OneHotEncoder(handle_unknown="error"), ["city"])], remainder="passthrough"
        )
        model = make_pipeline(encoder, LinearRegression()).fit(df[["a", "b", "city"]], df["y"])
        signature = {
            "inputs": mloop.infer_schema(stats).to_dict(),
            "output": {"task": "regression", "label": "y"},
        }
        ws.promote("clf", ws.register_model("clf", model, signature=signature).version)
        service = ModelService(ws, ServeConfig(model="clf", flush_interval_s=0.2), tmp_path / "log")
        service.start()
        try:
            good = [{"a": 0.1 * i, "b": -0.2, "city": "paris"} for i in range(6)]
            unseen = {"a": 0.5, "b": 0.5, "city": "oslo"}  # out of domain: counted, then the model raises
            huge = {"a": 1e308, "b": 1e308, "city": "rome"}  # valid, but the answer overflows to inf
            batcher = Batcher(service, 64)

            async def together() -> list:
                requests = [[good[0]], [unseen, good[1]], [good[2]], [huge], [good[3], good[4]], [good[5]]]
                return await asyncio.gather(*(batcher.predict(r) for r in requests), return_exceptions=True)

            results = asyncio.run(together())
            assert isinstance(results[1], ValueError) and "unknown categor" in str(results[1])
            assert isinstance(results[3], NotFiniteError)
            expected = model.predict(pd.DataFrame(good)).tolist()
            answered = [r["predictions"] for i, r in enumerate(results) if i not in (1, 3)]
            assert answered == [[expected[0]], [expected[2]], expected[3:5], [expected[5]]]
            service.log.flush()
            logged = read_log(tmp_path / "log", "clf").to_pydict()
            assert len(logged["prediction_id"]) == 5  # the failed requests logged nothing
        finally:
            service.stop()


def test_invalid_requests_fail_alone_over_http(ws, serve) -> None:
    served = serve(ws)
    sample = distinct_rows(60)
    bodies = []
    for i, row in enumerate(sample):
        if i % 5 == 0:
            bodies.append({"instances": [{"a": row["a"]}]})  # missing column b: 422
        elif i % 5 == 1:
            bodies.append({"instances": [{"a": "x", "b": 1.0}]})  # not a number: 422
        else:
            bodies.append({"instances": [row]})
    answered = hammer(served.url, bodies)
    model = ws.load_model("clf@production")
    for body, status, answer in answered:
        row = body["instances"][0]
        if "b" not in row:
            assert status == 422 and answer["error"]["field"] == "b"
        elif row["a"] == "x":
            assert status == 422 and answer["error"]["field"] == "a"
        else:
            assert status == 200 and answer["predictions"] == model.predict(pd.DataFrame([row])).tolist()


def test_canary_and_shadow_routing_stay_per_request(tmp_path: Path, serve) -> None:
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        df = training_data()
        ws.promote("clf", register(ws, fit(df, COLS), df, COLS).version)
        constant = DummyClassifier(strategy="constant", constant=1).fit(df[COLS], df["y"])
        ws.promote("clf", register(ws, constant, df, COLS).version, alias="canary")
        other = LogisticRegression(C=0.01).fit(df[COLS], df["y"])
        ws.promote("clf", register(ws, other, df, COLS).version, alias="shadow")
        served = serve(ws, canary_fraction=0.5, shadow_alias="shadow")
        row = {"a": -3.0, "b": -3.0}  # production (v1) says 0, the canary (v2) says 1
        keys = [f"caller-{i}" for i in range(120)]
        answered = hammer(served.url, [{"instances": [row], "key": k} for k in keys])
        slots = served.service.slots
        assert {status for _, status, _ in answered} == {200}
        for body, _, answer in answered:
            role, _ = choose(slots, 0.5, body["key"])  # sticky: the key decides, not the batch
            assert answer["version"] == (2 if role == "canary" else 1)
            assert answer["predictions"] == [1 if role == "canary" else 0]
        assert {a["version"] for _, _, a in answered} == {1, 2}
        deadline = time.monotonic() + 60
        ids = {a["prediction_ids"][0]: a["version"] for _, _, a in answered}
        while True:
            served.service.log.flush()
            log = read_log(tmp_log(served), "clf").to_pandas()
            shadow = log[log["role"] == "shadow"]
            if len(shadow) == len(ids) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert sorted(shadow["prediction_id"]) == sorted(ids) and set(shadow["version"]) == {3}
        live = log[log["role"] != "shadow"].set_index("prediction_id")["version"].to_dict()
        assert live == ids  # each request's record carries the version that answered it


def test_batch_rows_one_turns_batching_off(ws, serve) -> None:
    served = serve(ws, batch_rows=1)
    answered = hammer(served.url, [{"instances": [row]} for row in distinct_rows(80)])
    assert {status for _, status, _ in answered} == {200}
    calls, requests, single = calls_and_requests(served.client.get("/metrics").text)
    assert calls == requests == single == 80  # one model call per request


def test_batch_rows_from_the_command_line_and_mloop_toml(ws, tmp_path: Path) -> None:
    root = Path(ws.root)
    toml = root.parent / "mloop.toml"
    assert serve_defaults(root.parent) == {}
    toml.write_text("[serve]\nbatch_rows = 16\n")
    assert serve_defaults(root.parent) == {"batch_rows": 16}
    exe = mloop_command()
    for text, expected in (
        (
            "[serve]\nbatch_rows = 0\n",
            "[serve] batch_rows must be an integer from 1 to 1,000,000, got 0",
        ),
        (
            "[serve]\nbatch_rows = 64000000000\n",
            "[serve] batch_rows must be an integer from 1 to 1,000,000, got 64000000000",
        ),
        (
            "[serve]\nbatch_size = 8\n",
            "[serve] has no key 'batch_size' (known: batch_rows)",
        ),
    ):
        toml.write_text(text)
        done = subprocess.run(
            [*exe, "serve", "clf", "--workspace", str(root)], capture_output=True, text=True, timeout=120
        )
        assert (done.returncode, done.stderr.strip()) == (2, f"error: {toml}: {expected}")
    toml.unlink()
    for value in ("0", "1000001"):
        done = subprocess.run(
            [*exe, "serve", "clf", "--batch-rows", value, "--workspace", str(root)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2 and "--batch-rows" in done.stderr


def test_a_lone_request_is_answered_at_once_and_a_pending_batch_still_takes_it(ws, tmp_path: Path) -> None:
    """``lone`` (the server has no other request in flight) skips the wait for partners, but never
    jumps a batch already pending: it joins it."""
    service = ModelService(ws, ServeConfig(model="clf", log_predictions=False), tmp_path / "log")
    service.start()
    try:
        sample = distinct_rows(2)
        batcher = Batcher(service, 64)

        async def lone() -> dict:
            return await batcher.predict([sample[0]], lone=True)

        answer = asyncio.run(lone())
        assert calls(service) == (1, 1)
        assert answer["predictions"] == service.predict([sample[0]])["predictions"]

        async def behind_a_pending_one() -> list[dict]:
            return await asyncio.gather(batcher.predict([sample[0]]), batcher.predict([sample[1]], lone=True))

        before = calls(service)
        answers = asyncio.run(behind_a_pending_one())
        after = calls(service)
        assert (after[0] - before[0], after[1] - before[1]) == (2, 1)  # one call answered both
        assert answers[1]["predictions"] == service.predict([sample[1]])["predictions"]
    finally:
        service.stop()


def test_mloop_serve_protocol_tells_the_app_whether_a_request_is_alone() -> None:
    """Over real HTTP: under ``mloop serve``'s protocol a lone request's scope says it is alone;
    under uvicorn's own protocol nothing is said, so requests wait for partners as before."""
    import socket

    import httpx
    import uvicorn

    from mloop.serving._slow_clients import HeaderTimeoutProtocol
    from mloop.serving.batching import alone

    async def app(scope: dict, receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        body = b"alone" if alone(scope) else b"not said"
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": body})  # type: ignore[operator]

    for protocol, expected in ((HeaderTimeoutProtocol, "alone"), ("httptools", "not said")):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", http=protocol))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while not server.started:
                assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
                time.sleep(0.02)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                assert [client.post("/predict").text for _ in range(3)] == [expected] * 3
        finally:
            server.should_exit = True
            thread.join(timeout=20)
