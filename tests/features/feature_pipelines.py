"""A training pipeline that reads its data from the feature store (importable by the tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.linear_model import LogisticRegression

import mloop
from mloop import steps

FEATURES = ["driver_stats:conv_rate", "driver_stats:trips"]


@mloop.step
def fit(data: pd.DataFrame) -> Any:
    x = data[FEATURES].fillna(0.0).astype(float)
    return LogisticRegression().fit(x, data["label"])


@mloop.pipeline
def training(entities: Path) -> None:
    data = steps.historical_features(entities, service="driver_model")
    fit(data)
