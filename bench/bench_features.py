"""Feature store: mloop vs Feast (and vs a bare DuckDB ASOF join), side by side.

Data: a view of 10 features over ``--rows`` feature rows (default 5,000,000) for 10,000 entities across
three months, TTL 1 day, with a created column; entity rows drawn over the same months (some for
entities with no history). Each measurement runs in a child process of its own, so its peak memory
(``ru_maxrss``) is its own; Feast's run in ``bench/.venv-feast`` (``bench/requirements-feast.txt``).

    python bench/bench_features.py                        # everything (Feast at 100,000 entity rows)
    python bench/bench_features.py --no-feast --sizes 100000,1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FEAST_PY = ROOT / "bench" / ".venv-feast" / "bin" / "python"
START = datetime(2024, 1, 1, tzinfo=UTC)
DAYS = 91
N_ENTITIES = 10_000
FEATURES = [f"f{i}" for i in range(10)]
REFS = [f"driver_stats:{f}" for f in FEATURES]
DEFINITIONS = """
from mloop.features import Entity, FeatureService, FeatureView

driver = Entity("driver", join_keys=["driver_id"])
stats = FeatureView("driver_stats", [driver], {source!r}, timestamp="event_timestamp", ttl={ttl!r},
                    created="created")
svc = FeatureService("driver_model", [stats])
"""


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# data ---------------------------------------------------------------------------------------------


def generate(work: Path, rows: int, sizes: list[int]) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = work / "features.parquet"
    if not src.exists():
        rng = np.random.default_rng(0)
        tmp = src.with_suffix(".tmp")
        writer = None
        chunk = 500_000
        span = DAYS * 86400 * 1_000_000
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            ts = START.timestamp() * 1e6 + rng.integers(0, span, n)
            table = pa.table(
                {
                    "driver_id": rng.integers(0, N_ENTITIES, n),
                    "event_timestamp": pa.array(ts.astype("int64"), pa.timestamp("us", tz="UTC")),
                    "created": pa.array(
                        (ts + rng.integers(0, 3_600_000_000, n)).astype("int64"), pa.timestamp("us", tz="UTC")
                    ),
                    **{f: rng.random(n, dtype="float32") for f in FEATURES},
                }
            )
            writer = writer or pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
        assert writer is not None
        writer.close()
        tmp.rename(src)
    for size in sizes:
        path = work / f"entities-{size}.parquet"
        if path.exists():
            continue
        rng = np.random.default_rng(size)
        ts = START.timestamp() * 1e6 + rng.integers(86400 * 1_000_000, DAYS * 86400 * 1_000_000, size)
        pq.write_table(
            pa.table(
                {
                    "driver_id": rng.integers(0, N_ENTITIES + 100, size),  # 1 % without any history
                    "event_timestamp": pa.array(ts.astype("int64"), pa.timestamp("us", tz="UTC")),
                }
            ),
            path,
        )


# children -----------------------------------------------------------------------------------------


def _workspace(work: Path, ttl: str | None = "1d", name: str = "ws") -> Any:
    import mloop

    path = work / f"features-{name}.py"
    path.write_text(DEFINITIONS.format(source=str(work / "features.parquet"), ttl=ttl))
    ws = mloop.Workspace.open(work / name)
    ws.features.apply(path)
    return ws


def child_mloop_join(work: Path, size: int) -> dict[str, Any]:
    ws = _workspace(work)
    out = work / f"out-mloop-{size}.parquet"
    started = time.perf_counter()
    rows = ws.features.historical(work / f"entities-{size}.parquet", REFS, out=out)
    return {"seconds": time.perf_counter() - started, "rows": rows, "peak": _peak(), "digest": _digest(out)}


def child_duckdb_join(work: Path, size: int) -> dict[str, Any]:
    """The same semantics written by hand against DuckDB: what the anchor 'bare DuckDB' means."""
    import duckdb

    out = work / f"out-duckdb-{size}.parquet"
    feats = ", ".join(
        f'CASE WHEN f.ts >= e.event_timestamp - INTERVAL 1 DAY THEN f.{c} END AS "driver_stats:{c}"'
        for c in FEATURES
    )
    sql = f"""
        COPY (
          SELECT e.driver_id, e.event_timestamp, {feats}
          FROM (SELECT driver_id, event_timestamp, file_row_number AS r
                FROM read_parquet('{work}/entities-{size}.parquet', file_row_number = true)) e
          ASOF LEFT JOIN (
            SELECT driver_id, event_timestamp AS ts, {", ".join(FEATURES)},
                   struct_pack(t := event_timestamp, c := epoch_us(created)) AS o
            FROM read_parquet('{work}/features.parquet')
          ) f ON e.driver_id = f.driver_id
             AND struct_pack(t := e.event_timestamp, c := 9223372036854775807) >= f.o
          ORDER BY e.r
        ) TO '{out}' (FORMAT parquet)"""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    started = time.perf_counter()
    con.execute(sql)
    seconds = time.perf_counter() - started
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]  # type: ignore[index]
    return {"seconds": seconds, "rows": rows, "peak": _peak(), "digest": _digest(out)}


def _digest(path: Path) -> str:
    """A hash of the rows in order (the results must equal row for row)."""
    import hashlib

    import pyarrow.parquet as pq

    h = hashlib.sha256()
    for batch in pq.ParquetFile(path).iter_batches(batch_size=200_000):
        h.update(batch.to_pandas().to_csv(index=False, header=False, float_format="%.6g").encode())
    return h.hexdigest()[:16]


def _latencies(fn: Any, n: int) -> dict[str, float]:
    for _ in range(min(200, n)):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return {"p50_ms": times[len(times) // 2] * 1000, "p99_ms": times[int(len(times) * 0.99)] * 1000}


def child_mloop_online(work: Path, url: str) -> dict[str, Any]:
    import random

    if url:
        os.environ["MLOOP_ONLINE_URL"] = url
    ws = _workspace(work)
    store = ws.features.online_store()
    if url:
        store.prefix = f"mloop-bench:{os.getpid()}:"  # type: ignore[attr-defined]
    try:
        day_end = START + timedelta(days=DAYS - 1)
        t = time.perf_counter()
        day = ws.features.materialize(start=day_end - timedelta(days=1), end=day_end)
        one_day = time.perf_counter() - t
        t = time.perf_counter()
        ws.features.materialize(start=START, end=START + timedelta(days=DAYS + 1))
        full = time.perf_counter() - t
        rng = random.Random(0)
        one = _latencies(lambda: ws.features.online([{"driver_id": rng.randrange(N_ENTITIES)}], REFS), 5000)
        batch = _latencies(
            lambda: ws.features.online([{"driver_id": rng.randrange(N_ENTITIES)} for _ in range(100)], REFS),
            500,
        )
        return {
            "one_day_s": one_day,
            "one_day_rows": day[0].rows,
            "full_s": full,
            "one": one,
            "batch100": batch,
        }
    finally:
        if url:
            store.drop_prefix()  # type: ignore[attr-defined]
        ws.close()


def child_mloop_serve(work: Path, size: int) -> dict[str, Any]:
    """`mloop serve`'s app on loopback answering from entity keys, concurrency 1."""
    import random
    import socket
    import threading

    import httpx
    import uvicorn
    from sklearn.linear_model import LogisticRegression

    import mloop
    from mloop.serving.app import ServeConfig, create_app

    # every value here is from 2024, older than any TTL now: the serving view keeps them (ttl None),
    # so the request path measured is the one a live service runs on fresh values
    ws = _workspace(work, ttl=None, name="ws-serve")
    ws.features.materialize(start=START, end=START + timedelta(days=DAYS + 1))
    train = ws.features.historical(work / f"entities-{size}.parquet", REFS).dropna().head(5000)
    x = train[REFS].astype(float)
    model = LogisticRegression().fit(x, (x[REFS[0]] > 0.5).astype(int))
    inputs = mloop.infer_schema(mloop.compute_statistics(x)).to_dict()
    version = ws.register_model(
        "bench-features", model, signature={"inputs": inputs, "feature_service": "driver_model"}
    )
    ws.promote("bench-features", version.version)
    app = create_app(ws, ServeConfig(model="bench-features", log_predictions=False))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    rng = random.Random(1)
    with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}") as client:

        def call() -> None:
            r = client.post("/predict", json={"instances": [{"driver_id": rng.randrange(N_ENTITIES)}]})
            assert r.status_code == 200, r.text

        result = _latencies(call, 2000)
    server.should_exit = True
    thread.join(timeout=20)
    ws.close()
    return result


