"""Experiment-tracking throughput, mloop vs MLflow, side by side in one process, both on SQLite.

Workloads (issue 3): 2,000 metrics logged one call each; 2,000 metrics logged in batches of 1,000;
200 runs with 5 params + 5 metrics each; a filtered run search (param equality + latest-metric
comparison) over those 200 runs. Goals: ≥ 50× MLflow's per-call rate, ≥ 10× its batched rate,
≥ 20× per run, ≥ 10× for the search.

MLflow is the anchor, not a dependency: run this with the benchmark's own environment.

    python3 -m venv bench/.venv-mlflow
    bench/.venv-mlflow/bin/pip install -e . -r bench/requirements-mlflow.txt
    bench/.venv-mlflow/bin/python bench/bench_tracking.py
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

import mloop

N_METRICS, BATCH, N_RUNS, SEARCHES, REPEATS = 2000, 1000, 200, 20, 3


def timed(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    """Median wall time of ``repeats`` calls: both tools get the same treatment against machine noise."""
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def bench_mloop(root: Path) -> dict[str, float]:
    ws = mloop.Workspace.open(root / "ws")
    out: dict[str, float] = {}
    with ws.start_run("single") as run:
        out["single"] = timed(lambda: [run.log_metric("m", i * 0.001, step=i) for i in range(N_METRICS)])
    with ws.start_run("batched") as run:
        points = [("m", i * 0.001, i) for i in range(N_METRICS)]
        out["batched"] = timed(
            lambda: [run.log_batch(points[i : i + BATCH]) for i in range(0, N_METRICS, BATCH)]
        )

    def runs() -> None:
        for r in range(N_RUNS):
            with ws.start_run("sweep", {f"p{k}": f"v{(r + k) % 10}" for k in range(5)}) as run:
                run.log_metrics({f"m{k}": ((r * 7 + k) % 100) / 100 for k in range(5)})

    out["runs"] = timed(runs)
    query = mloop.RunQuery(pipeline="sweep", params={"p0": "v3"}, metrics=[("m0", ">", 0.5)], limit=1000)
    found = ws.runs(query)
    out["search_hits"] = len(found)
    out["search"] = timed(lambda: ws.runs(query), SEARCHES)
    ws.close()
    return out


def bench_mlflow(root: Path) -> dict[str, float]:
    import mlflow
    from mlflow.entities import Metric, Param, RunStatus
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    client = MlflowClient()
    exp = client.create_experiment("bench", artifact_location=str(root / "mlruns"))
    out: dict[str, float] = {}
    run = client.create_run(exp)
    out["single"] = timed(
        lambda: [client.log_metric(run.info.run_id, "m", i * 0.001, step=i) for i in range(N_METRICS)]
    )
    run = client.create_run(exp)
    now = int(time.time() * 1000)
    points = [Metric("m", i * 0.001, now, i) for i in range(N_METRICS)]
    out["batched"] = timed(
        lambda: [
            client.log_batch(run.info.run_id, metrics=points[i : i + BATCH])
            for i in range(0, N_METRICS, BATCH)
        ]
    )

    def runs() -> None:
        for r in range(N_RUNS):
            run = client.create_run(exp, run_name="sweep")
            ts = int(time.time() * 1000)
            client.log_batch(
                run.info.run_id,
                params=[Param(f"p{k}", f"v{(r + k) % 10}") for k in range(5)],
                metrics=[Metric(f"m{k}", ((r * 7 + k) % 100) / 100, ts, 0) for k in range(5)],
            )
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))

    out["runs"] = timed(runs)
    flt = "params.p0 = 'v3' and metrics.m0 > 0.5 and attributes.run_name = 'sweep'"
    found = client.search_runs([exp], flt, max_results=1000)
    out["search_hits"] = len(found)
    out["search"] = timed(lambda: client.search_runs([exp], flt, max_results=1000), SEARCHES)
    return out


def main() -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        ours = bench_mloop(Path(a))
        theirs = bench_mlflow(Path(b))
    assert ours["search_hits"] == theirs["search_hits"], (ours["search_hits"], theirs["search_hits"])
    rows = [
        (
            "2,000 metrics, one call each",
            "metrics/s",
            N_METRICS / ours["single"],
            N_METRICS / theirs["single"],
            50,
        ),
        (
            "2,000 metrics, batches of 1,000",
            "metrics/s",
            N_METRICS / ours["batched"],
            N_METRICS / theirs["batched"],
            10,
        ),
        (
            f"{N_RUNS} runs × (5 params + 5 metrics)",
            "runs/s",
            N_RUNS / ours["runs"],
            N_RUNS / theirs["runs"],
            20,
        ),
        (
            f"filtered search ({int(ours['search_hits'])} hits of {N_RUNS * REPEATS} runs)",
            "searches/s",
            1 / ours["search"],
            1 / theirs["search"],
            10,
        ),
    ]
    table = Table(
        title=f"tracking throughput on SQLite: mloop {mloop.__version__} vs MLflow {mlflow.__version__}"
    )
    for col in ("workload", "unit", "mloop", "MLflow", "ratio", "goal", "met"):
        table.add_column(col, justify="right" if col not in ("workload", "unit") else "left")
    for name, unit, ours_rate, their_rate, goal in rows:
        ratio = ours_rate / their_rate
        table.add_row(
            name,
            unit,
            f"{ours_rate:,.0f}",
            f"{their_rate:,.1f}",
            f"{ratio:,.1f}×",
            f"≥ {goal}×",
            "yes" if ratio >= goal else "NO",
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
