"""`mloop data …` end to end: output, --json, --html, --save, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import run


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLOOP_WORKSPACE", raising=False)
    rng = np.random.default_rng(0)
    ref = pd.DataFrame(
        {"x": rng.normal(size=3000), "y": rng.normal(size=3000), "k": rng.choice(list("abc"), 3000)}
    )
    ref.to_csv("ref.csv", index=False)
    cur = ref.assign(x=ref["x"] + 1.0, k=rng.choice(list("abc"), 3000, p=[0.8, 0.1, 0.1]))
    cur.to_csv("cur.csv", index=False)
    ref.drop(columns=["y"]).assign(z=1).to_csv("broken.csv", index=False)
    return tmp_path


def test_stats_json_and_html(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "data", "stats", "ref.csv", "--json", "--html", "stats.html")
    assert code == 0, err
    stats = json.loads(out)
    assert stats["rows"] == 3000 and [c["name"] for c in stats["columns"]] == ["x", "y", "k"]
    html = (data / "stats.html").read_text()
    assert "<svg" in html and "3,000 rows" in html
    code, out, _ = run(capsys, "data", "stats", "ref.csv")
    assert code == 0 and "3,000 rows" in out


def test_schema_infer_then_validate(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "data", "schema", "infer", "ref.csv", "-o", "schema.json")
    assert code == 0 and json.loads((data / "schema.json").read_text())["mloop_schema_version"] == 1
    code, out, _ = run(capsys, "data", "validate", "ref.csv", "--schema", "schema.json")
    assert code == 0 and "conforms" in out
    code, out, _ = run(capsys, "data", "validate", "broken.csv", "--schema", "schema.json", "--json")
    assert code == 1
    found = {(a["column"], a["kind"]) for a in json.loads(out)["anomalies"]}
    assert found == {("y", "missing_column"), ("z", "unexpected_column")}
    code, out, _ = run(capsys, "data", "validate", "broken.csv", "--schema", "schema.json")
    assert code == 1 and "missing_column" in out and "unexpected_column" in out


def test_an_inferred_schema_saved_in_the_workspace_validates_by_id(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "data", "schema", "infer", "ref.csv", "-o", "s.json", "--save",
                         "--workspace", "ws", "--json")  # fmt: skip
    assert code == 0, err
    artifact_id = json.loads(out)["artifact_id"]
    assert artifact_id and (data / "ws" / "mloop.db").exists()
    code, out, err = run(
        capsys, "data", "validate", "broken.csv", "--schema", artifact_id, "-w", "ws", "--json"
    )
    assert code == 1 and {a["kind"] for a in json.loads(out)["anomalies"]} >= {"missing_column"}, err


def test_drift_between_files_json_and_html(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "data", "drift", "ref.csv", "ref.csv", "--json")
    assert code == 0 and json.loads(out)["drifted_features"] == []
    code, out, _ = run(capsys, "data", "drift", "ref.csv", "cur.csv", "--json", "--html", "drift.html")
    report = json.loads(out)
    assert code == 1 and report["dataset_drift"] and sorted(report["drifted_features"]) == ["k", "x"]
    html = (data / "drift.html").read_text()
    assert "Dataset drift detected" in html and html.index(">x<") < html.index(">y<")  # drifted first
    code, out, _ = run(
        capsys, "data", "drift", "ref.csv", "cur.csv", "--method", "x=psi", "--threshold", "x=5", "--json"
    )
    x = next(f for f in json.loads(out)["features"] if f["column"] == "x")
    assert x["method"] == "psi" and not x["drifted"]


def test_drift_against_saved_statistics(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "data", "stats", "ref.csv", "--save", "--json")
    assert code == 0, err
    artifact = json.loads(out)["artifact_id"]
    code, out, _ = run(capsys, "data", "drift", artifact, "cur.csv", "--json")
    assert code == 1 and sorted(json.loads(out)["drifted_features"]) == ["k", "x"]
    run(capsys, "data", "stats", "ref.csv", "--json")
    (data / "ref-stats.json").write_text(run(capsys, "data", "stats", "ref.csv", "--json")[1])
    code, out, _ = run(capsys, "data", "drift", "ref-stats.json", "cur.csv", "--json")
    assert code == 1 and sorted(json.loads(out)["drifted_features"]) == ["k", "x"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "stats", "missing.csv"], "missing.csv: no such file"),
        (["data", "stats", "empty.csv"], "empty.csv: the file is empty"),
        (["data", "stats", "latin.csv"], "not valid utf-8 text"),
        # codecs that cannot decode a file: pyarrow failed with an AttributeError, or aborted at exit
        (["data", "stats", "ref.csv", "--encoding", "punycode"], "'punycode' is not a text encoding"),
        (["data", "stats", "ref.csv", "--encoding", "undefined"], "'undefined' is not a text encoding"),
        (["data", "stats", "ref.csv", "--encoding", "utf-16"], "not valid utf-16 text"),
        (["data", "stats", "ref.csv", "--encoding", "cp500"], "read as cp500 (blank lines only, or text in"),
        (["data", "stats", "blank.csv"], "no CSV header line in its 3 bytes"),
        (["data", "stats", "dup.csv"], "dup.csv: column 'a' appears twice"),  # was: merged, 2x rows
        # an output over the input data (it was replaced by the schema or the report, exit 0)
        (
            ["data", "schema", "infer", "ref.csv", "-o", "ref.csv"],
            "--output ref.csv: the file exists and is not",
        ),
        (["data", "stats", "ref.csv", "--html", "ref.csv"], "--html ref.csv: the file exists and is not a"),
        (["data", "drift", "ref.csv", "cur.csv", "--html", "cur.csv"], "--html cur.csv: the file exists and"),
        (["data", "validate", "ref.csv", "--schema", "nope.json"], "schema file nope.json does not exist"),
        (["data", "validate", "ref.csv", "--schema", "bad-schema.json"], "schema version 9 is not supported"),
        (["data", "drift", "header.csv", "ref.csv"], "the reference data (header.csv) has zero rows"),
        (
            ["data", "drift", "ref.csv", "nothing-here"],
            "current 'nothing-here' is neither a file nor an artifact id",
        ),
        (["data", "drift", "ref.csv", "cur.csv", "--method", "x=magic"], "must be one of"),
        (["data", "drift", "ref.csv", "cur.csv", "--threshold", "x"], "expected COLUMN=THRESHOLD"),
        (["data", "drift", "ref.csv", "cur.csv", "--threshold", "x=high"], "'high' is not a float"),
        (["data", "drift", "ref.csv", "cur.csv", "--method", "k=ks"], "holds categories; ks needs numbers"),
        # thresholds a test cannot use: 1 divided by zero, 0 took log(0), nan flipped the verdict
        (
            ["data", "drift", "ref.csv", "cur.csv", "--method", "x=ks", "--threshold", "x=1"],
            "its threshold must be between 0 and 1",
        ),
        (["data", "drift", "ref.csv", "cur.csv", "--threshold", "x=nan"], "must be a positive number"),
        (
            ["data", "drift", "ref.csv", "cur.csv", "--method", "x=psi", "--threshold", "x=-1"],
            "a positive number",
        ),
    ],
)
def test_bad_input_is_one_error_line(
    data: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (data / "empty.csv").write_text("")
    (data / "header.csv").write_text("x,y,k\n")
    (data / "blank.csv").write_text("\n\n\n")
    (data / "dup.csv").write_text("a,a,y\n1,2,0\n3,4,1\n")
    (data / "latin.csv").write_bytes("k\n\xe9t\xe9\n".encode("latin-1"))
    (data / "bad-schema.json").write_text('{"mloop_schema_version": 9, "columns": {}}')
    before = (data / "ref.csv").read_bytes(), (data / "cur.csv").read_bytes()
    code, out, err = run(capsys, *argv)
    assert ((data / "ref.csv").read_bytes(), (data / "cur.csv").read_bytes()) == before
    assert code == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def test_schema_infer_json_and_validate_against_a_schema_artifact(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import mloop
    from mloop.validation.schema import infer_schema
    from mloop.validation.stats import compute_statistics

    code, out, err = run(capsys, "data", "schema", "infer", "ref.csv", "-o", "s.json", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["output"] == "s.json" and set(doc["schema"]["columns"]) == {"x", "y", "k"}
    with mloop.Workspace.open(data / ".mloop") as ws:
        art = ws.store_artifact(infer_schema(compute_statistics(pd.read_csv("ref.csv"))), what="schema")
        stats_art = ws.store_artifact(compute_statistics(pd.read_csv("ref.csv")), what="stats")
    code, out, err = run(capsys, "data", "validate", "ref.csv", "--schema", art.id, "--json")
    assert code == 0 and json.loads(out)["ok"], err
    code, out, _ = run(capsys, "data", "validate", "broken.csv", "--schema", art.id, "--json")
    assert code == 1 and {a["kind"] for a in json.loads(out)["anomalies"]} >= {"missing_column"}
    code, _, err = run(capsys, "data", "validate", "ref.csv", "--schema", stats_art.id)
    assert code == 2 and "not a schema" in err
    code, _, err = run(capsys, "data", "validate", "ref.csv", "--schema", "NOPE", "-w", "nowhere")
    assert code == 2 and "neither a file nor an artifact id" in err and "no workspace at" in err
