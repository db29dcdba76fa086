"""Infrastructure check: does the model load and answer fast enough where it will be served?

The artifact is loaded in a fresh Python process that imports only what unpickling and prediction
need (joblib, pandas and the model's own libraries; not mloop), so a model that depends on something
only the training process had fails here rather than in production. It measures cold load time
(interpreter start to model in memory) and single-row prediction latency (p50/p99). A replay, whose
decisions never depend on latency, may take the same measurement in its own process
(``in_process=True``): no interpreter start per candidate, no check of the model's imports.

Verdicts do not depend on how busy the machine is:

- latency is measured the way the service predicts: one row at a time on one BLAS/OpenMP thread
  (``threadpoolctl``; scikit-learn's HistGradientBoosting otherwise starts a team of OpenMP threads per
  call that spin on a busy machine: p99 381 ms vs 6 ms measured on 2 vCPUs), after a warm-up that is
  not measured; a round whose p99 is over budget is measured again (up to ``rounds`` rounds) and the
  best round counts: load from other processes comes and goes, a slow model is slow every round.
  When even the best round is over budget, the prediction's own CPU time decides (its p99 over all
  rounds, one thread, so CPU time is the work the model does): on a machine so busy that the model
  waits for a core most of the time, wall time measures the queue, not the model. Both are reported;
  a model fails only when its own CPU time per one-row prediction is over budget;
- the cold-load budget is judged on the loading process's CPU time (interpreter start to model in
  memory), not wall time: CPU time is what the model costs, wall time adds whatever else the machine
  ran meanwhile (11.7 s wall for ~2 s of CPU was seen under load). Wall time is still reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pyarrow as pa

from mloop.deprecations import renamed

__all__ = ["InfraReport", "check_serving"]


def _time_predictions(model: Any, rows: Any, repeats: int, budget_ms: float, rounds: int) -> dict[str, Any]:
    """Single-row latencies as the service predicts (one BLAS/OpenMP thread, after an unmeasured
    warm-up), best round of up to ``rounds`` while over budget, and the prediction's own CPU time.
    Runs in the fresh process (its source is part of the child's script) and, for a replay, in this
    one: it uses only the standard library, pandas and the model's own code."""
    import contextlib
    import time

    try:  # as served: a one-row prediction runs on one BLAS/OpenMP thread (no spinning thread team)
        from threadpoolctl import threadpool_limits

        one_thread: Any = threadpool_limits(1)
    except ImportError:
        one_thread = contextlib.nullcontext()
    with one_thread:  # restored on the way out (it matters when this runs in the caller's process)
        batch = model.predict(rows)
        assert len(batch) == len(rows), "predict returned a different number of rows"
        singles = [rows.iloc[[i]] for i in range(len(rows))]
        for i in range(min(20, repeats)):  # warm-up (caches, lazy imports), not measured
            model.predict(singles[i % len(singles)])
        measured: list[tuple[float, float]] = []
        cpu: list[float] = []
        for _ in range(rounds):  # a round over budget is measured again: a busy neighbour is not the model
            latencies: list[float] = []
            for i in range(repeats):
                row = singles[i % len(singles)]
                start, start_cpu = time.perf_counter(), time.thread_time()
                model.predict(row)
                latencies.append((time.perf_counter() - start) * 1000)
                cpu.append((time.thread_time() - start_cpu) * 1000)
            latencies.sort()
            p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
            p50 = latencies[min(len(latencies) - 1, int(0.5 * len(latencies)))]
            measured.append((p99, p50))
            if p99 <= budget_ms:
                break
    p99, p50 = min(measured)
    cpu.sort()
    cpu_p99 = cpu[min(len(cpu) - 1, int(0.99 * len(cpu)))]
    return {"p50_ms": p50, "p99_ms": p99, "cpu_p99_ms": cpu_p99, "rows": len(rows), "rounds": len(measured)}


_CHILD = r"""
import hashlib, json, sys, time
t0 = time.perf_counter()
import io, joblib, pandas as pd
path, digest, rows_path = sys.argv[1], sys.argv[2], sys.argv[3]
repeats, budget_ms, rounds = int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
data = open(path, "rb").read()
if hashlib.sha256(data).hexdigest() != digest:
    raise SystemExit("artifact digest mismatch: refusing to load it")
model = joblib.load(io.BytesIO(data))
load_s, load_cpu_s = time.perf_counter() - t0, time.process_time()
if rows_path.endswith(".parquet"):
    rows = pd.read_parquet(rows_path)
else:
    rows = pd.read_json(rows_path, orient="split", convert_axes=False, convert_dates=False)
from typing import Any
{measure}
result = _time_predictions(model, rows, repeats, budget_ms, rounds)
print(json.dumps({{"cold_load_s": load_s, "cold_load_cpu_s": load_cpu_s, **result}}))
"""


@dataclass
class InfraReport:
    """Whether the model loads and meets its latency budget in a fresh serving process."""

    __mloop_artifact__: ClassVar[str] = "infra_report"

    passed: bool
    cold_load_s: float | None
    p50_ms: float | None
    p99_ms: float | None
    budget_p99_ms: float
    budget_load_s: float
    error: str | None = None
    overhead_s: float = 0.0
    cold_load_cpu_s: float | None = None  # what the load budget judges (see the module docstring)
    rounds: int = 1  # latency rounds measured (more than one when a round was over budget)
    cpu_p99_ms: float | None = None  # the prediction's own CPU time (decides when wall p99 is over)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict()).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> InfraReport:
        return cls(**json.loads(data))


def check_serving(
    model_bytes: bytes,
    digest: str,
    sample: pd.DataFrame,
    *,
    budget_p99_ms: float = 50.0,
    budget_load_s: float = 10.0,
    repeats: int = 200,
    rounds: int = 3,
    timeout_s: float = 120.0,
    in_process: bool = False,
) -> InfraReport:
    """Load and exercise a serialized model (joblib bytes) in a fresh process on ``sample`` input rows.

    ``repeats`` single-row predictions per round; up to ``rounds`` rounds while p99 is over budget.
    ``in_process=True`` (a replay, where latencies are recorded and never decide) loads and times the
    model in this process instead: the same measurement without an interpreter start per candidate,
    so the cold load is the unpickling alone and a dependency only this process has goes unnoticed.
    """
    started = time.perf_counter()
    rows = sample.head(100).reset_index(drop=True)
    if in_process:
        result = _measure_here(model_bytes, digest, rows, repeats, budget_p99_ms, max(1, rounds))
    else:
        result = _measure_in_child(
            model_bytes, digest, rows, repeats, budget_p99_ms, max(1, rounds), timeout_s
        )
    wall = time.perf_counter() - started
    if "error" in result:
        return InfraReport(False, None, None, None, budget_p99_ms, budget_load_s, result["error"], wall)
    problems = []
    if result["p99_ms"] > budget_p99_ms and result["cpu_p99_ms"] > budget_p99_ms:
        problems.append(
            f"single-row p99 {result['p99_ms']:.2f} ms exceeds the {budget_p99_ms:g} ms budget "
            f"(best of {result['rounds']} rounds; its own CPU time p99 {result['cpu_p99_ms']:.2f} ms)"
        )
    if result["cold_load_cpu_s"] > budget_load_s:
        problems.append(
            f"cold load {result['cold_load_cpu_s']:.2f} s of CPU ({result['cold_load_s']:.2f} s wall) "
            f"exceeds the {budget_load_s:g} s budget"
        )
    return InfraReport(
        not problems,
        result["cold_load_s"],
        result["p50_ms"],
        result["p99_ms"],
        budget_p99_ms,
        budget_load_s,
        "; ".join(problems) or None,
        wall - result["cold_load_s"],
        result["cold_load_cpu_s"],
        result["rounds"],
        result["cpu_p99_ms"],
    )


def _measure_in_child(
    model_bytes: bytes,
    digest: str,
    rows: pd.DataFrame,
    repeats: int,
    budget_ms: float,
    rounds: int,
    timeout_s: float,
) -> dict[str, Any]:
    """The measurement in a fresh interpreter (``_CHILD``), or ``{"error": why}``."""
    import inspect

    script = _CHILD.format(measure=inspect.getsource(_time_predictions))
    with tempfile.TemporaryDirectory(prefix="mloop-infra-") as tmp:
        model_path, rows_path = Path(tmp) / "model.joblib", Path(tmp) / "rows.parquet"
        model_path.write_bytes(model_bytes)
        try:  # Parquet keeps the rows' types (decimals, bools with blanks, text of digits, dates)
            plain = rows.copy(deep=False)
            plain.attrs = {}  # e.g. a log read's health: nothing the child needs, and not JSON
            plain.to_parquet(rows_path, index=False)
        except (pa.ArrowException, ValueError, TypeError):  # a column of mixed Python objects
            rows_path = rows_path.with_suffix(".json")
            rows.to_json(rows_path, orient="split", index=False)
        args = [str(model_path), digest, str(rows_path), str(repeats), repr(budget_ms), str(rounds)]
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-c", script, *args],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                cwd=tmp,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"no answer within {timeout_s:g} s"}
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return {"error": lines[-1] if lines else f"exit code {done.returncode}"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _measure_here(
    model_bytes: bytes, digest: str, rows: pd.DataFrame, repeats: int, budget_ms: float, rounds: int
) -> dict[str, Any]:
    """The same measurement in this process (``check_serving(in_process=True)``), or ``{"error": why}``."""
    import hashlib
    import io

    import joblib

    if hashlib.sha256(model_bytes).hexdigest() != digest:
        return {"error": "artifact digest mismatch: refusing to load it"}
    t0, c0 = time.perf_counter(), time.thread_time()
    try:
        model = joblib.load(io.BytesIO(model_bytes))
    except Exception as exc:  # whatever unpickling raises is the verdict, as in the fresh process
        return {"error": f"{type(exc).__name__}: {exc}"}
    load_s, load_cpu_s = time.perf_counter() - t0, time.thread_time() - c0
    try:
        result = _time_predictions(model, rows, repeats, budget_ms, rounds)
    except Exception as exc:  # a model that cannot predict its own input rows fails the check
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"cold_load_s": load_s, "cold_load_cpu_s": load_cpu_s, **result}


# old names, for one release (mloop.deprecations)
__getattr__ = renamed(__name__, {"infra_check": "check_serving"}, globals())
