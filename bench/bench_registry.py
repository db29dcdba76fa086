"""Model registry: register, alias move and cold load, mloop vs MLflow's registry, both on SQLite.

Same machine, same script, same scikit-learn model. "Register" is registering an already stored
model (MLflow: ``create_model_version`` on a logged model; mloop: ``register_model`` on a stored
artifact); "store + register" includes serializing the model (MLflow: ``log_model`` + register).
Cold load is a fresh Python process that resolves ``name@production`` and loads the model. Both tools
pay the import of the model's framework (scikit-learn imports scipy, pandas and pyarrow): the
"framework floor" row measures just that (``import joblib, sklearn`` + unpickling the same bytes),
and "registry overhead" is each tool's cold load minus that floor.
Goals (issue 5): ≥ 10x faster register, alias move and cold load. Also reports the infra check's cost.

    bench/.venv-mlflow/bin/python bench/bench_registry.py
"""

from __future__ import annotations

import logging
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

N, LOADS = 30, 5


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def cold_load(code: str) -> float:
    samples = []
    for _ in range(LOADS):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def model() -> LogisticRegression:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8))
    return LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))


def bench_mloop(root: Path, clf: LogisticRegression) -> dict[str, float]:
    import mloop

    ws = mloop.Workspace.open(root / "ws")
    t0 = time.perf_counter()
    artifact = ws.store_artifact(clf)
    ws.register_model("bench", artifact)
    store_register = time.perf_counter() - t0
    register, move = [], []
    for i in range(N):
        t0 = time.perf_counter()
        version = ws.register_model("bench", artifact, metrics={"accuracy": 0.9}, tags={"i": i})
        register.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ws.promote("bench", version.version, "production", reason="bench")
        move.append(time.perf_counter() - t0)
    path = ws.artifacts.uri(artifact.digest)
    ws.close()
    load = cold_load(
        f"import mloop; mloop.Workspace.open({str(root / 'ws')!r}).load_model('bench@production')"
    )
    floor = cold_load(
        f"import io, joblib, sklearn.linear_model; joblib.load(io.BytesIO(open({path!r}, 'rb').read()))"
    )
    from mloop.core.serialize import serialize
    from mloop.validation.infra import check_serving

    _, data = serialize(clf)
    import hashlib

    import pandas as pd

    t0 = time.perf_counter()
    report = check_serving(
        data, hashlib.sha256(data).hexdigest(), pd.DataFrame(np.zeros((20, 8))), repeats=200
    )
    infra = time.perf_counter() - t0
    assert report.passed, report.error
    return {
        "store_register": store_register,
        "register": median_ms(register),
        "move": median_ms(move),
        "load": load,
        "floor": floor,
        "infra": infra,
        "infra_load": report.cold_load_s or 0.0,
    }


def bench_mlflow(root: Path, clf: LogisticRegression) -> dict[str, float]:
    import mlflow
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient()
    experiment = client.create_experiment("bench", artifact_location=str(root / "mlruns"))
    t0 = time.perf_counter()
    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.sklearn.log_model(clf, name="model")
    client.create_registered_model("bench")
    client.create_model_version("bench", info.model_uri, run.info.run_id)
    store_register = time.perf_counter() - t0
    register, move = [], []
    for i in range(N):
        t0 = time.perf_counter()
        version = client.create_model_version("bench", info.model_uri, run.info.run_id, tags={"i": str(i)})
        register.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        client.set_registered_model_alias("bench", "production", version.version)
        move.append(time.perf_counter() - t0)
    load = cold_load(
        f"import mlflow; mlflow.set_tracking_uri({uri!r}); mlflow.set_registry_uri({uri!r}); "
        "mlflow.sklearn.load_model('models:/bench@production')"
    )
    return {
        "store_register": store_register,
        "register": median_ms(register),
        "move": median_ms(move),
        "load": load,
    }


def main() -> None:
    import mlflow
    from rich.console import Console
    from rich.table import Table

    clf = model()
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        ours = bench_mloop(Path(a), clf)
        theirs = bench_mlflow(Path(b), clf)
    table = Table(
        title=f"model registry on SQLite: mloop vs MLflow {mlflow.__version__} "
        f"(median of {N}, loads of {LOADS})"
    )
    for col in ("operation", "mloop", "MLflow", "speed-up", "goal", "met"):
        table.add_column(col, justify="left" if col == "operation" else "right")
    rows = [
        (
            "register a version",
            f"{ours['register']:.2f} ms",
            f"{theirs['register']:.2f} ms",
            theirs["register"] / ours["register"],
            10,
        ),
        (
            "move an alias",
            f"{ours['move']:.2f} ms",
            f"{theirs['move']:.2f} ms",
            theirs["move"] / ours["move"],
            10,
        ),
        (
            "cold load name@production (total)",
            f"{ours['load']:.2f} s",
            f"{theirs['load']:.2f} s",
            theirs["load"] / ours["load"],
            10,
        ),
        ("  framework floor, paid by both", f"{ours['floor']:.2f} s", f"{ours['floor']:.2f} s", 1.0, None),
        (
            "  registry's own cold-load cost",
            f"{ours['load'] - ours['floor']:.2f} s",
            f"{theirs['load'] - ours['floor']:.2f} s",
            (theirs["load"] - ours["floor"]) / max(ours["load"] - ours["floor"], 1e-3),
            10,
        ),
        (
            "store + register (first)",
            f"{ours['store_register'] * 1000:.1f} ms",
            f"{theirs['store_register'] * 1000:.0f} ms",
            theirs["store_register"] / ours["store_register"],
            None,
        ),
    ]
    for name, a, b_, ratio, goal in rows:
        met = "" if goal is None else ("yes" if ratio >= goal else "NO")
        table.add_row(name, a, b_, f"{ratio:.1f}x", f">= {goal}x" if goal else "", met)
    Console(width=140).print(table)
    print(
        f"infra check (fresh process: load + 200 single-row predictions): {ours['infra']:.2f} s wall, "
        f"of which model cold load {ours['infra_load']:.2f} s"
    )


if __name__ == "__main__":
    main()
