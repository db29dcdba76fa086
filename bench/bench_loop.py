"""Continuous training: how fast the loop reacts, and how fast monitoring reads the prediction log.

1. **Drift → new model at 100 %** on the demo stream (bundled rainfall data, drift injected at day
   12,000): the demo's loop runs in-process; from the first request carrying a drifted day to the
   promotion that gives the new version all traffic, the wall time is split into *training* (the
   retraining pipeline's step functions: fit, evaluate, validate, infrastructure check), *traffic*
   (the replayed requests and labels themselves, including the canary's evidence) and mloop's own
   *bookkeeping* (everything else: scheduler passes, monitoring windows, trigger claims, the runner's
   hashing/serialisation/metadata, registry moves, model loading). Goal: bookkeeping ≤ 5 % of the loop.
2. **Monitoring throughput**: prediction-log rows per second for per-window drift reports (mloop's
   ``measure``: input drift + prediction drift + live metrics per window) next to Evidently's
   ``DataDriftPreset`` computing the same drift report per window against the same reference, in one
   process.

    python3 -m venv bench/.venv-evidently
    bench/.venv-evidently/bin/pip install -e '.[serve]' -r bench/requirements-evidently.txt
    bench/.venv-evidently/bin/python bench/bench_loop.py [--rows 200000] [--window 20000] [--skip-evidently]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def loop_latency(folder: Path) -> dict[str, float]:
    import mloop
    from mloop.backtesting import replay
    from mloop.core import runner
    from mloop.demo import DRIFT_DAY, run_demo

    compute: list[tuple[float, float]] = []  # (start, end) of every step function call
    original = runner.execute_step

    def timed_execute(task: runner.StepTask) -> runner.StepOutcome:
        fn = task.fn

        def call(**kwargs: object) -> object:
            start = time.time()
            try:
                return fn(**kwargs)
            finally:
                compute.append((start, time.time()))

        return original(dataclasses.replace(task, fn=call))

    traffic: list[tuple[float, float]] = []
    originals = {name: getattr(replay._Channel, name) for name in ("predict", "feedback")}
    for name, method in originals.items():

        def wrapped(self: object, *args: object, _m: object = method) -> object:
            start = time.time()
            try:
                return _m(self, *args)  # type: ignore[operator]
            finally:
                traffic.append((start, time.time()))

        setattr(replay._Channel, name, wrapped)
    runner.execute_step = timed_execute  # type: ignore[assignment]
    drifted_at: list[float] = []

    def progress(done: int, total: int) -> None:
        if not drifted_at and done >= DRIFT_DAY - 3631:
            drifted_at.append(time.time())

    try:
        with mloop.Workspace.open(folder / ".mloop") as ws:
            report = run_demo(ws, progress=progress, http=False)
    finally:
        runner.execute_step = original  # type: ignore[assignment]
        for name, method in originals.items():
            setattr(replay._Channel, name, method)
    start = drifted_at[0]
    promoted = [e.at for e in report.loop.report.events if e.kind == "promote" and e.at >= start]
    end = promoted[0]

    def inside(spans: list[tuple[float, float]]) -> float:
        """Wall time covered by ``spans`` within the interval: steps that run side by side (the
        pipeline's independent branches) count once, not once each."""
        covered, reach = 0.0, start
        for a, b in sorted((max(a, start), min(b, end)) for a, b in spans):
            if a < b and b > reach:
                covered += b - max(a, reach)
                reach = b
        return covered

    total = end - start
    training = inside(compute)
    serving = inside(traffic)
    return {
        "total": total,
        "training": training,
        "traffic": serving,
        "bookkeeping": total - inside(compute + traffic),
        "retrains": report.loop.report.loop.retrains,
        "start": start,  # wall-clock bounds of the interval, for a profile of it
        "end": end,
    }


def make_log(
    folder: Path, rows: int, columns: int, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, object]:
    """A registered model's training data and a prediction log of ``rows`` rows (second half shifted)."""
    import mloop
    from mloop.entities import new_id
    from mloop.monitoring.log import PredictionLog
    from mloop.monitoring.log_schema import conform, feedback_schema, prediction_schema
    from mloop.steps.retrain import retrain

    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(columns)]

    def frame(n: int, shift: float) -> pd.DataFrame:
        data = {name: rng.normal(size=n) + (shift if i % 2 == 0 else 0.0) for i, name in enumerate(names)}
        df = pd.DataFrame(data)
        df["y"] = (df[names[0]] + df[names[1]] > 0).astype(int)
        return df

    train = frame(20_000, 0.0)
    ws = mloop.Workspace.open(folder / ".mloop")
    train.to_parquet(folder / "train.parquet")
    ws.run(retrain, model_name="bench", target="y", data=str(folder / "train.parquet"))
    live = pd.concat([frame(rows // 2, 0.0), frame(rows - rows // 2, 0.8)], ignore_index=True)
    log = PredictionLog(folder / ".mloop" / "prediction-log", "bench")
    predictions = prediction_schema({c: {"type": "float"} for c in names}, [0, 1])
    feedback = feedback_schema([0, 1])
    for lo in range(0, rows, 10_000):
        part = live.iloc[lo : lo + 10_000]
        n = len(part)
        ids = [f"{new_id()}-{i}" for i in range(n)]
        chunk = {
            "prediction_id": ids,
            "ts": [pd.Timestamp.now(tz="UTC")] * n,
            "model": ["bench"] * n,
            "version": [1] * n,
            "role": ["production"] * n,
            "latency_ms": [1.0] * n,
            "request_key": [None] * n,
            "prediction": part["y"].tolist(),
            "probability": [0.9] * n,
            "score": [0.9] * n,
        }
        chunk.update({f"input.{c}": part[c].tolist() for c in names})
        chunk["entity"] = [None] * n
        log.append(conform(chunk, predictions), predictions)
        labels = {"prediction_id": ids, "label": part["y"].tolist(), "ts": chunk["ts"]}
        log.feedback(conform(labels, feedback), feedback)
        log.flush()
    return train, live, ws


def monitoring(folder: Path, rows: int, columns: int, window: int, evidently: bool) -> dict[str, float]:
    from mloop.monitoring.log import labelled_predictions
    from mloop.monitoring.monitor import measure

    train, live, ws = make_log(folder, rows, columns)
    start = time.perf_counter()
    frame = labelled_predictions(folder / ".mloop" / "prediction-log", "bench")
    windows = measure(ws, "bench", frame, window)
    mloop_s = time.perf_counter() - start
    result = {
        "mloop_s": mloop_s,
        "windows": len(windows),
        "mloop_drifted": sum(w.dataset_drift for w in windows),
    }
    if evidently:
        from evidently import Report
        from evidently.presets import DataDriftPreset

        reference = train.drop(columns=["y"])
        start = time.perf_counter()
        flagged = 0
        for lo in range(0, rows, window):
            current = live.iloc[lo : lo + window].drop(columns=["y"])
            snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
            share = next(
                m["value"]["share"]
                for m in snapshot.dict()["metrics"]
                if isinstance(m.get("value"), dict) and "share" in m["value"]
            )
            flagged += share >= 0.5
        result["evidently_s"] = time.perf_counter() - start
        result["evidently_drifted"] = flagged
    ws.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--window", type=int, default=20_000)
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--skip-loop", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="demo loops timed; the median share counts")
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="folder for the demo's workspace (default: the system's temp folder; `mloop demo` uses the "
        "current one): the prediction log creates two files a batch, and creating files costs very "
        "differently from one folder to another on some machines",
    )
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    if not args.skip_loop:
        runs = []
        for _ in range(max(args.repeat, 1)):
            with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
                runs.append(loop_latency(Path(tmp)))
        table = Table(title="demo stream: first drifted request → new model answers 100 % of traffic")
        for col in ("run", "training s", "traffic s", "bookkeeping s", "total s", "bookkeeping share"):
            table.add_column(col)
        for i, t in enumerate(runs, 1):
            table.add_row(
                str(i),
                *(f"{t[part]:.2f}" for part in ("training", "traffic", "bookkeeping", "total")),
                f"{t['bookkeeping'] / t['total']:.1%}",
            )
        console.print(table)
        share = float(np.median([t["bookkeeping"] / t["total"] for t in runs]))
        goal = "met" if share <= 0.05 else "NOT met"
        console.print(
            f"bookkeeping ≤ 5 % of the loop (median of {len(runs)}): {share:.1%}, {goal} "
            f"({runs[0]['retrains']} retraining run(s) in the demo)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        m = monitoring(Path(tmp), args.rows, args.columns, args.window, not args.skip_evidently)
    table = Table(
        title=f"monitoring {args.rows:,} log rows × {args.columns} inputs in windows of {args.window:,}"
    )
    for col in ("tool", "seconds", "rows/s", "windows drifted", "speed-up"):
        table.add_column(col)
    table.add_row(
        "mloop", f"{m['mloop_s']:.2f}", f"{args.rows / m['mloop_s']:,.0f}", str(m["mloop_drifted"]), ""
    )
    if "evidently_s" in m:
        table.add_row(
            "Evidently",
            f"{m['evidently_s']:.2f}",
            f"{args.rows / m['evidently_s']:,.0f}",
            str(m["evidently_drifted"]),
            f"{m['evidently_s'] / m['mloop_s']:.1f}×",
        )
    console.print(table)


if __name__ == "__main__":
    main()
