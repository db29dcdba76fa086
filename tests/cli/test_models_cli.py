"""`mloop models …` over a workspace with real registered models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import run
from sklearn.linear_model import LogisticRegression

import mloop


@pytest.fixture
def ws_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLOOP_USER", "tester")
    monkeypatch.delenv("MLOOP_WORKSPACE", raising=False)
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {"a": rng.normal(size=400), "b": rng.normal(size=400), "g": rng.choice(["x", "y"], 400)}
    )
    df["y"] = (df["a"] + df["b"] > 0).astype(int)
    df.to_csv("eval.csv", index=False)
    df.assign(y=df["y"].map({0: "no", 1: "yes"})).to_csv("text-labels.csv", index=False)
    df.assign(a=df["a"].where(df.index % 3 != 0)).to_csv("nan.csv", index=False)
    with mloop.Workspace.open(tmp_path / ".mloop") as ws:
        sig = {"output": {"label": "y"}}
        ws.register_model(
            "m", LogisticRegression().fit(df[["a"]], df["y"]), signature=sig, metrics={"accuracy": 0.7}
        )
        ws.register_model("m", LogisticRegression().fit(df[["a", "b"]], df["y"]), signature=sig)
        ws.register_model(
            "m",
            LogisticRegression().fit(df[["b"]], df["y"]),
            signature=sig,
            status=mloop.ModelStatus.REJECTED,
        )
    return tmp_path


def test_promote_history_rollback(ws_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "models", "promote", "m", "1", "--reason", "first")[0] == 0
    code, out, _ = run(capsys, "models", "promote", "m", "2", "--reason", "better", "--json")
    event = json.loads(out)
    assert (event["from_version"], event["to_version"], event["who"]) == (1, 2, "tester")
    code, out, _ = run(capsys, "models", "list", "--json")
    assert json.loads(out)[0]["aliases"] == {"production": 2}
    code, out, _ = run(capsys, "models", "rollback", "m", "--reason", "v2 misbehaves")
    assert code == 0 and "v2 → v1" in out
    code, out, _ = run(capsys, "models", "history", "m", "--json")
    assert [(e["action"], e["to_version"], e["reason"]) for e in json.loads(out)] == [
        ("promote", 1, "first"),
        ("promote", 2, "better"),
        ("rollback", 1, "v2 misbehaves"),
    ]
    code, out, _ = run(capsys, "models", "show", "m@production", "--json")
    assert json.loads(out)["version"]["version"] == 1
    for argv in (
        ["models", "list"],
        ["models", "versions", "m"],
        ["models", "show", "m:2"],
        ["models", "history", "m"],
    ):
        code, out, err = run(capsys, *argv)
        assert code == 0 and out, err


def test_rolling_back_a_removal_says_so(ws_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A finished canary's alias was removed; rolling it back restores it, and the line says that
    (it printed "vNone → v2")."""
    with mloop.Workspace.open(ws_dir / ".mloop") as ws:
        ws.promote("m", 2, "canary", reason="try")
        ws.remove_alias("m", "canary", reason="v2 is production now")
    code, out, err = run(capsys, "models", "rollback", "m", "--alias", "canary", "--reason", "undo")
    assert code == 0 and "m@canary: no version → v2 (rolled back: its removal undone)" in out, (out, err)


def test_rejected_needs_force(ws_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "models", "promote", "m", "3")
    assert code == 2 and "rejected by model validation" in err and err.count("\n") == 1
    code, _, err = run(capsys, "models", "promote", "m", "3", "--force")
    assert code == 2 and "needs a reason" in err
    assert run(capsys, "models", "promote", "m", "3", "--force", "--reason", "manual audit")[0] == 0


