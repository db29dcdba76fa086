"""The prediction log behind a real service: what a request may put in it, and that monitoring, the
scheduler and feedback keep working across bad input, old logs, several workers and restarts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from commands import mloop_command
from sklearn.linear_model import LogisticRegression

import mloop
from mloop.entities import new_id
from mloop.monitoring.log import labelled_predictions

COLS = ["a", "b"]


def _data(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    df["y"] = (df["a"] + df["b"] > 0).astype(int)
    return df


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A workspace at ``<project>/.mloop`` whose ``clf`` v1 (classes [0, 1]) is in production."""
    with mloop.Workspace.open(tmp_path / ".mloop") as ws:
        df = _data(0, 400)
        stats = mloop.compute_statistics(df[COLS])
        signature = {
            "inputs": mloop.infer_schema(stats).to_dict(),
            "output": {"task": "classification", "label": "y", "classes": [0, 1]},
        }
        model = LogisticRegression().fit(df[COLS], df["y"])
        ws.promote("clf", ws.register_model("clf", model, signature=signature).version)
    return tmp_path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``mloop serve clf`` as a real process; stopped with SIGTERM (killed if it will not stop)."""

    def __init__(self, project: Path, *extra: str) -> None:
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        workspace = str(project / ".mloop")
        self.proc = subprocess.Popen(
            [*mloop_command(), "serve", "clf", "--port", str(self.port), "--workspace", workspace, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: kill() reaches the workers too
        )  # fmt: skip
        deadline = time.monotonic() + 120  # a generous bound: a busy machine starts slowly
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(self.proc.stderr.read().decode() if self.proc.stderr else "exited")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("mloop serve did not become ready")
            time.sleep(0.1)

    def post(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=60, **kwargs)  # a new connection: any worker

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
        assert self.proc.returncode == 0, self.proc.returncode  # a requested stop exits 0

    def kill(self) -> None:
        """Stop the server and its workers whatever state they are in (the test's cleanup)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:  # even when the test failed: no server outlives it
        server.kill()


def _rows(n: int, seed: int = 9) -> list[dict]:
    return _data(seed, n)[COLS].to_dict("records")


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*mloop_command(), *args, "--workspace", str(project / ".mloop")],
        cwd=project, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def _monitor(project: Path) -> dict:
    done = _cli(project, "monitor", "clf", "--window", "5", "--no-store", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_value_the_log_cannot_hold_is_refused_and_monitoring_keeps_working(
    project: Path, servers: list[Server]
) -> None:
    server = Server(project, "--flush-interval", "0.2")
    servers.append(server)
    ids = [
        pid
        for _ in range(3)
        for pid in server.post("/predict", json={"instances": _rows(2)}).json()["prediction_ids"]
    ]
    true = server.post("/feedback", json={"prediction_id": ids[0], "label": True})  # True in [0, 1]
    assert true.status_code == 422 and true.json()["error"]["field"] == "label"
    assert server.post("/feedback", json={"prediction_id": ids[0], "label": "1"}).status_code == 422
    assert server.post("/feedback", json={"prediction_id": ["x"], "label": 1}).status_code == 422
    for bad in (b'"\\ud800"', b"123", b"[1, 2]"):  # a lone surrogate, a number, a list as the key
        body = b'{"instances": [{"a": 0.1, "b": 0.2}], "key": ' + bad + b"}"
        refused = server.post("/predict", content=body, headers={"content-type": "application/json"})
        # a lone surrogate is refused wherever it is in the body, when the body is parsed
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["field"] in ("key", "body"), refused.text
    keyed = server.post("/predict", json={"instances": _rows(1)}, headers={"x-request-key": "k-1"})
    assert keyed.status_code == 200
    ok = server.post("/feedback", json={"feedback": [{"prediction_id": i, "label": 1} for i in ids]})
    assert ok.json() == {"accepted": 6}
    root = project / ".mloop" / "prediction-log"
    (root / "clf" / "predictions" / f"{new_id()}.parquet").write_bytes(b"not parquet")  # a torn copy
    labelled_predictions(root, "clf")  # what monitor and the scheduler read: sets the segment aside
    counted = 'mloop_prediction_log_quarantined_segments_total{model="clf"} 1.0'
    deadline = time.monotonic() + 30
    while counted not in httpx.get(f"{server.url}/metrics", timeout=30).text:
        assert time.monotonic() < deadline, "the service did not count the quarantined segment"
        time.sleep(0.2)
    server.stop()
    frame = labelled_predictions(root, "clf")
    assert len(frame) == 7 and frame["label"].notna().sum() == 6  # every neighbour's record is there
    report = _monitor(project)
    assert sum(w["labelled"] for w in report["windows"]) == 6
    assert report["log_health"]["unmatched_labels"] == 0
    assert report["log_health"]["quarantined_segments"] == 1


def _legacy(folder: Path, columns: dict[str, list[object]]) -> None:
    """A segment as the log wrote them before types were pinned: typed by its own values."""
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), folder / f"{new_id()}.parquet")
    time.sleep(0.002)


