"""Streams and served models the loop's tests share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import mloop
from mloop.serving.app import ModelService, ServeConfig
from mloop.steps.retrain import retrain

MODEL = "m"


def stream(n: int, *, drift_at: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Two numeric features, one categorical, binary label. From ``drift_at`` on the concept flips
    (the label follows x1 - x2 instead of x1 + x2) and x3 shifts."""
    rng = np.random.default_rng(seed)
    x1, x2, x3 = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    city = rng.choice(["paris", "rome", "oslo"], n)
    score = x1 + x2 + 0.3 * (city == "rome")
    if drift_at is not None:
        score[drift_at:] = x1[drift_at:] - x2[drift_at:]
        x3[drift_at:] += 3.0
    noise = rng.random(n) < 0.05
    y = ((score > 0) ^ noise).astype(int)
    return pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "city": city, "y": y})


def train_first(ws: mloop.Workspace, rows: pd.DataFrame, folder: Path) -> mloop.ModelVersion:
    """v1 of MODEL, through the built-in retraining pipeline (validated, registered, production)."""
    path = folder / "initial.parquet"
    rows.to_parquet(path)
    # latency is measured, not enforced: these tests judge the loop, and must pass on a busy machine
    result = ws.run(retrain, model_name=MODEL, target="y", data=str(path), enforce_latency=False)
    registered = result.load("register_model")
    assert registered["alias"] == "production", registered["reasons"]
    return ws.model_version(f"{MODEL}@production")


def service(ws: mloop.Workspace, log_dir: Path, canary_fraction: float = 0.0) -> ModelService:
    """The prediction service, driven in-process (flushes when the test says so)."""
    svc = ModelService(
        ws,
        ServeConfig(
            model=MODEL, canary_fraction=canary_fraction, poll_interval_s=3600, flush_interval_s=3600
        ),
        log_dir,
    )
    svc.refresh()
    return svc


def serve_rows(svc: ModelService, rows: pd.DataFrame, *, batch: int = 100, label: bool = True) -> list[dict]:
    """Predict ``rows`` in batches (one request key per batch) and send their labels back."""
    answers = []
    features = rows.drop(columns=["y"])
    for lo in range(0, len(rows), batch):
        part = features.iloc[lo : lo + batch]
        answer = svc.predict(part.to_dict("records"), key=f"k{lo}")
        answers.append(answer)
        if label:
            labels = rows["y"].iloc[lo : lo + batch].tolist()
            svc.feedback(
                [
                    {"prediction_id": p, "label": y}
                    for p, y in zip(answer["prediction_ids"], labels, strict=True)
                ]
            )
    assert svc.log is not None
    svc.log.flush()
    return answers


def unlicensed_estimator(features: pd.DataFrame, task: str) -> object:
    """An ``--estimator`` factory whose model cannot be built here."""
    raise RuntimeError("no licence on this machine")
