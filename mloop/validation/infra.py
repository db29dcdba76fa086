"""Infrastructure check: does the model load and answer fast enough where it will be served?

The artifact is loaded in a fresh Python process that imports only what unpickling and prediction
need (joblib, pandas and the model's own libraries; not mloop), so a model that depends on something
only the training process had fails here rather than in production. It measures cold load time
(interpreter start to model in memory) and single-row prediction latency (p50/p99).

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

from mloop.deprecations import renamed

__all__ = ["InfraReport", "check_serving"]

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
try:  # as served: a one-row prediction runs on one BLAS/OpenMP thread (no spinning thread team)
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)
except ImportError:
    pass
rows = pd.read_json(rows_path, orient="split", convert_axes=False, convert_dates=False)
batch = model.predict(rows)
assert len(batch) == len(rows), "predict returned a different number of rows"
singles = [rows.iloc[[i]] for i in range(len(rows))]
for i in range(min(20, repeats)):  # warm-up (caches, lazy imports), not measured
    model.predict(singles[i % len(singles)])
measured, cpu = [], []
for _ in range(rounds):  # a round over budget is measured again: a busy neighbour is not the model
    latencies = []
    for i in range(repeats):
        row = singles[i % len(singles)]
        start, start_cpu = time.perf_counter(), time.thread_time()
        model.predict(row)
        latencies.append((time.perf_counter() - start) * 1000)
        cpu.append((time.thread_time() - start_cpu) * 1000)
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
    measured.append((p(0.99), p(0.5)))
    if p(0.99) <= budget_ms:
        break
p99, p50 = min(measured)
cpu.sort()
cpu_p99 = cpu[min(len(cpu) - 1, int(0.99 * len(cpu)))]
print(json.dumps({"cold_load_s": load_s, "cold_load_cpu_s": load_cpu_s, "p50_ms": p50, "p99_ms": p99,
                  "cpu_p99_ms": cpu_p99, "rows": len(rows), "rounds": len(measured)}))
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
) -> InfraReport:
    """Load and exercise a serialized model (joblib bytes) in a fresh process on ``sample`` input rows.

    ``repeats`` single-row predictions per round; up to ``rounds`` rounds while p99 is over budget.
    """
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mloop-infra-") as tmp:
        model_path, rows_path = Path(tmp) / "model.joblib", Path(tmp) / "rows.json"
        model_path.write_bytes(model_bytes)
        sample.head(100).to_json(rows_path, orient="split", index=False)
        try:
            done = subprocess.run(
                [
                    sys.executable,
                    "-I",
                    "-c",
                    _CHILD,
                    str(model_path),
                    digest,
                    str(rows_path),
                    str(repeats),
                    repr(budget_p99_ms),
                    str(max(1, rounds)),
                ],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                cwd=tmp,
            )
        except subprocess.TimeoutExpired:
            return InfraReport(
                False, None, None, None, budget_p99_ms, budget_load_s, f"no answer within {timeout_s:g} s"
            )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return InfraReport(
            False,
            None,
            None,
            None,
            budget_p99_ms,
            budget_load_s,
            lines[-1] if lines else f"exit code {done.returncode}",
            wall,
        )
    result = json.loads(done.stdout.strip().splitlines()[-1])
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


# old names, for one release (mloop.deprecations)
__getattr__ = renamed(__name__, {"infra_check": "check_serving"}, globals())
