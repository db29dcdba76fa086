"""Team server latency, mloop vs MLflow's tracking server, side by side on the same data and machine.

Data: N runs (default 100,000), each with 5 params and 5 metrics, in SQLite and in PostgreSQL. Both
stores are filled by bulk SQL inserts into their own schema (the same values; going through either
tool's API would take an hour and measure nothing the servers do). Each server runs as its own
process with 2 workers on 127.0.0.1; mloop with token auth on.

Measured over HTTP:
* runs page: first page of 50 runs with ``m0 > 0.5``, sorted by ``m1`` descending
  (mloop ``GET /api/v1/runs``; MLflow ``POST /api/2.0/mlflow/runs/search``): p50, p95;
* run page: mloop ``GET /runs/{id}`` + ``GET /lineage/{id}`` of a pipeline run; MLflow ``runs/get``;
* 50 concurrent viewers loading runs pages (random thresholds) for a few seconds: p99, requests/s.

Goals (issue 18): runs page p95 ≤ 100 ms and ≥ 10× faster than MLflow; run page ≤ 150 ms; 50 viewers
p99 ≤ 300 ms.

    python3 -m venv bench/.venv-mlflow
    bench/.venv-mlflow/bin/pip install -e '.[server,postgres]' -r bench/requirements-mlflow.txt
    MLOOP_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        bench/.venv-mlflow/bin/python bench/bench_server.py [--runs 100000] [--skip-mlflow]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import sqlalchemy as sa
from loadclient import KeepAlive
from rich.console import Console
from rich.table import Table

import mloop
from mloop.auth import create_token
from mloop.entities import new_id
from mloop.stores.sql import schema as t

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
PAGE_REQUESTS, RUN_REQUESTS, VIEWERS, VIEW_SECONDS = 100, 60, 50, 8


def value(r: int, k: int) -> float:
    return ((r * 7919 + k * 104729) % 10007) / 10007


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer")


def pctl(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fill_mloop(url: str, n: int) -> None:
    engine = sa.create_engine(url)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for lo in range(0, n, 5000):
            runs, params, metrics = [], [], []
            for r in range(lo, min(n, lo + 5000)):
                at = start + timedelta(seconds=r)
                run_id = new_id()
                p = {f"p{k}": f"v{(r + k) % 10}" for k in range(5)}
                runs.append(
                    {
                        "id": run_id,
                        "pipeline": "sweep",
                        "status": "succeeded",
                        "trigger": "manual",
                        "params": json.dumps(p),
                        "code_commit": None,
                        "code_hash": "",
                        "created_at": at,
                        "ended_at": at,
                        "heartbeat_at": at,
                        "host": None,
                        "pid": None,
                        "error": None,
                        "resumed_from": None,
                    }
                )
                params += [
                    {"run_id": run_id, "step_run_id": None, "key": k, "value": json.dumps(v)}
                    for k, v in p.items()
                ]
                metrics += [
                    {
                        "run_id": run_id,
                        "step_run_id": None,
                        "key": f"m{k}",
                        "value": value(r, k),
                        "step": 0,
                        "timestamp": at,
                    }
                    for k in range(5)
                ]
            conn.execute(t.runs.insert(), runs)
            conn.execute(t.params.insert(), params)
            conn.execute(t.metrics.insert(), metrics)
            # one point per key: each is its run's latest value (log_metrics keeps this table so)
            conn.execute(
                t.latest_metrics.insert(), [{k: m[k] for k in m if k != "step_run_id"} for m in metrics]
            )
    if engine.dialect.name == "postgresql":  # what autovacuum does to a live database after a bulk load
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE runs, params, metrics, latest_metrics"))
    engine.dispose()


def fill_mlflow(url: str, n: int) -> str:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(url, tempfile.mkdtemp())
    exp = store.create_experiment("bench")
    engine = store.engine
    meta = sa.MetaData()
    meta.reflect(engine, only=["runs", "params", "metrics", "latest_metrics", "tags"])
    tr, tp, tm, tl, tt = (meta.tables[x] for x in ("runs", "params", "metrics", "latest_metrics", "tags"))
    t0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
    with engine.begin() as conn:
        for lo in range(0, n, 5000):
            runs, params, metrics, tags = [], [], [], []
            for r in range(lo, min(n, lo + 5000)):
                run_id, ts = uuid.uuid4().hex, t0 + r * 1000
                runs.append(
                    {
                        "run_uuid": run_id,
                        "name": "sweep",
                        "source_type": "LOCAL",
                        "source_name": "",
                        "entry_point_name": "",
                        "user_id": "bench",
                        "status": "FINISHED",
                        "start_time": ts,
                        "end_time": ts,
                        "source_version": "",
                        "lifecycle_stage": "active",
                        "artifact_uri": "",
                        "experiment_id": int(exp),
                        "deleted_time": None,
                    }
                )
                params += [
                    {"key": f"p{k}", "value": f"v{(r + k) % 10}", "run_uuid": run_id} for k in range(5)
                ]
                metrics += [
                    {
                        "key": f"m{k}",
                        "value": value(r, k),
                        "timestamp": ts,
                        "run_uuid": run_id,
                        "step": 0,
                        "is_nan": False,
                    }
                    for k in range(5)
                ]
                tags.append({"key": "mlflow.runName", "value": "sweep", "run_uuid": run_id})
            conn.execute(tr.insert(), runs)
            conn.execute(tp.insert(), params)
            conn.execute(tm.insert(), metrics)
            conn.execute(tl.insert(), metrics)
            conn.execute(tt.insert(), tags)
    if engine.dialect.name == "postgresql":  # what autovacuum does to a live database after a bulk load
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE runs, params, metrics, latest_metrics, tags"))
    engine.dispose()
    return str(exp)


def timed_requests(
    call: Callable[[httpx.Client, float], httpx.Response], client: httpx.Client, n: int
) -> list[float]:
    for _ in range(5):
        call(client, 0.5).raise_for_status()
    samples = []
    rng = random.Random(0)
    for _ in range(n):
        t0 = time.perf_counter()
        call(client, rng.uniform(0.1, 0.9)).raise_for_status()
        samples.append(time.perf_counter() - t0)
    return samples


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its children (Linux /proc)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def viewers(
    call: Callable[[KeepAlive, float], tuple[int, bytes]],
    port: int,
    headers: dict[str, str] | None = None,
    server_pid: int | None = None,
) -> tuple[float, float]:
    """p99 latency and requests/s of VIEWERS threads loading pages for VIEW_SECONDS, each on its own
    keep-alive connection (:class:`loadclient.KeepAlive`: httpx cost ~2 ms of client CPU per
    request, taken from the server on 2 cores). Also printed: the CPU each request cost the server
    and this (client) process, and the load average, since on a small shared machine the client's
    threads and other work compete with the server for cores."""
    samples: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + VIEW_SECONDS

    def viewer(seed: int) -> None:
        rng = random.Random(seed)
        with KeepAlive(port, headers, timeout=300) as client:
            mine = []
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                status, _ = call(client, rng.uniform(0.1, 0.9))
                mine.append(time.perf_counter() - t0)
                if status != 200:
                    errors.append(str(status))
            with lock:
                samples.extend(mine)

    threads = [threading.Thread(target=viewer, args=(i,)) for i in range(VIEWERS)]
    client_cpu, server_cpu = time.process_time(), tree_cpu(server_pid) if server_pid else 0.0
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    n = max(1, len(samples))
    print(
        f"{VIEWERS} viewers: {n} requests; CPU per request: server "
        f"{(tree_cpu(server_pid) - server_cpu) / n * 1000 if server_pid else float('nan'):.1f} ms, "
        f"bench client {(time.process_time() - client_cpu) / n * 1000:.1f} ms; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    if errors:  # reported, not hidden: a failed request under load is a finding
        print(
            f"{len(errors)} of {len(samples)} requests failed under load: {sorted(set(errors))}", flush=True
        )
    return pctl(samples, 0.99), len(samples) / VIEW_SECONDS


def bench_mloop(metadata_url: str, workdir: Path, n: int) -> dict[str, float]:
    from sample_pipelines import arithmetic

    ws_dir = workdir / "ws"
    with mloop.Workspace.open(ws_dir, metadata_url=metadata_url) as ws:
        fill_mloop(metadata_url, n)
        pipeline_run = ws.run(arithmetic, n=3).run.id
        secret, _ = create_token(ws.tokens, "bench", "viewer", created_by="bench")
    port = free_port()
    env = {
        **os.environ,
        "MLOOP_WORKSPACE": str(ws_dir),
        "MLOOP_METADATA_URL": metadata_url,
        "MLOOP_ARTIFACT_URL": str(ws_dir / "artifacts"),
    }
    cmd = [sys.executable, "-m", "mloop", "server", "start", "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {secret}"}
    try:
        wait_up(base + "/api/v1/openapi.json", proc)

        def page_query(threshold: float) -> list[tuple[str, str]]:
            return [("where", f"metric.m0>{threshold:.4f}"), ("sort", "-metric.m1"), ("limit", "50")]

        def page(client: httpx.Client, threshold: float) -> httpx.Response:
            return client.get("/api/v1/runs", params=page_query(threshold))

        def run_page(client: httpx.Client, _: float) -> httpx.Response:
            client.get(f"/api/v1/runs/{pipeline_run}").raise_for_status()
            return client.get(f"/api/v1/lineage/{pipeline_run}")

        def make() -> httpx.Client:
            return httpx.Client(base_url=base, headers=headers, timeout=60)

        with make() as client:
            assert len(page(client, 0.5).json()["runs"]) == 50
            pages = timed_requests(page, client, PAGE_REQUESTS)
            runs = timed_requests(run_page, client, RUN_REQUESTS)
        print(
            f"runs page p50 {statistics.median(pages) * 1000:.1f} ms, p95 {pctl(pages, 0.95) * 1000:.1f} ms; "
            f"run page + lineage p95 {pctl(runs, 0.95) * 1000:.1f} ms "
            f"(load average {os.getloadavg()[0]:.1f})",
            flush=True,
        )

        def page_raw(client: KeepAlive, threshold: float) -> tuple[int, bytes]:
            return client.request("GET", f"/api/v1/runs?{urlencode(page_query(threshold))}")

        p99, rps = viewers(page_raw, port, headers, proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "page_p50": statistics.median(pages),
        "page_p95": pctl(pages, 0.95),
        "run_p95": pctl(runs, 0.95),
        "view_p99": p99,
        "view_rps": rps,
    }


def bench_in_process(metadata_url: str, workdir: Path, n: int) -> None:
    """The runs page's library call, without HTTP: ``SqlRunPages.page`` with and without the
    server's in-memory index, over random thresholds (median, p95), and the run page's calls."""
    from mloop.stores.sql.run_index import LatestMetricsIndex
    from mloop.stores.sql.run_pages import RunPageQuery, SqlRunPages

    with mloop.Workspace.open(workdir / "ws", metadata_url=metadata_url) as ws:
        fill_mloop(metadata_url, n)
        engine = ws.metadata.engine  # type: ignore[attr-defined]
        rng = random.Random(0)
        thresholds = [rng.uniform(0.1, 0.9) for _ in range(40)]
        for name, pages in (
            ("index", SqlRunPages(engine, index=LatestMetricsIndex())),
            ("sql", SqlRunPages(engine)),
        ):
            t0 = time.perf_counter()
            pages.page(RunPageQuery(metrics=(("m0", ">", 0.5),), sort_metric="m1", limit=50))
            first = time.perf_counter() - t0
            samples = []
            for x in thresholds:
                t0 = time.perf_counter()
                page = pages.page(RunPageQuery(metrics=(("m0", ">", x),), sort_metric="m1", limit=50))
                samples.append(time.perf_counter() - t0)
                assert len(page.runs) == 50
            print(
                f"in process, {name}: first page {first * 1000:.1f} ms, then median "
                f"{statistics.median(samples) * 1000:.1f} ms, p95 {pctl(samples, 0.95) * 1000:.1f} ms "
                f"(load average {os.getloadavg()[0]:.1f})",
                flush=True,
            )


def bench_mlflow(url: str, n: int) -> dict[str, float]:
    exp = fill_mlflow(url, n)
    port = free_port()
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    cmd = [
        mlflow,
        "server",
        "--backend-store-uri",
        url,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(base + "/health", proc)

        def page_body(threshold: float) -> dict[str, object]:
            return {
                "experiment_ids": [exp],
                "filter": f"metrics.m0 > {threshold:.4f}",
                "order_by": ["metrics.m1 DESC"],
                "max_results": 50,
            }

        def page(client: httpx.Client, threshold: float) -> httpx.Response:
            return client.post("/api/2.0/mlflow/runs/search", json=page_body(threshold))

        with httpx.Client(base_url=base, timeout=120) as client:
            first = page(client, 0.5).json()["runs"]
            assert len(first) == 50
            run_id = first[0]["info"]["run_id"]

            def run_page(c: httpx.Client, _: float) -> httpx.Response:
                return c.get("/api/2.0/mlflow/runs/get", params={"run_id": run_id})

            pages = timed_requests(page, client, max(10, PAGE_REQUESTS // 5))
            runs = timed_requests(run_page, client, RUN_REQUESTS)

        def page_raw(client: KeepAlive, threshold: float) -> tuple[int, bytes]:
            body = json.dumps(page_body(threshold)).encode()
            kind = {"Content-Type": "application/json"}
            return client.request("POST", "/api/2.0/mlflow/runs/search", body, kind)

        p99, rps = viewers(page_raw, port, None, proc.pid)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
    return {
        "page_p50": statistics.median(pages),
        "page_p95": pctl(pages, 0.95),
        "run_p95": pctl(runs, 0.95),
        "view_p99": p99,
        "view_rps": rps,
    }


def pg_schema_url(base: str, engine_holder: list[sa.Engine]) -> tuple[str, str]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine_holder.append(admin)
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}", schema


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(
        "--in-process", action="store_true", help="time the library call of the runs page only (no servers)"
    )
    args = parser.parse_args()
    console = Console()
    pg = os.environ.get("MLOOP_TEST_POSTGRES_URL")
    results: dict[str, tuple[dict[str, float], dict[str, float] | None]] = {}
    for backend in args.backends.split(","):
        if backend == "postgres" and not pg:
            console.print("MLOOP_TEST_POSTGRES_URL unset: PostgreSQL skipped")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            admins: list[sa.Engine] = []
            schemas: list[str] = []
            try:
                if backend == "sqlite":
                    ours_url, theirs_url = f"sqlite:///{work / 'mloop.db'}", f"sqlite:///{work / 'mlflow.db'}"
                else:
                    assert pg is not None
                    ours_url, s1 = pg_schema_url(pg, admins)
                    theirs_url, s2 = pg_schema_url(
                        pg.replace("+psycopg", "+psycopg2") if _has_psycopg2() else pg, admins
                    )
                    schemas += [s1, s2]
                if args.in_process:
                    console.print(f"{backend}: in process, {args.runs:,} runs…", markup=False)
                    bench_in_process(ours_url, work, args.runs)
                    continue
                console.print(f"{backend}: mloop, {args.runs:,} runs…", markup=False)
                ours = bench_mloop(ours_url, work, args.runs)
                theirs = None
                if not args.skip_mlflow:
                    console.print(f"{backend}: MLflow, {args.runs:,} runs…", markup=False)
                    theirs = bench_mlflow(theirs_url, args.runs)
                results[backend] = (ours, theirs)
            finally:
                for admin in admins:
                    with admin.connect() as conn:
                        for s in schemas:
                            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{s}" CASCADE'))
                    admin.dispose()
    if not results:
        return
    table = Table(title=f"team server, {args.runs:,} runs × (5 params + 5 metrics)", title_justify="left")
    for col in ("backend", "measure", "mloop", "MLflow", "MLflow / mloop", "goal"):
        table.add_column(col)
    for backend, (ours, theirs) in results.items():
        for key, label, goal in (
            ("page_p50", "runs page p50 (ms)", ""),
            ("page_p95", "runs page p95 (ms)", "≤ 100 ms, ≥ 10×"),
            ("run_p95", "run page + lineage p95 (ms) [MLflow: runs/get]", "≤ 150 ms"),
            ("view_p99", f"{VIEWERS} viewers p99 (ms)", "≤ 300 ms"),
        ):
            a, b = ours[key] * 1000, (theirs[key] * 1000 if theirs else None)
            table.add_row(
                backend, label, f"{a:.1f}", f"{b:.1f}" if b else "-", f"{b / a:.1f}×" if b else "-", goal
            )
        rb = theirs["view_rps"] if theirs else None
        table.add_row(
            backend,
            f"{VIEWERS} viewers, requests/s",
            f"{ours['view_rps']:.0f}",
            f"{rb:.0f}" if rb else "-",
            f"{ours['view_rps'] / rb:.1f}× (mloop/MLflow)" if rb else "-",
            "",
        )
    console.print(table)


def _has_psycopg2() -> bool:
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
