"""Serving: `mloop serve` vs `mlflow models serve`, same scikit-learn model, same machine, loopback.

Single-row requests at concurrency 1 and 16 (requests/s, p50, p99), a 1,000-row batch, start-up time
to the first answer, and mloop's overhead ratio (HTTP p50 / in-process predict). mloop runs with input
validation and the prediction log on, serving the version's compiled form (ONNX, proven equal to the
model at registration: the default when the onnx extra is installed); the "mloop, Python model"
column serves the unpickled scikit-learn model itself (``--no-compiled``). Each load phase is bounded
in time (``--seconds``).
Goals (issue 6): >= 5x MLflow's requests/s at concurrency 1 and 16; single-row p99 <= 10 ms at
concurrency 1 and <= 60 ms at 16; HTTP p50 <= 3x in-process predict; first answer <= 1.5 s.

    bench/.venv-mlflow/bin/pip install -e '.[serve,onnx]' -r bench/requirements-mlflow.txt
    bench/.venv-mlflow/bin/python bench/bench_serving.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


def wait_first_answer(
    port: int, path: str, body: bytes, started: float, proc: subprocess.Popen, timeout: float = 120
) -> float:
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            status, _ = post(conn, path, body)
            conn.close()
            if status == 200:
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError("no answer before the timeout")


def load(port: int, path: str, body: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    deadline = time.perf_counter() + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            status, _ = post(conn, path, body)
            latencies[i].append(time.perf_counter() - start)
            if status != 200:
                errors[i] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    flat = sorted(x for per in latencies for x in per)
    return {
        "rps": len(flat) / elapsed,
        "p50": flat[len(flat) // 2] * 1000,
        "p99": flat[min(len(flat) - 1, int(len(flat) * 0.99))] * 1000,
        "errors": float(sum(errors)),
    }


def batch_latency(port: int, path: str, body: bytes, n: int = 20) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        status, _ = post(conn, path, body)
        assert status == 200
        samples.append(time.perf_counter() - start)
    conn.close()
    return statistics.median(samples) * 1000


def median_us(fn: object, n: int = 3000) -> float:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def in_process_costs(ws: object, model: object, row: dict, log_root: Path) -> list[tuple[str, float, float]]:
    """One row, in this process: the model call alone, then the service's whole ``predict``
    (validation, model, ids, metrics, log append), compiled form vs the Python model."""
    import numpy as np

    from mloop.serving.app import ModelService, ServeConfig

    version = ws.model_version("rainfall@production")  # type: ignore[attr-defined]
    onnx = ws.load_artifact(version.signature["serving_form"]["artifact_id"])  # type: ignore[attr-defined]
    matrix = np.array([[row[c] for c in onnx.feature_names_in_]], dtype=float)
    costs = [("model call, one-row matrix", median_us(lambda: onnx.predict_proba(matrix)),
              median_us(lambda: model.predict_proba(matrix)))]  # type: ignore[attr-defined]  # fmt: skip
    per_form = []
    for compiled in (True, False):
        service = ModelService(ws, ServeConfig(model="rainfall", compiled=compiled), log_root)  # type: ignore[arg-type]
        service.start()
        per_form.append(median_us(lambda s=service: s.predict([row])))
        service.stop()
    costs.append(("service.predict, one row", per_form[0], per_form[1]))
    return costs


def main() -> None:
    import logging
    import warnings

    import mlflow
    from rich.console import Console
    from rich.table import Table
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    import mloop
    from mloop.demo import dataset_path

    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    df = pd.read_csv(dataset_path(), index_col=0).iloc[:3632]
    df.columns = [c.strip().replace("-", " ").replace(" ", "_") for c in df.columns]
    x, y = df.drop(columns=["rain"]), df["rain"]
    model = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=1000))]).fit(x, y)
    row = {k: float(v) for k, v in x.iloc[7].items()}
    batch = [{k: float(v) for k, v in r.items()} for r in x.iloc[:1000].to_dict("records")]
    frame = pd.DataFrame([row])
    samples = []
    for _ in range(2000):
        start = time.perf_counter()
        model.predict(frame)
        samples.append(time.perf_counter() - start)
    in_process = statistics.median(samples) * 1000

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with mloop.Workspace.open(root / "ws") as ws:
            signature = {
                "inputs": mloop.infer_schema(mloop.compute_statistics(x)).to_dict(),
                "output": {"task": "classification", "label": "rain", "classes": [0, 1]},
            }
            version = ws.register_model("rainfall", model, signature=signature, compile=True)
            assert version.signature["serving_form"]["format"] == "onnx", version.signature["serving_form"]
            ws.promote("rainfall", version.version)
            costs = in_process_costs(ws, model, row, root / "in-process-log")
        uri = f"sqlite:///{root / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.create_experiment("bench", artifact_location=str(root / "mlruns"))
        with mlflow.start_run(experiment_id=experiment):
            info = mlflow.sklearn.log_model(model, name="model", input_example=x.iloc[:2])
        servers = {
            "mloop": (
                [str(BIN / "mloop"), "serve", "rainfall", "--workspace", str(root / "ws")],
                "/predict",
                lambda rows: {"instances": rows},
            ),
            "mloop, Python model": (
                [str(BIN / "mloop"), "serve", "rainfall", "--no-compiled", "--workspace", str(root / "ws")],
                "/predict",
                lambda rows: {"instances": rows},
            ),
            "MLflow": (
                [
                    str(BIN / "mlflow"),
                    "models",
                    "serve",
                    "-m",
                    info.model_uri,
                    "--env-manager",
                    "local",
                    "-h",
                    "127.0.0.1",
                ],
                "/invocations",
                lambda rows: {"dataframe_records": rows},
            ),
        }
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": uri,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        for name, (command, path, wrap) in servers.items():
            port = free_port()
            flag = ["-p", str(port)] if name == "MLflow" else ["--port", str(port)]
            started = time.perf_counter()
            proc = subprocess.Popen(
                [*command, *flag], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            try:
                one = json.dumps(wrap([row])).encode()
                first = wait_first_answer(port, path, one, started, proc)
                load(port, path, one, 4, 1.0)  # warm-up
                c1 = load(port, path, one, 1, args.seconds)
                c16 = load(port, path, one, 16, args.seconds)
                b = batch_latency(port, path, json.dumps(wrap(batch)).encode())
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
            results[name] = {"first": first, "c1": c1, "c16": c16, "batch": b}  # type: ignore[dict-item]

    ours, python, theirs = results["mloop"], results["mloop, Python model"], results["MLflow"]
    table = Table(
        title=f"serving one scikit-learn model: mloop vs MLflow {mlflow.__version__} "
        f"({args.seconds:g} s per load phase; ratio = mloop vs MLflow)"
    )
    for col in ("measure", "mloop", "mloop, Python model", "MLflow", "ratio", "goal", "met"):
        table.add_column(col, justify="left" if col == "measure" else "right")

    def value(result: dict, key: str) -> float:
        phase, _, measure = key.partition(".")
        return float(result[phase][measure] if measure else result[phase])

    def row_(measure: str, key: str, unit: str, higher_is_better: bool, goal: str, met: bool | None) -> None:
        a, p, b = value(ours, key), value(python, key), value(theirs, key)
        table.add_row(
            measure,
            *(f"{v:,.1f} {unit}".strip() for v in (a, p, b)),
            f"{(a / b if higher_is_better else b / a):.1f}x",
            goal,
            "" if met is None else ("yes" if met else "NO"),
        )

    for c, goal_p99 in (("c1", 10.0), ("c16", 60.0)):
        conc = c[1:]
        o, t = ours[c], theirs[c]  # type: ignore[index]
        row_(f"requests/s, concurrency {conc}", f"{c}.rps", "", True, ">= 5x", o["rps"] >= 5 * t["rps"])
        row_(f"p50, concurrency {conc}", f"{c}.p50", "ms", False, "", None)
        row_(f"p99, concurrency {conc}", f"{c}.p99", "ms", False, f"<= {goal_p99:g} ms", o["p99"] <= goal_p99)
        assert o["errors"] == 0 and t["errors"] == 0 and python[c]["errors"] == 0, (o, t)  # type: ignore[index]
    row_("1,000-row batch, median", "batch", "ms", False, "", None)
    row_("start-up to first answer", "first", "s", False, "<= 1.5 s", float(ours["first"]) <= 1.5)  # type: ignore[arg-type]
    Console(width=150).print(table)
    p50 = ours["c1"]["p50"]  # type: ignore[index]
    print(
        f"mloop overhead: HTTP p50 {p50:.2f} ms / in-process model.predict on a one-row DataFrame "
        f"{in_process:.2f} ms = {p50 / in_process:.2f}x (goal <= 3x)"
    )
    for what, compiled_us, python_us in costs:
        print(
            f"in-process {what}: compiled {compiled_us:,.0f} µs, Python model {python_us:,.0f} µs "
            f"(median of 3,000)"
        )


if __name__ == "__main__":
    main()
