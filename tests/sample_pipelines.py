"""Pipelines the tests run (importable by spawned worker processes too)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

import mloop

BARRIER = threading.Barrier(2, timeout=4)


@mloop.step
def read_numbers(path: Path) -> pd.DataFrame:
    return pd.DataFrame({"x": [float(v) for v in path.read_text().split()]})


@mloop.step
def scale(df: pd.DataFrame, factor: float = 1.0) -> pd.DataFrame:
    return df * factor


@mloop.step
def total(df: pd.DataFrame) -> float:
    mloop.log_metric("rows", len(df))
    return float(df["x"].sum())


@mloop.step
def as_array(df: pd.DataFrame) -> np.ndarray:
    return df["x"].to_numpy()


@mloop.pipeline
def numbers(path: Path, factor: float = 1.0):
    df = read_numbers(path)
    scaled = scale(df, factor=factor)
    total(scaled)
    as_array(df)


@mloop.step
def seed(n: int) -> int:
    return n


@mloop.step
def square(n: int) -> int:
    return n * n


@mloop.step
def add(a: int, b: int) -> int:
    return a + b


@mloop.pipeline
def arithmetic(n: int = 3, tag: str = "x"):
    a = seed(n)
    add(square(a), seed.named("seed_b")(n))


@mloop.step
def wait_for_sibling(n: int) -> int:
    BARRIER.wait()  # only passes if the other branch runs at the same time
    return n


@mloop.pipeline
def two_branches(n: int = 1):
    wait_for_sibling(n)
    wait_for_sibling(2)


def concurrent_worker(args: tuple[str, str, int, int]) -> list[str]:
    """Run ``runs`` pipelines and one tracking run in a fresh process; return the run ids."""
    root, metadata_url, worker, runs = args
    ids = []
    with mloop.Workspace.open(root, metadata_url=metadata_url or None) as ws:
        for i in range(runs):
            # half the values repeat across workers, so cache hits and new executions interleave
            ids.append(ws.run(arithmetic, n=(worker * runs + i) % 7, tag=f"w{worker}").run.id)
        with ws.start_run("tracking", {"worker": worker}) as tr:
            for step in range(20):
                tr.log_metric("loss", 1.0 / (step + 1), step=step)
        ids.append(tr.id)
    return ids


def registry_worker(args: tuple[str, str, int, int]) -> list[int]:
    """Register ``n`` versions of one shared model and move its aliases, from a fresh process."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    root, metadata_url, worker, n = args
    numbers = []
    with mloop.Workspace.open(root, metadata_url=metadata_url or None) as ws:
        for i in range(n):
            model = LogisticRegression(C=1.0 + worker * 100 + i).fit(
                np.array([[0.0], [1.0]]), np.array([0, 1])
            )
            version = ws.register_model("shared", model, tags={"worker": worker})
            numbers.append(version.version)
            ws.promote("shared", version.version, "production" if i % 2 else "canary", reason=f"w{worker}")
    return numbers


@mloop.step
def read_many(paths: list[Path]) -> pd.DataFrame:
    frames = [pd.DataFrame({"x": [float(v) for v in p.read_text().split()]}) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"x": []})


@mloop.pipeline
def many_numbers(paths: list[Path], factor: float = 1.0):
    df = read_many(paths)
    total(scale(df, factor=factor))


@mloop.step(timeout=1)
def sleeps(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@mloop.pipeline
def sleepy(seconds: float) -> None:
    sleeps(seconds)
