"""Pipeline CI/CD timings against the issue's budgets (issue 17).

`mloop ci run` on examples/project (its tests + a smoke run on 1,000 rows + the model checks) and
`mloop pipelines deploy` of its pipeline, each as a fresh `mloop` process (what a CI job runs).
The named anchors (ZenML snapshots, Kubeflow pipeline versions) need a remote stack or a cluster and
do not run pipeline CI at all, so the comparison is with the budgets: ratio = budget / measured.

    PYTHONPATH=. python bench/bench_cicd.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "project"


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the process and its children) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mloop", *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"mloop {' '.join(args)} failed: {done.stderr.strip()}")
    return seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    repeats = parser.parse_args().repeats
    with tempfile.TemporaryDirectory() as tmp:
        ws = str(Path(tmp) / "ws")
        env = {**os.environ, "MLOOP_CACHE_DIR": str(Path(tmp) / "cache")}
        ci = [
            timed(["ci", "run", str(EXAMPLE), "--rows", "1000", "--workspace", ws, "--json"], env)
            for _ in range(repeats)
        ]
        ref = f"{EXAMPLE / 'churn' / 'pipeline.py'}:training"
        deploy = [
            timed(["pipelines", "deploy", ref, "--name", "churn", "--workspace", ws, "--json"], env)
            for _ in range(repeats)
        ]
    table = Table(title=f"pipeline CI/CD on examples/project, median of {repeats}", title_justify="left")
    for col in ("command", "budget", "mloop wall", "mloop CPU", "ratio (budget / wall)"):
        table.add_column(col, justify="left" if col == "command" else "right")
    for name, budget, values in (
        ("mloop ci run (tests + smoke on 1,000 rows + checks)", 30.0, ci),
        ("mloop pipelines deploy", 2.0, deploy),
    ):
        median = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        verdict = f"{budget / median:.1f}× under" if median <= budget else f"{median / budget:.1f}× OVER"
        table.add_row(name, f"{budget:.1f} s", f"{median:.2f} s", f"{cpu:.2f} s", verdict)
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    Console().print(table)


if __name__ == "__main__":
    main()
