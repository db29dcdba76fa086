"""The README's example pipeline runs as documented, from Python and from the shell."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mloop
from mloop.cli import main
from mloop.core.loader import load_pipeline

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart" / "pipelines.py"


@pytest.fixture
def data_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    df = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": (x[:, 0] + x[:, 1] > 0).astype(int)})
    df.to_csv(tmp_path / "data.csv", index=False)
    return tmp_path / "data.csv"


def test_readme_example_from_python(tmp_path: Path, data_csv: Path) -> None:
    training = load_pipeline(f"{EXAMPLE}:training")
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        result = ws.run(training, data=str(data_csv), C=0.5)
        model = result.load("train")
        assert model.score(pd.read_csv(data_csv).drop(columns="y"), pd.read_csv(data_csv)["y"]) > 0.9
        [metric] = ws.metadata.get_metrics(result.run.id, "train_accuracy")
        assert metric.value > 0.9


def test_readme_example_from_the_shell(
    tmp_path: Path, data_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", f"{EXAMPLE}:training", "--param", f"data={data_csv}", "--param", "C=0.5"]
    assert main([*argv, "--workspace", str(tmp_path / "ws")]) == 0
    assert "succeeded" in capsys.readouterr().out
