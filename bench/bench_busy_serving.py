"""Serving on a busy machine: a HistGradientBoosting model (the loop's default estimator) served by
`mloop serve` at concurrency 16 while a CPU hog keeps every core busy, with and without the
one-OpenMP-thread-per-caller limit, against the infra check's default p99 budget (50 ms).

HGB starts a team of OpenMP threads for every prediction, even one row; on a busy machine those threads
spin waiting for each other. `mloop serve` runs each predicting thread on one OpenMP thread
(``mloop.serving.predictor.OneThreadPerCaller``). The "default threads" column is the same server with
that limit switched off (patched out in the server process, which is a single uvicorn worker). The
infra check is run under the same hog, as the retraining pipeline runs it.

    python bench/bench_busy_serving.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

BUDGET_P99_MS = 50.0  # mloop.validation.infra.check_serving's default budget

_NO_LIMIT = (
    "import mloop.serving.predictor as p; p.OneThreadPerCaller.__call__ = lambda self: None; "
    "from mloop.cli import main; import sys; sys.exit(main(sys.argv[1:]))"
)
_WITH_LIMIT = "from mloop.cli import main; import sys; sys.exit(main(sys.argv[1:]))"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def cpu_hog(n: int) -> Iterator[None]:
    """``n`` busy loops at normal priority, killed by their process group when the block ends."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(n)
    ]
    try:
        time.sleep(0.5)
        yield
    finally:
        for hog in hogs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(hog.pid, signal.SIGKILL)
            hog.wait()


@contextlib.contextmanager
def server(code: str, ws: Path, port: int) -> Iterator[None]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "bench", "--no-compiled", "--port", str(port),
         "--workspace", str(ws), "--flush-interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def post(conn: http.client.HTTPConnection, body: bytes) -> int:
    conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status


def wait_ready(port: int, body: bytes, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            if post(conn, body) == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the server did not answer")


def load(port: int, body: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    deadline = time.perf_counter() + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            if post(conn, body) != 200:
                errors[i] += 1
            latencies[i].append(time.perf_counter() - start)
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


def main() -> None:
    import io
    import warnings

    import joblib
    from rich.console import Console
    from rich.table import Table
    from sklearn.ensemble import HistGradientBoostingClassifier

    import mloop
    from mloop.demo import dataset_path
    from mloop.validation.infra import check_serving

    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    cores = os.cpu_count() or 2
    load_before = " ".join(f"{v:.1f}" for v in os.getloadavg())

    df = pd.read_csv(dataset_path(), index_col=0).iloc[:3632]
    df.columns = [c.strip().replace("-", " ").replace(" ", "_") for c in df.columns]
    x, y = df.drop(columns=["rain"]), df["rain"]
    model = HistGradientBoostingClassifier(random_state=0).fit(x, y)
    body = json.dumps({"instances": [{k: float(v) for k, v in x.iloc[7].items()}]}).encode()
    sink = io.BytesIO()
    joblib.dump(model, sink)
    data = sink.getvalue()

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ws_dir = Path(tmp) / "ws"
        with mloop.Workspace.open(ws_dir) as ws:
            signature = {
                "inputs": mloop.infer_schema(mloop.compute_statistics(x)).to_dict(),
                "output": {"task": "classification", "label": "rain", "classes": [0, 1]},
            }
            ws.promote("bench", ws.register_model("bench", model, signature=signature).version)
        with cpu_hog(cores):
            infra = check_serving(data, hashlib.sha256(data).hexdigest(), x.iloc[:100])
            for label, code in (("one thread (mloop)", _WITH_LIMIT), ("default threads", _NO_LIMIT)):
                port = free_port()
                with server(code, ws_dir, port):
                    wait_ready(port, body)
                    load(port, body, args.concurrency, 1.0)  # warm-up
                    results[label] = load(port, body, args.concurrency, args.seconds)
                    results[label + ", c1"] = load(port, body, 1, args.seconds)

    one, default = results["one thread (mloop)"], results["default threads"]
    table = Table(
        title=f"HGB served by `mloop serve`, concurrency {args.concurrency}, {cores} busy loops on "
        f"{cores} cores ({args.seconds:g} s per phase; ratio = default / one thread)"
    )
    for col in ("measure", "one thread (mloop)", "default threads", "ratio", "budget", "within"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    table.add_row("requests/s", f"{one['rps']:,.0f}", f"{default['rps']:,.0f}",
                  f"{one['rps'] / default['rps']:.1f}x", "", "")  # fmt: skip
    table.add_row("p50", f"{one['p50']:.1f} ms", f"{default['p50']:.1f} ms",
                  f"{default['p50'] / one['p50']:.1f}x", "", "")  # fmt: skip
    table.add_row("p99", f"{one['p99']:.1f} ms", f"{default['p99']:.1f} ms",
                  f"{default['p99'] / one['p99']:.1f}x", f"<= {BUDGET_P99_MS:g} ms",
                  f"{'yes' if one['p99'] <= BUDGET_P99_MS else 'no'} / "
                  f"{'yes' if default['p99'] <= BUDGET_P99_MS else 'no'}")  # fmt: skip
    table.add_row("errors", f"{one['errors']:.0f}", f"{default['errors']:.0f}", "", "", "")
    one1, default1 = results["one thread (mloop), c1"], results["default threads, c1"]
    table.add_row("p50, concurrency 1", f"{one1['p50']:.1f} ms", f"{default1['p50']:.1f} ms",
                  f"{default1['p50'] / one1['p50']:.1f}x", "", "")  # fmt: skip
    table.add_row("p99, concurrency 1", f"{one1['p99']:.1f} ms", f"{default1['p99']:.1f} ms",
                  f"{default1['p99'] / one1['p99']:.1f}x", f"<= {BUDGET_P99_MS:g} ms",
                  f"{'yes' if one1['p99'] <= BUDGET_P99_MS else 'no'} / "
                  f"{'yes' if default1['p99'] <= BUDGET_P99_MS else 'no'}")  # fmt: skip
    Console(width=130).print(table)
    print(f"load average before/after: {load_before} / {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(
        f"infra check under the same hog (one thread, warm-up excluded, {infra.rounds} round(s) "
        f"measured): p50 {infra.p50_ms:.1f} ms, p99 {infra.p99_ms:.1f} ms, cold load "
        f"{infra.cold_load_cpu_s:.2f} s CPU / {infra.cold_load_s:.2f} s wall -> "
        f"{'passed' if infra.passed else 'failed: ' + str(infra.error)}"
    )


if __name__ == "__main__":
    main()
