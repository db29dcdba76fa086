"""A fully cached rerun of the demo pipeline against its first run (anchor: the first, executed run).

python bench/bench_demo_cache.py [--repeats 7]
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
from mloop.demo import dataset_path, rainfall_training


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    data = str(dataset_path())
    first, cached = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp, mloop.Workspace.open(Path(tmp) / "ws") as ws:
            t0 = time.perf_counter()
            ws.run(rainfall_training, data=data)
            first.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            result = ws.run(rainfall_training, data=data)
            cached.append(time.perf_counter() - t0)
            assert {s.status for s in result.steps} == {mloop.StepStatus.CACHED}
    f, c = statistics.median(first), statistics.median(cached)
    table = Table(title=f"demo pipeline (4 steps, rainfall data), median of {args.repeats}")
    for col in ("run", "wall time", "ratio"):
        table.add_column(col)
    table.add_row("anchor: first run (executes every step)", f"{f * 1000:.1f} ms", "1.0×")
    table.add_row("mloop cached rerun", f"{c * 1000:.1f} ms", f"{f / c:.1f}× faster")
    Console().print(table)


if __name__ == "__main__":
    main()
