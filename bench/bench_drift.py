"""Data-drift report, mloop vs Evidently, on seeded data with known shifted columns.

Datasets (issue 4): 1M rows x 20 mixed columns, and 100k rows x 200 columns; reference and current
each that size, stored as Parquet. Each tool runs in a fresh process (so peak memory is the whole
process's), reading the same files: Evidently from pandas DataFrames (its API), mloop from the files
(its API, streamed). Reported: wall time (load + report), peak RSS, and whether both flag the same
columns. Goals: >= 10x faster and <= 1/4 of Evidently's peak memory, same columns flagged.
Also: statistics throughput on a ~1 GB Parquet file.

    python3 -m venv bench/.venv-evidently
    bench/.venv-evidently/bin/pip install -e . -r bench/requirements-evidently.txt
    bench/.venv-evidently/bin/python bench/bench_drift.py [--skip-evidently] [--gb 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATASETS = {"1M x 20": (1_000_000, 10, 10), "100k x 200": (100_000, 150, 50)}


def make(path: Path, rows: int, numeric: int, categorical: int, seed: int, shifted: bool) -> None:
    """Seeded data; in ``current`` every 5th numeric and every 5th categorical column is shifted."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    cols: dict[str, object] = {}
    for i in range(numeric):
        x = rng.normal(size=rows) * (1 + i % 3)
        if shifted and i % 5 == 0:
            x = x + 0.6 * (1 + i % 3)
        cols[f"num_{i}"] = x
    letters = np.array(list("abcdefgh"))
    for j in range(categorical):
        p = np.full(8, 1 / 8)
        if shifted and j % 5 == 0:
            p = np.array([0.44, 0.08, 0.08, 0.08, 0.08, 0.08, 0.08, 0.08])
        cols[f"cat_{j}"] = letters[rng.choice(8, size=rows, p=p)]
    pq.write_table(pa.table(cols), path)


def expected_drift(numeric: int, categorical: int) -> list[str]:
    return sorted([f"num_{i}" for i in range(0, numeric, 5)] + [f"cat_{j}" for j in range(0, categorical, 5)])


def run_mloop(ref: str, cur: str) -> list[str]:
    import mloop

    return sorted(mloop.detect_drift(ref, cur).drifted_features)


def run_evidently(ref: str, cur: str) -> list[str]:
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    reference, current = pd.read_parquet(ref), pd.read_parquet(cur)
    snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
    drifted = []
    for metric in snapshot.dict()["metrics"]:
        config, value = metric.get("config", {}), metric.get("value")
        if config.get("type") != "evidently:metric_v2:ValueDrift" or not isinstance(value, int | float):
            continue
        p_value_test = "p_value" in config["method"]  # e.g. "K-S p_value": drift when below the threshold
        if (value < config["threshold"]) if p_value_test else (value >= config["threshold"]):
            drifted.append(config["column"])
    return sorted(drifted)


def child(tool: str, ref: str, cur: str) -> None:
    start = time.perf_counter()
    flagged = run_mloop(ref, cur) if tool == "mloop" else run_evidently(ref, cur)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"wall": wall, "peak": peak, "flagged": flagged}))


def measure(tool: str, ref: Path, cur: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", tool, str(ref), str(cur)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{tool} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stats_throughput(folder: Path, gigabytes: float) -> tuple[float, float, float]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    import mloop

    path = folder / "big.parquet"
    rows_per_group, columns = 1_000_000, 8  # random floats: Parquet cannot compress them
    groups = max(1, round(gigabytes * 1e9 / (rows_per_group * columns * 8)))
    rng = np.random.default_rng(7)
    with pq.ParquetWriter(path, pa.schema([(f"c{i}", pa.float64()) for i in range(columns)])) as writer:
        for _ in range(groups):
            writer.write_table(pa.table({f"c{i}": rng.normal(size=rows_per_group) for i in range(columns)}))
    size = path.stat().st_size
    start = time.perf_counter()
    stats = mloop.compute_statistics(path)
    wall = time.perf_counter() - start
    assert stats.rows == groups * rows_per_group
    return size / 1e6, wall, size / 1e6 / wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3, metavar=("TOOL", "REF", "CUR"))
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument(
        "--gb", type=float, default=1.0, help="size of the Parquet file for the throughput test"
    )
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="data drift report: mloop vs Evidently (fresh process each, same Parquet files)")
    for col in ("dataset", "tool", "wall s", "peak RSS", "speed-up", "memory", "flagged = truth"):
        table.add_column(col)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        folder = Path(tmp)
        for name, (rows, numeric, categorical) in DATASETS.items():
            ref, cur = folder / f"{rows}-ref.parquet", folder / f"{rows}-cur.parquet"
            make(ref, rows, numeric, categorical, 1, shifted=False)
            make(cur, rows, numeric, categorical, 2, shifted=True)
            truth = expected_drift(numeric, categorical)
            ours = measure("mloop", ref, cur)
            theirs = None if args.skip_evidently else measure("evidently", ref, cur)
            for tool, r in (("mloop", ours), ("Evidently", theirs)):
                if r is None:
                    continue
                speed = f"{theirs['wall'] / ours['wall']:.1f}x" if theirs and tool == "mloop" else ""
                memory = f"{ours['peak'] / theirs['peak']:.2f}x" if theirs and tool == "mloop" else ""
                table.add_row(
                    name,
                    tool,
                    f"{r['wall']:.1f}",
                    f"{r['peak'] / 2**30:.2f} GiB",
                    speed,
                    memory,
                    "yes" if r["flagged"] == truth else f"no: {r['flagged']}",
                )
        Console(width=140).print(table)
        size_mb, wall, rate = stats_throughput(folder, args.gb)
        what = f"statistics of a {size_mb:,.0f} MB Parquet file (8 float columns)"
        print(f"{what}: {wall:.1f} s, {rate:,.0f} MB/s")


if __name__ == "__main__":
    main()