FEAST_REPO = """
project: bench
registry: {work}/feast/registry.db
provider: local
online_store:
  type: sqlite
  path: {work}/feast/online.db
offline_store:
  type: file
entity_key_serialization_version: 3
"""


def _feast_store(work: Path) -> Any:
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource
    from feast.types import Float32

    repo = work / "feast"
    repo.mkdir(exist_ok=True)
    (repo / "feature_store.yaml").write_text(FEAST_REPO.format(work=work))
    store = FeatureStore(repo_path=str(repo))
    driver = Entity(name="driver", join_keys=["driver_id"])
    source = FileSource(
        path=str(work / "features.parquet"),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    view = FeatureView(
        name="driver_stats", entities=[driver], ttl=timedelta(days=1), source=source, online=True,
        schema=[Field(name=f, dtype=Float32) for f in FEATURES],
    )  # fmt: skip
    store.apply([driver, view])
    return store


def child_feast_join(work: Path, size: int) -> dict[str, Any]:
    import pandas as pd

    store = _feast_store(work)
    entities = pd.read_parquet(work / f"entities-{size}.parquet")
    started = time.perf_counter()
    frame = store.get_historical_features(entity_df=entities, features=REFS).to_df()
    return {"seconds": time.perf_counter() - started, "rows": len(frame), "peak": _peak()}


def child_feast_online(work: Path) -> dict[str, Any]:
    import random

    store = _feast_store(work)
    day_end = START + timedelta(days=DAYS - 1)
    t = time.perf_counter()
    store.materialize(start_date=day_end - timedelta(days=1), end_date=day_end)
    one_day = time.perf_counter() - t
    rng = random.Random(0)
    one = _latencies(
        lambda: store.get_online_features(
            features=REFS, entity_rows=[{"driver_id": rng.randrange(N_ENTITIES)}]
        ).to_dict(),
        1000,
    )
    batch = _latencies(
        lambda: store.get_online_features(
            features=REFS, entity_rows=[{"driver_id": rng.randrange(N_ENTITIES)} for _ in range(100)]
        ).to_dict(),
        100,
    )
    return {"one_day_s": one_day, "one": one, "batch100": batch}


CHILDREN = {
    "mloop-join": child_mloop_join,
    "duckdb-join": child_duckdb_join,
    "feast-join": child_feast_join,
    "mloop-online": child_mloop_online,
    "mloop-serve": child_mloop_serve,
    "feast-online": child_feast_online,
}


# parent -------------------------------------------------------------------------------------------


def run_child(
    name: str, work: Path, *args: str, python: str = sys.executable, timeout: float = 1800
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [python, __file__, "--child", name, "--work", str(work), *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )  # fmt: skip
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail)}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--feast-sizes", default="100000", help="Entity-row counts Feast joins.")
    parser.add_argument("--no-feast", action="store_true")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="mloop/DuckDB joins run this many times, alternating; median kept.",
    )
    parser.add_argument("--joins-only", action="store_true", help="Skip the online, serving measurements.")
    parser.add_argument("--redis", default=os.environ.get("MLOOP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / ".features-data")
    parser.add_argument("--child")
    parser.add_argument("args", nargs="*")
    opts = parser.parse_args()
    if opts.child:
        fn: Any = CHILDREN[opts.child]
        extra = [int(a) if a.isdigit() else a for a in opts.args]
        print(json.dumps(fn(opts.work, *extra)))
        return
    opts.work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in opts.sizes.split(",")]
    feast = not opts.no_feast and FEAST_PY.exists()
    t = time.perf_counter()
    generate(opts.work, opts.rows, sizes)
    print(f"data ready in {time.perf_counter() - t:.1f} s: {opts.rows:,} feature rows, entity rows {sizes}")
    results: dict[str, Any] = {}
    for size in sizes:
        runs: dict[str, list[dict[str, Any]]] = {"mloop": [], "duckdb": []}
        for _ in range(opts.repeat):  # alternate, so a busy spell on the machine hits both
            for tool in runs:
                runs[tool].append(run_child(f"{tool}-join", opts.work, str(size)))
        for tool, rs in runs.items():
            ok = sorted((r for r in rs if "seconds" in r), key=lambda r: r["seconds"])
            results[f"{tool}-{size}"] = (
                {**ok[len(ok) // 2], "all_seconds": [r["seconds"] for r in ok]} if ok else rs[0]
            )
        if feast and str(size) in opts.feast_sizes.split(","):
            results[f"feast-{size}"] = run_child("feast-join", opts.work, str(size), python=str(FEAST_PY))
        print(json.dumps({k: v for k, v in results.items() if k.endswith(str(size))}))
    if opts.joins_only:
        print(json.dumps(results, indent=1))
        report(results, sizes)
        return
    results["online-sqlite"] = run_child("mloop-online", opts.work, "")
    results["online-redis"] = run_child("mloop-online", opts.work, opts.redis) if opts.redis else {}
    results["serve"] = run_child("mloop-serve", opts.work, str(sizes[0]))
    if feast:
        results["feast-online"] = run_child("feast-online", opts.work, python=str(FEAST_PY))
    print(json.dumps(results, indent=1))
    report(results, sizes)


def report(results: dict[str, Any], sizes: list[int]) -> None:
    from rich.console import Console
    from rich.table import Table

    def get(key: str, *path: str) -> Any:
        value: Any = results.get(key, {})
        for p in path:
            value = value.get(p) if isinstance(value, dict) else None
        return value

    def ratio(a: Any, b: Any) -> str:
        return f"{b / a:.1f}x" if isinstance(a, int | float) and isinstance(b, int | float) and a else "-"

    table = Table(
        title="feature store: mloop vs Feast 0.67 and bare DuckDB "
        "(vs Feast: how many times faster/smaller; vs DuckDB: mloop's time ÷ DuckDB's)"
    )
    for col in ("measure", "mloop", "DuckDB", "Feast", "vs DuckDB", "vs Feast", "goal"):
        table.add_column(col, justify="right" if col not in ("measure", "goal") else "left")
    for size in sizes:
        m, d, f = (results.get(f"{k}-{size}", {}) for k in ("mloop", "duckdb", "feast"))
        table.add_row(
            f"PIT join {size:,} rows (s)", _f(m.get("seconds")), _f(d.get("seconds")),
            _f(f.get("seconds")) if f else f.get("error", "-") if f else "-",
            ratio(d.get("seconds"), m.get("seconds")), ratio(m.get("seconds"), f.get("seconds")),
            "≥30x Feast, ≤1.5x DuckDB",
        )  # fmt: skip
        table.add_row(
            "  peak memory (GiB)", _gib(m.get("peak")), _gib(d.get("peak")), _gib(f.get("peak")),
            "", ratio(m.get("peak"), f.get("peak")), "≤ 1/10 of Feast",
        )  # fmt: skip
        same = m.get("digest") == d.get("digest") and m.get("digest") is not None
        table.add_row(
            "  rows returned / equal", _n(m.get("rows")), _n(d.get("rows")), _n(f.get("rows")),
            "equal" if same else "DIFFERENT", "", "every entity row",
        )  # fmt: skip
    for store in ("sqlite", "redis"):
        o = results.get(f"online-{store}", {})
        if not o or "error" in o:
            table.add_row(f"online ({store})", o.get("error", "-") if o else "-", "", "", "", "", "")
            continue
        fo = results.get("feast-online", {}) if store == "sqlite" else {}
        feast_one = (
            f"{_f(get('feast-online', 'one', 'p50_ms'), 3)}/{_f(get('feast-online', 'one', 'p99_ms'), 3)}"
        )
        table.add_row(
            f"online 1 entity p50/p99 ({store}, ms)",
            f"{_f(o['one']['p50_ms'], 3)}/{_f(o['one']['p99_ms'], 3)}", "", feast_one if fo else "-",
            "", ratio(o["one"]["p99_ms"], get("feast-online", "one", "p99_ms")) if fo else "",
            "p99 ≤ 0.2 ms" if store == "sqlite" else "p99 ≤ 1 ms",
        )  # fmt: skip
        table.add_row(
            f"online batch of 100 p50 ({store}, ms)", _f(o["batch100"]["p50_ms"]), "",
            _f(get("feast-online", "batch100", "p50_ms")) if fo else "-",
            "", ratio(o["batch100"]["p50_ms"], get("feast-online", "batch100", "p50_ms")) if fo else "",
            "≥10x Feast",
        )  # fmt: skip
        table.add_row(
            f"materialize one day ({store}, s)", _f(o["one_day_s"]), "",
            _f(get("feast-online", "one_day_s")) if fo else "-", "",
            ratio(o["one_day_s"], get("feast-online", "one_day_s")) if fo else "", "≥10x Feast",
        )  # fmt: skip
        table.add_row(f"materialize full history ({store}, s)", _f(o["full_s"]), "", "", "", "", "≤ 60 s")
    s = results.get("serve", {})
    table.add_row(
        "mloop serve from entity keys p50/p99 (ms)",
        f"{_f(s.get('p50_ms'))}/{_f(s.get('p99_ms'))}" if "p50_ms" in s else s.get("error", "-"),
        "", "", "", "", "p99 ≤ 3 ms",
    )  # fmt: skip
    Console(width=160).print(table)


def _f(v: Any, digits: int = 2) -> str:
    return f"{v:.{digits}f}" if isinstance(v, int | float) else "-"


def _n(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else "-"


def _gib(v: Any) -> str:
    return f"{v / 2**30:.2f}" if isinstance(v, int | float) else "-"


if __name__ == "__main__":
    main()
