"""The load-test gate: serve a candidate model version on loopback, in its own process, and replay
requests at a given concurrency; p99 latency and error-rate budgets decide.

The candidate is copied into a throw-away one-model workspace and served from there by ``mloop serve``
(the same service production runs), so the test neither moves the real registry's aliases nor writes
to the real prediction log. Every answer must also be a valid prediction response (one prediction per
instance): that is the prediction-service test of the same gate.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mloop.entities import ModelStatus
from mloop.errors import ConfigurationError, ParameterError
from mloop.stores.base import NewArtifact
from mloop.workspace import Workspace, parse_model_ref

__all__ = ["LoadTestReport", "load_test"]

_ALIAS = "candidate"


@dataclass
class LoadTestReport:
    """What the replay measured and whether the budgets held (``reasons`` says why not)."""

    version: str
    requests: int
    concurrency: int
    p50_ms: float | None
    p99_ms: float | None
    error_rate: float
    p99_budget_ms: float
    max_error_rate: float
    passed: bool
    seconds: float
    reasons: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _candidate_workspace(workspace: Workspace, version_ref: str, root: Path) -> str:
    """Copy the candidate into a one-model workspace under ``root``; return the model's name."""
    name, _, _ = parse_model_ref(version_ref)
    version = workspace.model_version(version_ref)
    art = workspace.metadata.get_artifact(version.artifact_id)
    data = workspace.artifacts.get(art.digest)
    copy = Workspace.open(root / ".mloop", metadata_url="", artifact_url="")
    try:
        digest, uri = copy.artifacts.put(data)
        stored = copy.metadata.add_artifact(NewArtifact(digest, art.type, art.python_type, len(data), uri))
        registry = copy.model_registry()
        new = registry.register(
            name,
            artifact_id=stored.id,
            run_id=version.run_id,
            signature=version.signature,
            metrics=version.metrics,
            tags=version.tags,
            status=ModelStatus.REGISTERED,
            who="load test",
        )
        registry.set_alias(name, _ALIAS, new.version, who="load test", reason=f"load test of {version_ref}")
    finally:
        copy.close()
    return name


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2):
                return
        except (OSError, urllib.error.URLError):
            if process.poll() is not None:
                raise ConfigurationError(
                    f"the candidate's service exited with code {process.returncode} before it was ready",
                    field="version",
                ) from None
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"the candidate's service was not ready within {timeout_s:g} s", field="version"
                ) from None
            time.sleep(0.2)


def _one(url: str, instance: Mapping[str, Any]) -> tuple[float, str | None]:
    """Latency in ms and the problem with the answer (None when it is a valid prediction)."""
    body = json.dumps({"instances": [dict(instance)]}, default=str).encode()
    request = urllib.request.Request(f"{url}/predict", body, {"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return (
            time.perf_counter() - start
        ) * 1000, f"HTTP {exc.code}: {exc.read()[:200].decode(errors='replace')}"
    except (OSError, ValueError) as exc:
        return (time.perf_counter() - start) * 1000, f"{type(exc).__name__}: {exc}"
    elapsed = (time.perf_counter() - start) * 1000
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list) or len(predictions) != 1:
        return elapsed, f"not a prediction response: {str(answer)[:200]}"
    return elapsed, None


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load_test(
    workspace: Workspace,
    version_ref: str,
    requests: Sequence[Mapping[str, Any]],
    concurrency: int = 4,
    p99_budget_ms: float = 200.0,
    max_error_rate: float = 0.01,
    *,
    start_timeout_s: float = 120.0,
) -> LoadTestReport:
    """Serve ``version_ref`` (``NAME:VERSION`` or ``NAME@ALIAS``) on loopback in its own process and
    replay ``requests`` (one instance each, e.g. recent logged requests) at ``concurrency``."""
    if not requests:
        raise ParameterError("a load test needs at least one request to replay", field="requests")
    if concurrency < 1:
        raise ParameterError(f"concurrency must be at least 1, got {concurrency}", field="concurrency")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mloop-loadtest-") as tmp:
        name = _candidate_workspace(workspace, version_ref, Path(tmp))
        port = _free_port()
        env = {**os.environ, "MLOOP_WORKSPACE": str(Path(tmp) / ".mloop")}
        for key in ("MLOOP_METADATA_URL", "MLOOP_ARTIFACT_URL"):
            env.pop(key, None)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mloop",
                "serve",
                name,
                "--alias",
                _ALIAS,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workspace",
                str(Path(tmp) / ".mloop"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=tmp,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, process, start_timeout_s)
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                results = list(pool.map(lambda row: _one(url, row), requests))
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    latencies = [ms for ms, problem in results if problem is None]
    errors = [problem for _, problem in results if problem is not None]
    error_rate = len(errors) / len(results)
    p50 = _quantile(latencies, 0.5) if latencies else None
    p99 = _quantile(latencies, 0.99) if latencies else None
    reasons = []
    if p99 is not None and p99 > p99_budget_ms:
        reasons.append(f"p99 latency {p99:.1f} ms exceeds the {p99_budget_ms:g} ms budget")
    if error_rate > max_error_rate:
        reasons.append(f"error rate {error_rate:.1%} exceeds {max_error_rate:.1%} (first: {errors[0]})")
    return LoadTestReport(
        version_ref,
        len(results),
        concurrency,
        p50,
        p99,
        error_rate,
        p99_budget_ms,
        max_error_rate,
        not reasons,
        time.perf_counter() - started,
        reasons,
        errors[:5],
    )
