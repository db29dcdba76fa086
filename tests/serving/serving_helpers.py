"""Models and data the serving tests use."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

import mloop


def training_data(seed: int = 0, n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.normal(size=n), "city": rng.choice(["paris", "rome"], n)}
    )
    df["y"] = ((df["a"] + df["b"] + (df["city"] == "rome")) > 0.5).astype(int)
    return df


def fit(df: pd.DataFrame, columns: list[str]) -> LogisticRegression:
    return LogisticRegression().fit(df[columns], df["y"])


def register(
    ws: mloop.Workspace,
    model: LogisticRegression,
    df: pd.DataFrame,
    columns: list[str],
    *,
    compile: bool = False,
) -> mloop.ModelVersion:
    stats = mloop.compute_statistics(df[columns])
    schema = mloop.infer_schema(stats).to_dict()
    signature = {"inputs": schema, "output": {"task": "classification", "label": "y", "classes": [0, 1]}}
    return ws.register_model("clf", model, signature=signature, compile=compile)