TOML = """
[[triggers]]
name = "decay"
kind = "degradation"
model = "clf"
window = 10
min_labelled = 5
threshold = 0.5
pipeline = "{job}:job"
"""

JOB = """
import mloop

@mloop.step
def nothing() -> int:
    return 1

@mloop.pipeline
def job() -> None:
    nothing()
"""


def test_an_old_log_with_mixed_types_is_read_by_monitor_and_the_scheduler(project: Path) -> None:
    log = project / ".mloop" / "prediction-log" / "clf"
    rows = _rows(20)
    ids = [f"{new_id()}-0" for _ in rows]
    for i in range(0, 20, 10):  # two flushes, each typed by its own values (the old writer)
        part = range(i, i + 10)
        _legacy(log / "predictions", {
            "prediction_id": [ids[j] for j in part],
            "ts": [datetime.now(UTC)] * 10, "model": ["clf"] * 10, "version": [1] * 10,
            "role": ["production"] * 10, "latency_ms": [0.3] * 10,
            "request_key": [123] * 10 if i == 0 else [[1, 2]] * 10,
            "prediction": [1] * 10, "probability": [0.8] * 10, "score": [0.8] * 10,
            "input.a": [rows[j]["a"] for j in part], "input.b": [rows[j]["b"] for j in part],
        })  # fmt: skip
    _legacy(log / "feedback", {"prediction_id": ids[:10], "label": [1] * 10, "ts": [datetime.now(UTC)] * 10})
    _legacy(
        log / "feedback", {"prediction_id": ids[10:], "label": [True] * 10, "ts": [datetime.now(UTC)] * 10}
    )
    (project / "job.py").write_text(JOB)
    (project / "mloop.toml").write_text(TOML.format(job=project / "job.py"))
    tick = _cli(project, "scheduler", "run", "--once")
    assert tick.returncode == 0, tick.stderr  # was: exit 1, ArrowTypeError on the first tick
    assert "Traceback" not in tick.stderr and "ArrowTypeError" not in tick.stderr
    human = _cli(project, "monitor", "clf", "--window", "5", "--no-store")
    assert human.returncode == 0, human.stderr  # was: unexpected ArrowTypeError: Unable to merge …
    assert "uncastable values 10" in human.stdout  # the list keys, read as null
    report = _monitor(project)
    assert [w["labelled"] for w in report["windows"]] == [5, 5, 5, 5]
    assert report["log_health"]["uncastable_values"] == 10


@pytest.mark.slow
def test_feedback_reaches_any_worker_and_survives_a_restart(project: Path, servers: list[Server]) -> None:
    server = Server(project, "--workers", "4", "--flush-interval", "0.5")
    servers.append(server)
    answers = [server.post("/predict", json={"instances": _rows(1, seed=i)}).json() for i in range(120)]
    ids = [a["prediction_ids"][0] for a in answers]
    labels = {pid: int(a["predictions"][0]) for pid, a in zip(ids, answers, strict=True)}
    statuses = [server.post("/feedback", json={"prediction_id": pid, "label": labels[pid]}).status_code
                for pid in ids[:100]]  # fmt: skip
    assert statuses == [200] * 100  # whichever worker answered the prediction
    server.stop()
    again = Server(project, "--workers", "2", "--flush-interval", "0.5")
    servers.append(again)
    statuses = [again.post("/feedback", json={"prediction_id": pid, "label": labels[pid]}).status_code
                for pid in ids[100:]]  # fmt: skip
    assert statuses == [200] * 20  # ids this process never answered, from before the restart
    again.stop()
    frame = labelled_predictions(project / ".mloop" / "prediction-log", "clf")
    assert sorted(frame["prediction_id"]) == sorted(ids)
    assert frame.set_index("prediction_id")["label"].astype(int).to_dict() == labels
    health = frame.attrs["log_health"]
    assert (health.unmatched_labels, health.conflicting_labels) == (0, 0)
