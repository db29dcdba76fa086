"""Pipeline CI/CD timings against the issue's budgets (issue 17).

`mloop ci run` on examples/project (its tests + a smoke run on 1,000 rows + the model checks) and
`mloop pipelines deploy` of its pipeline, each as a fresh `mloop` process (what a CI job runs), and
the time the load-test gate adds to a rollout step: `advance()` with `LoadTestGate` and the default
`[rollout.load_test]` (200 logged requests replayed at concurrency 4, up to 3 rounds) for a candidate
of the loop's default estimator, its service started in its own process as the scheduler does.
The named anchors (ZenML snapshots, Kubeflow pipeline versions) need a remote stack or a cluster and
do not run pipeline CI at all, and none has a load-test gate in its rollout, so the comparison is
with the budgets: ratio = budget / measured.

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


def gate_runs(root: Path, repeats: int) -> list[tuple[float, float, dict]]:
    """Wall and CPU seconds (this process and its children) of ``repeats`` gated rollout steps, and
    each gate's numbers. Production serves 250 one-row requests first: the log the gate replays."""
    import numpy as np
    import pandas as pd

    import mloop
    from mloop.cicd.gate import LoadTestGate
    from mloop.entities import utcnow
    from mloop.orchestration.config import RolloutPolicy
    from mloop.orchestration.retrain import default_model
    from mloop.orchestration.rollout import advance
    from mloop.serving.app import ModelService, ServeConfig

    def rows(seed: int, n: int = 2000) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        df = pd.DataFrame(
            {"a": rng.normal(size=n), "b": rng.normal(size=n), "city": rng.choice(["paris", "rome"], n)}
        )
        return df.assign(y=((df["a"] + df["b"] + (df["city"] == "rome")) > 0.5).astype(int))

    def fitted(seed: int) -> object:
        df = rows(seed)
        return default_model(df[["a", "b", "city"]], "classification", seed=seed).fit(
            df[["a", "b", "city"]], df["y"]
        )

    first = rows(0)
    schema = mloop.infer_schema(mloop.compute_statistics(first[["a", "b", "city"]])).to_dict()
    signature = {"inputs": schema, "output": {"task": "classification", "label": "y", "classes": [0, 1]}}
    results = []
    with mloop.Workspace.open(root / ".mloop") as ws:
        ws.register_model("churn", fitted(0), signature=signature)
        ws.promote("churn", 1, "production", reason="bench")
        service = ModelService(
            ws, ServeConfig(model="churn", poll_interval_s=3600, flush_interval_s=3600), ws.prediction_log_dir
        )
        service.refresh()
        for i, row in enumerate(rows(1, 250).drop(columns=["y"]).to_dict("records")):
            service.predict([row], key=f"k{i}")
        service.stop()
        policy = RolloutPolicy(model="churn")  # the default [rollout.load_test]
        for n in range(repeats):
            version = ws.register_model("churn", fitted(10 + n), signature=signature).version
            before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            decision = advance(ws, policy, utcnow(), gate=LoadTestGate())
            seconds = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = sum(
                a.ru_utime - b.ru_utime + a.ru_stime - b.ru_stime for a, b in zip(after, before, strict=True)
            )
            if decision.action not in ("canary", "refuse") or decision.version != version:
                raise SystemExit(f"the gate did not judge v{version}: {decision.reason}")
            results.append(
                (seconds, cpu, {**(decision.evidence or {})["load_test"], "verdict": decision.action})
            )
            if decision.action == "canary":
                ws.remove_alias("churn", "canary", reason="bench: next candidate")
    return results


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
        gates = gate_runs(Path(tmp) / "gate", repeats)
    table = Table(title=f"pipeline CI/CD on examples/project, median of {repeats}", title_justify="left")
    for col in ("command", "budget", "mloop wall", "mloop CPU", "ratio (budget / wall)"):
        table.add_column(col, justify="left" if col == "command" else "right")
    for name, budget, values in (
        ("mloop ci run (tests + smoke on 1,000 rows + checks)", 30.0, ci),
        ("mloop pipelines deploy", 2.0, deploy),
        ("load-test gate added to a rollout step", 15.0, [(w, c) for w, c, _ in gates]),
    ):
        median = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        verdict = f"{budget / median:.1f}× under" if median <= budget else f"{median / budget:.1f}× OVER"
        table.add_row(name, f"{budget:.1f} s", f"{median:.2f} s", f"{cpu:.2f} s", verdict)
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    Console(width=120).print(table)
    for _, _, numbers in gates:
        print(
            f"gate: {numbers['requests']} requests at concurrency {numbers['concurrency']}, "
            f"p50 {numbers['p50_ms']:.1f} ms, p99 {numbers['p99_ms']:.1f} ms "
            f"(budget {numbers['p99_budget_ms']:g}), errors {numbers['error_rate']:.1%}, "
            f"{numbers['rounds']} round(s), {numbers['seconds']:.2f} s in load_test → {numbers['verdict']}"
        )


if __name__ == "__main__":
    main()
