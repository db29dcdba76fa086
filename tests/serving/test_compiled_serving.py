"""Serving a version's compiled (ONNX) form: same answers, no scikit-learn in the serving process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from serving_helpers import fit, register, training_data
from test_serve_process import start

import mloop

pytest.importorskip("skl2onnx", reason="compiling needs mloop[onnx]")

COLS = ["a", "b"]


@pytest.fixture
def ws(tmp_path: Path):
    with mloop.Workspace.open(tmp_path / "ws") as workspace:
        df = training_data()
        version = register(workspace, fit(df, COLS), df, COLS, compile=True)
        assert version.signature["serving_form"]["format"] == "onnx"
        workspace.promote("clf", version.version)
        yield workspace


def rows(n: int, seed: int = 3) -> list[dict]:
    return training_data(seed, n)[COLS].to_dict("records")


@pytest.mark.parametrize("compiled", [True, False])
def test_both_forms_answer_what_the_model_predicts(ws, serve, compiled: bool) -> None:
    served = serve(ws, compiled=compiled)
    production = served.client.get("/v2/models/clf").json()["production"]
    assert production["runtime"] == ("onnx" if compiled else "python")
    sample = rows(200)
    model = ws.load_model("clf@production")
    frame = pd.DataFrame(sample)
    batch = served.client.post("/predict", json={"instances": sample}).json()
    assert batch["predictions"] == model.predict(frame).tolist()
    np.testing.assert_allclose(batch["probabilities"], model.predict_proba(frame), atol=1e-6)
    singles = [served.client.post("/predict", json={"instances": [row]}).json() for row in sample[:20]]
    assert [b["predictions"][0] for b in singles] == batch["predictions"][:20]
    assert [b["probabilities"][0] for b in singles] == batch["probabilities"][:20]


def test_a_corrupted_compiled_form_falls_back_to_the_model(ws, serve) -> None:
    form = ws.model_version("clf@production").signature["serving_form"]
    artifact = ws.metadata.get_artifact(form["artifact_id"])
    path = Path(artifact.uri.removeprefix("file://"))
    path.chmod(0o644)
    path.write_bytes(b"not what was registered")
    served = serve(ws)
    assert served.client.get("/v2/models/clf").json()["production"]["runtime"] == "python"
    sample = rows(30)
    body = served.client.post("/predict", json={"instances": sample}).json()
    assert body["predictions"] == ws.load_model("clf:1").predict(pd.DataFrame(sample)).tolist()


def test_a_fresh_service_answers_without_importing_scikit_learn(ws, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        from mloop.serving.app import ModelService, ServeConfig
        from mloop.workspace import Workspace

        workspace = Workspace.open({str(ws.root)!r})
        service = ModelService(workspace, ServeConfig(model="clf"), Path({str(tmp_path / "log")!r}))
        service.start()
        answer = service.predict([{{"a": 0.3, "b": -1.2}}])["predictions"]
        heavy = sorted(m for m in ("sklearn", "scipy", "pandas") if m in sys.modules)
        print(json.dumps({{"answer": answer, "heavy": heavy}}))
        service.stop()
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    expected = ws.load_model("clf:1").predict(pd.DataFrame([{"a": 0.3, "b": -1.2}])).tolist()
    assert result["answer"] == expected
    assert "sklearn" not in result["heavy"] and "scipy" not in result["heavy"]


def test_mloop_serve_uses_the_compiled_form_unless_told_not_to(ws) -> None:
    for flag, runtime in (((), "onnx"), (("--no-compiled",), "python")):
        proc, url = start(ws.root, *flag)
        try:
            assert httpx.get(f"{url}/v2/models/clf").json()["production"]["runtime"] == runtime
        finally:
            proc.terminate()
            proc.wait(timeout=30)
