from pathlib import Path

import pandas as pd
from sklearn.linear_model import LogisticRegression

import mloop


@mloop.step
def load(path: Path) -> pd.DataFrame:  # Path inputs: the file's bytes key the cache
    return pd.read_csv(path)


@mloop.step(outputs=["train", "test"])  # several outputs are named
def split(df: pd.DataFrame, fraction: float = 0.8) -> tuple:
    cut = int(len(df) * fraction)
    return df.iloc[:cut], df.iloc[cut:]


@mloop.step
def train(train: pd.DataFrame, C: float = 1.0) -> LogisticRegression:
    model = LogisticRegression(C=C).fit(train.drop(columns="y"), train["y"])
    mloop.log_metric("train_accuracy", model.score(train.drop(columns="y"), train["y"]))
    return model


@mloop.pipeline
def training(data: Path, C: float = 1.0):  # parameters: JSON values, typed by annotation
    train_df, _test_df = split(load(data))
    train(train_df, C=C)


if __name__ == "__main__":  # `python pipelines.py`; `mloop run` imports the file without running this
    with mloop.Workspace.open() as ws:  # ./.mloop (SQLite + artifact folder), or configured stores
        result = ws.run(training, data="data.csv", C=0.5)
        model = result.load("train")
