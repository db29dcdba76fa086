"""A small training pipeline the mloop.testing tests run (sample file → split → fit → predict)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

import mloop


@mloop.step
def load(data: Path) -> pd.DataFrame:
    return pd.read_csv(data)


@mloop.step(outputs=["train", "test"])
def split(df: pd.DataFrame, fraction: float = 0.8) -> tuple:
    cut = int(len(df) * fraction)
    return df.iloc[:cut], df.iloc[cut:]


@mloop.step
def fit(train: pd.DataFrame, max_iter: int = 200) -> LogisticRegression:
    return LogisticRegression(max_iter=max_iter).fit(train[["x1", "x2"]], train["y"])


@mloop.step
def predict(model: LogisticRegression, test: pd.DataFrame, poison: bool = False) -> np.ndarray:
    proba = model.predict_proba(test[["x1", "x2"]])[:, 1]
    if poison:
        proba[3] = np.nan
    mloop.log_metric("mean_proba", float(np.nanmean(proba)))
    return proba


@mloop.pipeline
def training(data: Path, max_iter: int = 200, poison: bool = False):
    train, test = split(load(data))
    predict(fit(train, max_iter=max_iter), test, poison=poison)


SCHEMA = {
    "mloop_schema_version": 1,
    "columns": {
        "x1": {"type": "float", "min": -3.0, "max": 3.0},
        "x2": {"type": "int", "min": 0, "max": 9},
        "y": {"type": "int", "min": 0, "max": 1},
        "city": {
            "type": "string",
            "vocabulary": ["oslo", "rome"],
            "nullable": True,
            "max_null_fraction": 0.2,
        },
    },
}
