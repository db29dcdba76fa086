"""The churn training pipeline: load → features → split → train → evaluate."""

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss

import mloop
from churn.features import FEATURES, add_features


@mloop.step
def load(data: Path) -> pd.DataFrame:
    return pd.read_csv(data)


@mloop.step
def features(df: pd.DataFrame) -> pd.DataFrame:
    return add_features(df)


@mloop.step(outputs=["train", "test"])
def split(df: pd.DataFrame, fraction: float = 0.8) -> tuple:
    cut = int(len(df) * fraction)
    return df.iloc[:cut], df.iloc[cut:]


@mloop.step
def train(train: pd.DataFrame, C: float = 1.0, max_iter: int = 500) -> LogisticRegression:
    model = LogisticRegression(C=C, max_iter=max_iter).fit(train[FEATURES], train["churned"])
    return model


@mloop.step
def evaluate(model: LogisticRegression, test: pd.DataFrame) -> dict:
    proba = model.predict_proba(test[FEATURES])[:, 1]
    metrics = {
        "accuracy": float(accuracy_score(test["churned"], proba > 0.5)),
        "log_loss": float(log_loss(test["churned"], np.clip(proba, 1e-6, 1 - 1e-6), labels=[0, 1])),
    }
    mloop.log_metrics(metrics)
    return metrics


@mloop.pipeline
def training(data: Path, C: float = 1.0, max_iter: int = 500):
    train_df, test_df = split(features(load(data)))
    evaluate(train(train_df, C=C, max_iter=max_iter), test_df)