def test_evaluate_and_compare(ws_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "models", "evaluate", "m:2", "eval.csv", "--slice", "g", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (
        result["version"] == 2
        and result["metrics"]["accuracy"] > 0.9
        and set(result["slices"]) == {"g=x", "g=y"}
    )
    code, out, _ = run(capsys, "models", "compare", "m", "1", "2", "--data", "eval.csv", "--json")
    both = json.loads(out)
    assert both["v2"]["metrics"]["accuracy"] > both["v1"]["metrics"]["accuracy"]
    code, out, _ = run(capsys, "models", "compare", "m", "1", "2", "--data", "eval.csv", "--slice", "g")
    assert code == 0 and "g=x" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["models", "show", "nope"], "model 'nope' not found"),
        (["models", "show", "m:9"], "has no version 9"),
        (["models", "show", "m@staging"], "no alias 'staging'"),
        (["models", "promote", "m", "9"], "has no version 9"),
        (["models", "promote", "m", "9" * 20], "less than or equal to 999999999"),  # not a SQL overflow
        (["models", "promote", "m", "0"], "greater than or equal to 1"),
        (["models", "rollback", "m"], "no alias 'production'"),
        (["models", "evaluate", "m:1", "eval.csv", "--label", "target"], "no label column 'target'"),
        (["models", "evaluate", "m:1", "eval.csv", "--slice", "town"], "slice column 'town'"),
        (["models", "evaluate", "m:1", "missing.csv"], "missing.csv: no such file"),
        # labels written otherwise than the model learnt them: accuracy 0 and log-loss 34.5, exit 0
        (["models", "evaluate", "m:1", "text-labels.csv"], "no label in column 'y' is one of the model's"),
        # scikit-learn's message about NaN has a line break: still one line
        (["models", "evaluate", "m:1", "nan.csv"], "the model could not predict on the evaluation data"),
        (["models", "show", "m:zero"], "expected NAME:VERSION"),
        (["models", "show", "m:99999999999999999999"], "expected NAME:VERSION"),
    ],
)
def test_bad_input(ws_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_show_says_which_form_serves(ws_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("skl2onnx", reason="compiling needs mloop[onnx]")
    df = pd.read_csv(ws_dir / "eval.csv")
    with mloop.Workspace.open(ws_dir / ".mloop") as ws:
        for columns in (["a", "b"], ["a", "g"]):
            frame = (
                df[columns].assign(g=lambda d: (d["g"] == "x").astype(int)) if "g" in columns else df[columns]
            )
            sig = {"inputs": mloop.infer_schema(mloop.compute_statistics(df[columns])).to_dict()}
            ws.register_model("c", LogisticRegression().fit(frame, df["y"]), signature=sig, compile=True)
    code, out, _ = run(capsys, "models", "show", "c:1")
    assert code == 0 and "serving form: ONNX (artifact" in out
    code, out, _ = run(capsys, "models", "show", "c:2")
    assert code == 0 and "serving form: the model (column 'g' is not numeric" in out


def _register(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    return run(capsys, "models", "register", *argv)


def test_models_register_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLOOP_WORKSPACE", raising=False)
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    df["y"] = (df["a"] > 0).astype(int)
    df.to_csv("train.csv", index=False)
    with mloop.Workspace.open(tmp_path / ".mloop") as ws:
        art = ws.store_artifact(LogisticRegression().fit(df[["a", "b"]], df["y"]), what="model")
        table = ws.store_artifact(df, what="data")
    code, out, err = _register(
        capsys, "clf", art.id, "--data", "train.csv", "--label", "y", "--alias", "staging",
        "--metric", "accuracy=0.9", "--no-compile", "--json",
    )  # fmt: skip
    assert code == 0, err
    shown = json.loads(out)
    version = shown["version"]
    assert version["version"] == 1 and shown["alias"] == "staging" and version["metrics"]["accuracy"] == 0.9
    assert set(version["signature"]["inputs"]["columns"]) == {"a", "b"}
    assert version["signature"]["output"] == {"task": "classification", "label": "y", "classes": [0, 1]}
    code, out, err = _register(
        capsys, "clf", art.id, "--data", "train.csv", "--label", "y", "--no-compile", "--metric", "accuracy=1"
    )
    assert code == 0, err  # the same bytes: the same version (issue 12, obs. 8), and said so
    assert "clf v1 already holds these model bytes: nothing registered" in out and "not stored" in out
    for argv, message in (
        (["clf", "NOPENOPE", "--data", "train.csv", "--label", "y"], "no artifact id"),
        (["clf", table.id, "--data", "train.csv", "--label", "y"], "not a model"),
        (["clf", art.id, "--data", "train.csv", "--label", "nope"], "not a column"),
        (["clf", art.id, "--data", "train.csv", "--label", "y", "--metric", "acc"], "expected KEY=NUMBER"),
        (
            ["clf", art.id, "--data", "train.csv", "--label", "y", "--metric", "acc=nan"],
            "not a finite number",
        ),
        (
            ["clf", art.id, "--data", "train.csv", "--label", "y", "--metric", "a=1", "--metric", "a=2"],
            "twice",
        ),
        (["../x", art.id, "--data", "train.csv", "--label", "y"], "name"),
    ):
        code, _, err = _register(capsys, *argv)
        assert code == 2 and err.startswith("error: ") and message in err, (argv, err)


def test_models_skew_names_both_sides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`models skew` says "skew", names the version's training data and the inputs it was served (not
    "drift: prediction log of … vs <DataFrame>" or, for a retrained version, log vs log)."""
    from datetime import UTC, datetime

    from mloop.monitoring.log import PredictionLog
    from mloop.monitoring.log_schema import conform, prediction_schema

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLOOP_WORKSPACE", raising=False)
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    df["y"] = (df["a"] > 0).astype(int)
    df.to_csv("train.csv", index=False)
    with mloop.Workspace.open(tmp_path / ".mloop") as ws:
        art = ws.store_artifact(LogisticRegression().fit(df[["a", "b"]], df["y"]), what="model")
        log_dir = ws.prediction_log_dir
    code, _, err = _register(capsys, "clf", art.id, "--data", "train.csv", "--label", "y", "--no-compile")
    assert code == 0, err
    schema = prediction_schema({"a": {"type": "float"}, "b": {"type": "float"}}, [0, 1])
    n = 200
    log = PredictionLog(log_dir, "clf")
    log.append(
        conform(
            {
                "prediction_id": [f"p{i}" for i in range(n)],
                "ts": [datetime.now(UTC)] * n,
                "model": ["clf"] * n,
                "version": [1] * n,
                "role": ["production"] * n,
                "latency_ms": [0.5] * n,
                "request_key": [None] * n,
                "prediction": [1] * n,
                "probability": [0.9] * n,
                "score": [0.9] * n,
                "input.a": (rng.normal(size=n) + 3).tolist(),
                "input.b": rng.normal(size=n).tolist(),
            },
            schema,
        ),
        schema,
    )
    log.close()
    code, out, err = run(capsys, "models", "skew", "clf:1")
    assert code == 0, err
    title = " ".join(out.split("\n")[0].split())
    assert title.startswith("skew: inputs served to clf v1 (200 rows) vs training data of clf v1, from ")
    assert "train.csv" in title and "training–serving skew" in out and "dataset drift" not in out


def test_corrupted_production_model_is_reported_as_corrupted(
    ws_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with mloop.Workspace.open(ws_dir / ".mloop") as ws:
        ws.promote("m", 2)
        art = ws.metadata.get_artifact(ws.model_version("m:2").artifact_id)
        Path(art.uri).write_bytes(b"\0" * art.size)
    code, out, err = run(capsys, "models", "evaluate", "m@production", "eval.csv")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and "model m v2 (m@production)" in err, err
    assert "corrupted" in err and "no alias" not in err
