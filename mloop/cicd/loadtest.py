"""The load test: serve a candidate model version on loopback, in its own process, and replay
requests at a given concurrency; p99 latency and error-rate budgets decide.

The candidate is copied into a throw-away one-model workspace and served from there by ``mloop serve``
(the same service production runs), so the test neither moves the real registry's aliases nor writes
to the real prediction log. Every answer must also be a valid prediction response (one prediction per
instance): that is the prediction-service test of the same gate.

A few requests (one per concurrent client) warm the service up unmeasured. With ``rounds`` > 1 a p99
over budget is measured again, up to ``rounds`` replays of every request, and each request's latency
is its best over the rounds: a stall of a busy machine that hit some requests in one round does not
count against the candidate, while a request the model is slow on is slow in every round. The error
rate (the prediction-service test) is judged on the first replay and is final at once; once more
requests failed than ``max_error_rate`` allows, the rest of that replay is not sent (the verdict
cannot change, and a hanging candidate is not waited on 30 s per request).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mloop.entities import ModelStatus
from mloop.errors import ConfigurationError, MloopError, ParameterError
from mloop.workspace import Workspace, parse_model_ref

__all__ = ["LoadTestReport", "fit_requests", "load_test"]

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
    rounds: int = 1
    p99_by_round_ms: list[float | None] = field(default_factory=list)
    left_out: int = 0  # logged requests the candidate cannot take (see fit_requests)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """The numbers as metrics (what a rollout records on the candidate's run)."""
        found = {
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "error_rate": self.error_rate,
            "requests": self.requests,
            "rounds": self.rounds,
            "seconds": self.seconds,
            "passed": float(self.passed),
        }
        return {k: float(v) for k, v in found.items() if v is not None}

    def summary(self) -> str:
        """The numbers in one line, e.g. for an alias-history reason."""
        p99 = "no answer" if self.p99_ms is None else f"p99 {self.p99_ms:.1f} ms"
        rounds = f", {self.rounds} rounds" if self.rounds > 1 else ""
        rounds += f" ({self.left_out} logged request(s) left out)" if self.left_out else ""
        return (
            f"{p99} (budget {self.p99_budget_ms:g} ms), errors {self.error_rate:.1%} "
            f"(at most {self.max_error_rate:.1%}) on {self.requests} requests at concurrency "
            f"{self.concurrency}{rounds}"
        )


Answer = tuple[float, str | None]  # latency in ms, and the problem with the answer (None: valid)


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
        stored = copy.store_bytes(data, type=art.type, python_type=art.python_type)
        registry = copy.registry
        # the replayed requests carry the feature values the service used (the log's input columns),
        # so the copy, which has no feature store, serves them as they are instead of by entity key
        signature = {k: v for k, v in version.signature.items() if k != "feature_service"}
        new = registry.register(
            name,
            artifact_id=stored.id,
            run_id=version.run_id,
            signature=signature,
            metrics=version.metrics,
            tags=version.tags,
            status=ModelStatus.REGISTERED,
            who="load test",
        )
        registry.set_alias(name, _ALIAS, new.version, who="load test", reason=f"load test of {version_ref}")
    finally:
        copy.close()
    return name


def _last_error(log_file: Path) -> str:
    """The service's own last word before it exited: the exception it raised (a traceback's last
    line, or mloop's ``error:`` line), else its last line mentioning an error, else its last line."""
    try:
        lines = [line.strip() for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    raised = [line for line in lines if _RAISED.match(line)]
    errors = [line for line in lines if "error" in line.lower()]
    last = (raised or errors or lines or [""])[-1]
    return f": {last[:300]}" if last else ""


_RAISED = re.compile(r"^(error: |[A-Za-z_][\w.]*(Error|Exception)\b)")


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float, log_file: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2):
                return
        except (OSError, urllib.error.URLError):
            if process.poll() is not None:
                raise ConfigurationError(
                    f"the candidate's service exited with code {process.returncode} before it was ready"
                    + _last_error(log_file),
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


def _replay(
    url: str, requests: Sequence[Mapping[str, Any]], concurrency: int, max_failures: int | None = None
) -> list[Answer | None]:
    """Each request's answer; with ``max_failures``, once more than that many failed the requests not
    yet sent are skipped (None): the error budget is spent, the verdict cannot change, and a hanging
    candidate is not waited on request after request."""
    spent = threading.Event()
    failures = itertools.count(1)

    def one(row: Mapping[str, Any]) -> Answer | None:
        if spent.is_set():
            return None
        answer = _one(url, row)
        if answer[1] is not None and max_failures is not None and next(failures) > max_failures:
            spent.set()
        return answer

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, requests))


def _p99(latencies: Sequence[float | None]) -> float | None:
    valid = [ms for ms in latencies if ms is not None]
    return _quantile(valid, 0.99) if valid else None


