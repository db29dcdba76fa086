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


README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_python_block() -> str:
    import re

    match = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert match is not None
    return match.group(1)


def test_the_readme_block_is_the_example_file() -> None:
    assert _readme_python_block() == EXAMPLE.read_text(encoding="utf-8")


def test_the_readme_block_pasted_into_a_file_runs_as_written(tmp_path: Path, data_csv: Path) -> None:
    """Pasted as pipelines.py: `python pipelines.py` records one run, and `mloop run` (which imports the
    file) records exactly one more, whose steps are cached."""
    import json
    import subprocess
    import sys

    from commands import mloop_command

    (tmp_path / "pipelines.py").write_text(_readme_python_block(), encoding="utf-8")
    env = {k: v for k, v in __import__("os").environ.items() if k != "MLOOP_WORKSPACE"}
    subprocess.run([sys.executable, "pipelines.py"], cwd=tmp_path, env=env, check=True, timeout=120)
    done = subprocess.run(
        [
            *mloop_command(),
            "run",
            "pipelines.py:training",
            "--param",
            "data=data.csv",
            "--param",
            "C=0.5",
            "--json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert {s["status"] for s in json.loads(done.stdout)["steps"]} == {"cached"}
    with mloop.Workspace.open(tmp_path / ".mloop", create=False) as ws:
        assert len(ws.runs()) == 2
