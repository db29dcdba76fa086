"""Orchestration overhead per step: a pipeline of 50 trivial steps on the embedded default (SQLite).

Anchor: calling the same 50 functions directly in plain Python. Goal (issue 3): median overhead
≤ 5 ms per executed step. Also reports a fully cached rerun per step.

    python bench/bench_overhead.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import mloop

N_STEPS = 50


@mloop.step
def inc(x: int) -> int:
    return x + 1


@mloop.pipeline
def chain(start: int = 0):
    value = inc(start)
    for i in range(1, N_STEPS):
        value = inc.named(f"inc_{i}")(value)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    executed, cached, plain = [], [], []
    with tempfile.TemporaryDirectory() as tmp, mloop.Workspace.open(Path(tmp) / "ws") as ws:
        ws.run(chain, start=-1, cache=False)  # warm-up: imports, schema, code hashes
        for r in range(args.repeats):
            t0 = time.perf_counter()
            ws.run(chain, start=r, cache=False)
            executed.append((time.perf_counter() - t0) / N_STEPS)
            t0 = time.perf_counter()
            result = ws.run(chain, start=r)
            cached.append((time.perf_counter() - t0) / N_STEPS)
            assert {s.status for s in result.steps} == {mloop.StepStatus.CACHED}
            t0 = time.perf_counter()
            value = r
            for _ in range(N_STEPS):
                value = inc.fn(value)
            plain.append((time.perf_counter() - t0) / N_STEPS)
    table = Table(
        title=f"orchestration overhead per step ({N_STEPS}-step chain, SQLite, median of {args.repeats})"
    )
    for col in ("what", "ms / step", "goal", "meets goal"):
        table.add_column(col)
    plain_ms = statistics.median(plain) * 1000
    for name, samples in (("mloop executed", executed), ("mloop cached rerun", cached)):
        ms = statistics.median(samples) * 1000
        table.add_row(name, f"{ms:.3f}", "≤ 5 ms", "yes" if ms <= 5 else "NO")
    table.add_row("anchor: plain function call", f"{plain_ms:.5f}", "", "")
    Console().print(table)


if __name__ == "__main__":
    main()
