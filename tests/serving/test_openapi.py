"""The OpenAPI document against the live service: schemathesis ``--checks all`` finds nothing.

Every check, including that schema-valid requests are accepted and schema-violating ones refused,
and that every response (errors included, in each protocol's shape) matches the document.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from serving_helpers import register, training_data

import mloop
from mloop.steps.retrain import default_model

COLS = ["a", "b", "day"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", ["7", "1"])  # 1: the seed an outside pass found ST201/ST202 with
def test_schemathesis_finds_nothing(tmp_path: Path, serve, seed: str) -> None:
    pytest.importorskip("schemathesis", reason="needs schemathesis (requirements-ci.txt)")
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    assert cli, "schemathesis is importable but its command is not on the path"
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        # a datetime feature too: its schema (ISO-8601 text) must be exactly what /predict and v2 take
        df = training_data().assign(day=pd.date_range("2024-01-01", periods=600, freq="h"))
        model = default_model(df[COLS], "classification").fit(df[COLS], df["y"])
        ws.promote("clf", register(ws, model, df, COLS).version)
        served = serve(ws)
        document = served.client.get("/openapi.json").json()
        assert "HTTPValidationError" not in str(document)
        assert document["paths"]["/metrics"]["get"]["responses"]["200"]["content"].keys() == {"text/plain"}
        done = subprocess.run(
            [
                cli,
                "run",
                f"{served.url}/openapi.json",
                "--checks",
                "all",
                "-n",
                "60",
                "--seed",
                seed,
                "--generation-database",
                "none",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
