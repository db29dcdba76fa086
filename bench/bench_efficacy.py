"""Does the default loop retrain when it should, and only then? ``mloop backtest`` on real and
synthetic streams, with the figures the issue's efficacy goal names.

Goal: on drifting streams the loop keeps ≥ 90 % of the gain that retraining every window has over a
static model, with at most half of its retrains; on stationary streams it does not retrain at all.
Streams: the bundled rainfall data (real, drift injected at day 12,000) and river's synthetic
generators (a benchmark-only dependency: ``pip install river``), abrupt and gradual drift, and
stationary ones. Also the scale check: a 300,000-row × 18-column file through ``mloop backtest``
(goal: within 10 minutes on 2 cores).

    .venv/bin/pip install -e '.[dev]'      # includes river
    .venv/bin/python bench/bench_efficacy.py [--rows 40000] [--skip-scale]
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def river_stream(name: str, n: int, seed: int = 42) -> pd.DataFrame:
    from river.datasets import synth

    drift = synth.ConceptDriftStream
    streams = {
        "agrawal (abrupt, f0→f2)": lambda: drift(
            synth.Agrawal(classification_function=0, seed=seed),
            synth.Agrawal(classification_function=2, seed=seed),
            position=n // 2, width=1000, seed=seed,
        ),
        "sea (abrupt, v0→v3)": lambda: drift(
            synth.SEA(variant=0, seed=seed), synth.SEA(variant=3, seed=seed),
            position=n // 2, width=500, seed=seed,
        ),
        "stagger (abrupt)": lambda: drift(
            synth.STAGGER(classification_function=0, seed=seed),
            synth.STAGGER(classification_function=2, seed=seed),
            position=n // 2, width=500, seed=seed,
        ),
        "hyperplane (gradual)": lambda: synth.Hyperplane(
            seed=seed, n_features=10, n_drift_features=5, mag_change=0.001, noise_percentage=0.05
        ),
        "sea (stationary, 10% noise)": lambda: synth.SEA(variant=1, seed=seed, noise=0.1),
        "agrawal (stationary, f4)": lambda: synth.Agrawal(classification_function=4, seed=seed),
    }  # fmt: skip
    rows, labels = [], []
    for x, y in itertools.islice(streams[name](), n):
        rows.append(x)
        labels.append(y)
    frame = pd.DataFrame(rows)
    frame.columns = [str(c) for c in frame.columns]
    frame["y"] = labels
    return frame


STREAMS = [
    "agrawal (abrupt, f0→f2)",
    "sea (abrupt, v0→v3)",
    "stagger (abrupt)",
    "hyperplane (gradual)",
    "sea (stationary, 10% noise)",
    "agrawal (stationary, f4)",
]


def wide(rows: int, seed: int = 0) -> pd.DataFrame:
    """300k × 18 for the scale check: 14 numeric and 4 categorical columns, a drift at 60 %."""
    rng = np.random.default_rng(seed)
    data = {f"n{i}": rng.normal(size=rows) for i in range(14)}
    for j in range(4):
        data[f"c{j}"] = rng.choice(list("abcdefghij"), size=rows)
    frame = pd.DataFrame(data)
    cut = int(rows * 0.6)
    score = frame["n0"] + frame["n1"] - frame["n2"] + (frame["c0"] < "e")
    score[cut:] = frame["n0"][cut:] - frame["n3"][cut:] + (frame["c1"][cut:] < "c")
    frame["y"] = (score + rng.normal(scale=0.3, size=rows) > 0.5).astype(int)
    frame.loc[rng.random(rows) < 0.02, "n5"] = np.nan  # missing values
    return frame


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--skip-scale", action="store_true")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    from mloop.orchestration.backtest import backtest

    console = Console(width=150)
    table = Table(title="default loop vs static vs retraining every window (mloop backtest, 8 windows)")
    for col in ("stream", "rows", "static", "every_window", "loop", "kept gain", "retrains", "goal", "s"):
        table.add_column(col)
    cases: list[tuple[str, pd.DataFrame, str]] = []
    rain = pd.read_csv(Path(__file__).parent.parent / "mloop/datasets/rainfall.csv.gz", index_col=0)
    cases.append(("rainfall (real; injected drift)", rain, "rain"))
    cases += [(name, river_stream(name, args.rows), "y") for name in STREAMS]
    for name, frame, target in cases:
        started = time.perf_counter()
        r = backtest(frame, target)
        seconds = time.perf_counter() - started
        kept = r.recovered
        stationary = "stationary" in name
        if stationary:
            ok = r.loop.retrains == 0
        else:
            ok = kept is not None and kept >= 0.9 and r.loop.retrains <= r.every_window.retrains / 2
        table.add_row(
            name,
            f"{len(frame):,}",
            f"{r.static.metrics['accuracy']:.4f}",
            f"{r.every_window.metrics['accuracy']:.4f}",
            f"{r.loop.metrics['accuracy']:.4f}",
            "-" if kept is None else f"{kept:.0%}",
            f"{r.loop.retrains} / {r.every_window.retrains}",
            "met" if ok else "NOT met",
            f"{seconds:.0f}",
        )
        console.print(f"{name}: done in {seconds:.0f} s")
    console.print(table)
    if not args.skip_scale:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "wide.parquet"
            wide(300_000).to_parquet(path)
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "mloop", "backtest", str(path), "--target", "y", "--json"],
                capture_output=True, text=True, timeout=3600,
            )  # fmt: skip
            seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        import json

        r = json.loads(done.stdout)
        console.print(
            f"scale: 300,000 rows × 18 columns through `mloop backtest`: {seconds:.0f} s "
            f"({'met' if seconds <= 600 else 'NOT met'}: ≤ 600 s); "
            f"loop {r['loop']['metrics']['accuracy']:.4f} "
            f"with {r['loop']['retrains']} retrains, static {r['static']['metrics']['accuracy']:.4f}, "
            f"every_window {r['every_window']['metrics']['accuracy']:.4f}"
        )


if __name__ == "__main__":
    main()