def _serve(root: Path, name: str, start_timeout_s: float) -> tuple[str, subprocess.Popen[bytes]]:
    """``mloop serve`` of the one-model workspace under ``root`` on a free loopback port, once ready."""
    port = _free_port()
    # MLOOP_PARENT_PID: the service stops by itself if this process dies without stopping it
    env = {**os.environ, "MLOOP_WORKSPACE": str(root / ".mloop"), "MLOOP_PARENT_PID": str(os.getpid())}
    for key in ("MLOOP_METADATA_URL", "MLOOP_ARTIFACT_URL"):
        env.pop(key, None)
    command = [sys.executable, "-m", "mloop", "serve", name, "--alias", _ALIAS, "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workspace", str(root / ".mloop")]
    log_file = root / "serve.log"  # a file, not a pipe: the service can never block on a full pipe
    with log_file.open("wb") as sink:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sink, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, start_timeout_s, log_file)
    except BaseException:
        _stop(process)
        raise
    return url, process


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def fit_requests(
    workspace: Workspace, version_ref: str, requests: Sequence[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], int]:
    """Each logged request as the candidate takes it, and how many could not be fitted.

    A request keeps only the candidate's own columns: traffic logged by a version with other features
    carries columns this one refuses. A candidate that reads features by key gets its features looked
    up in the workspace's online store by the entity keys the log recorded (its throw-away copy is
    served without a feature store), so a candidate that reads one more feature than the versions
    before it is tested on the same entities with its own features. A request with no logged entity
    keys, or whose entity the online store does not know, is left out (counted).
    """
    version = workspace.model_version(version_ref)
    columns = list(version.signature.get("inputs", {}).get("columns", {}))
    service = version.signature.get("feature_service")
    if not service:
        if not columns:
            return [dict(r) for r in requests], 0
        return [{c: r[c] for c in columns if c in r} for r in requests], 0
    from mloop.features.online import lookup

    selection = workspace.features.selection(service=service)
    store = workspace.features.online_store()
    keys = sorted({k for view, _ in selection for k in view.join_keys})
    fitted: list[dict[str, Any]] = []
    for request in requests:
        if columns and all(c in request for c in columns):  # it carries what was served: no lookup
            fitted.append({c: request[c] for c in columns})
            continue
        if any(k not in request for k in keys):
            continue
        try:
            found = lookup(store, selection, [{k: request[k] for k in keys}])[0]
        except MloopError:
            continue
        if not all(found["found"].values()):
            continue
        row = {**found["features"], **{c: v for c, v in request.items() if c not in found["features"]}}
        fitted.append({c: row[c] for c in columns if c in row} if columns else row)
    return fitted, len(requests) - len(fitted)


def load_test(
    workspace: Workspace,
    version_ref: str,
    requests: Sequence[Mapping[str, Any]],
    concurrency: int = 4,
    p99_budget_ms: float = 200.0,
    max_error_rate: float = 0.01,
    *,
    rounds: int = 1,
    start_timeout_s: float = 120.0,
) -> LoadTestReport:
    """Serve ``version_ref`` (``NAME:VERSION`` or ``NAME@ALIAS``) on loopback in its own process and
    replay ``requests`` (one instance each, e.g. recent logged requests) at ``concurrency``; a p99
    over budget is measured again up to ``rounds`` replays (see the module docstring)."""
    if not requests:
        raise ParameterError("a load test needs at least one request to replay", field="requests")
    logged = len(requests)
    requests, unfit = fit_requests(workspace, version_ref, requests)
    if not requests:
        raise ConfigurationError(
            f"none of the {logged} recent request(s) can be replayed to {version_ref}: it reads features "
            "by key and no request carries logged entity keys that its online store knows",
            field="requests",
        )
    if concurrency < 1:
        raise ParameterError(f"concurrency must be at least 1, got {concurrency}", field="concurrency")
    if rounds < 1:
        raise ParameterError(f"rounds must be at least 1, got {rounds}", field="rounds")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mloop-loadtest-") as tmp:
        name = _candidate_workspace(workspace, version_ref, Path(tmp))
        url, process = _serve(Path(tmp), name, start_timeout_s)
        try:
            _replay(url, requests[:concurrency], concurrency)  # warm-up, not measured
            budget = int(max_error_rate * len(requests))  # failures allowed
            first = _replay(url, requests, concurrency, max_failures=budget)
            sent = [answer for answer in first if answer is not None]
            errors = [problem for _, problem in sent if problem is not None]
            error_rate = len(errors) / len(sent)
            best = [None if a is None or a[1] is not None else a[0] for a in first]
            by_round = [_p99(best)]
            while (
                error_rate <= max_error_rate  # else the prediction-service test failed, for good
                and (p99 := _p99(best)) is not None
                and p99 > p99_budget_ms
                and len(by_round) < rounds
            ):
                again = [a for a in _replay(url, requests, concurrency) if a is not None]
                by_round.append(_p99([ms if problem is None else None for ms, problem in again]))
                best = [
                    b if b is None or problem is not None else min(b, ms)
                    for b, (ms, problem) in zip(best, again, strict=True)
                ]
        finally:
            _stop(process)
    p99 = _p99(best)
    reasons = []
    if p99 is not None and p99 > p99_budget_ms:
        reasons.append(f"p99 latency {p99:.1f} ms exceeds the {p99_budget_ms:g} ms budget")
    if error_rate > max_error_rate:
        unsent = len(requests) - len(sent)
        skipped = f"; {unsent} request(s) not sent once the error budget was spent" if unsent else ""
        reasons.append(
            f"error rate {error_rate:.1%} exceeds {max_error_rate:.1%} (first: {errors[0]}){skipped}"
        )
    valid = [ms for ms in best if ms is not None]
    return LoadTestReport(
        version=version_ref,
        requests=len(requests),
        concurrency=concurrency,
        p50_ms=_quantile(valid, 0.5) if valid else None,
        p99_ms=p99,
        error_rate=error_rate,
        p99_budget_ms=p99_budget_ms,
        max_error_rate=max_error_rate,
        passed=not reasons,
        seconds=time.perf_counter() - started,
        reasons=reasons,
        errors=errors[:5],
        rounds=len(by_round),
        p99_by_round_ms=by_round,
        left_out=unfit,
    )
