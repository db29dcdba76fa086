"""The mloop command: output, --json, and one-line errors with the right exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cli_helpers import run as run_cli
from commands import mloop_command

SAMPLES = Path(__file__).resolve().parents[1] / "sample_pipelines.py"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory with a pipeline file and a data file; the workspace lives inside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLOOP_WORKSPACE", raising=False)
    shutil.copy(SAMPLES, tmp_path / "pipes.py")
    (tmp_path / "numbers.txt").write_text("1 2 3")
    return tmp_path


def test_run_then_inspect_with_json(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        capsys, "run", "pipes.py:numbers", "--param", "path=numbers.txt", "-p", "factor=2", "--json"
    )
    assert code == 0, err
    payload = json.loads(out)
    run_id = payload["run"]["id"]
    assert payload["run"]["status"] == "succeeded" and payload["run"]["params"]["factor"] == 2.0
    assert {s["name"]: s["status"] for s in payload["steps"]}["total"] == "succeeded"
    assert (env / ".mloop" / "mloop.db").exists()  # created in the current directory

    code, out, _ = run_cli(
        capsys, "run", "pipes.py:numbers", "--param", "path=numbers.txt", "-p", "factor=2", "--json"
    )
    assert {s["status"] for s in json.loads(out)["steps"]} == {"cached"}
    code, out, _ = run_cli(
        capsys,
        "run",
        "pipes.py:numbers",
        "--param",
        "path=numbers.txt",
        "-p",
        "factor=2",
        "--no-cache",
        "--json",
    )
    assert {s["status"] for s in json.loads(out)["steps"]} == {"succeeded"}

    code, out, _ = run_cli(capsys, "runs", "list", "--json")
    assert code == 0 and len(json.loads(out)) == 3
    code, out, _ = run_cli(capsys, "runs", "show", run_id, "--json")
    shown = json.loads(out)
    assert shown["run"]["id"] == run_id and [m["key"] for m in shown["metrics"]] == ["rows"]
    total = next(s for s in shown["steps"] if s["name"] == "total")
    code, out, _ = run_cli(capsys, "lineage", total["id"], "--json")
    graph = json.loads(out)
    assert {s["name"] for s in graph["steps"]} == {"total", "scale", "read_numbers"}
    file_artifact = next(a for a in graph["artifacts"] if a["type"] == "file")
    code, out, _ = run_cli(capsys, "artifacts", "show", file_artifact["id"], "--json")
    assert json.loads(out)["artifact"]["digest"] == file_artifact["digest"]
    code, out, _ = run_cli(capsys, "lineage", file_artifact["id"], "--downstream", "--json")
    assert {s["name"] for s in json.loads(out)["steps"]} >= {"read_numbers", "as_array", "total"}


def test_human_output_renders(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "run", "pipes.py:numbers", "-p", "path=numbers.txt")
    assert code == 0 and "succeeded" in out and "read_numbers" in out
    run_id = json.loads(run_cli(capsys, "runs", "list", "--json")[1])[0]["id"]
    for argv in (["runs", "list"], ["runs", "show", run_id], ["lineage", run_id]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 0 and run_id[:8] in out, err


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (
            ["run", "pipes.py:numbers", "-p", "path=numbers.txt", "-p", "factor=abc"],
            2,
            "parameter 'factor': expected float",
        ),
        (
            ["run", "pipes.py:numbers", "-p", "path=numbers.txt", "-p", "nope=1"],
            2,
            "unknown parameter 'nope'",
        ),
        (["run", "pipes.py:numbers", "-p", "path"], 2, "--param 'path': expected key=value"),
        (["run", "pipes.py:numbers"], 2, "missing parameter 'path'"),
        (["run", "pipes.py:numbers", "-p", "path=absent.txt"], 2, "absent.txt does not exist"),
        (["run", "pipes.py:nothing"], 2, "has no pipeline 'nothing'"),
        (["run", "pipes.py:BARRIER"], 2, "is a Barrier, not a @pipeline"),
        (["run", "missing.py:x"], 2, "pipeline file missing.py does not exist"),
        (["run", "no-colon"], 2, "is not of the form"),
        (["runs", "show", "01NOPE"], 2, "no workspace at "),  # read commands never create one
        (["artifacts", "show", "01NOPE"], 2, "no workspace at "),
        (["lineage", "01NOPE"], 2, "no workspace at "),
        (["runs", "list", "--status", "weird"], 2, "'weird' is not one of"),
        (["runs", "list", "--bogus"], 2, "No such option: --bogus"),
    ],
)
def test_bad_input_is_one_error_line(
    env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    got, out, err = run_cli(capsys, *argv)
    assert got == code
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err and out == ""


def test_failing_step_exits_1_and_is_recorded(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (env / "bad.py").write_text(
        "import mloop\n\n@mloop.step\ndef boom(n: int) -> int:\n    raise RuntimeError('disk full')\n\n"
        "@mloop.pipeline\ndef pipe(n: int = 1):\n    boom(n)\n"
    )
    code, _, err = run_cli(capsys, "run", "bad.py:pipe")
    assert code == 1 and err.count("\n") == 1 and "step 'boom' failed: RuntimeError: disk full" in err
    runs = json.loads(run_cli(capsys, "runs", "list", "--json")[1])
    assert runs[0]["status"] == "failed"
    code, _, err = run_cli(capsys, "run", "bad.py:pipe", "--resume", runs[0]["id"][:12])  # a unique prefix
    assert code == 1 and "disk full" in err
    code, _, err = run_cli(capsys, "run", "bad.py:pipe", "-p", "n=1", "--param", "n=2")
    assert code == 2 and "--param 'n' is given twice" in err  # the last one silently won


def test_import_error_in_pipeline_file(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (env / "broken.py").write_text("import no_such_module_xyz\n")
    code, _, err = run_cli(capsys, "run", "broken.py:pipe")
    assert code == 2 and "importing broken.py failed: ModuleNotFoundError" in err
    (env / "exits.py").write_text("import sys\nsys.exit(0)\n")  # exit 0 with nothing done, silently
    code, _, err = run_cli(capsys, "run", "exits.py:pipe")
    assert code == 2 and "importing exits.py failed: SystemExit: 0" in err
    code, _, err = run_cli(capsys, "features", "apply", "exits.py")
    assert code == 2 and "exits.py: SystemExit: 0" in err


def test_unreachable_metadata_store(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOOP_METADATA_URL", "postgresql+psycopg://x@127.0.0.1:1/none")
    code, _, err = run_cli(capsys, "runs", "list")
    assert code == 2 and err.startswith("error: cannot connect to metadata store") and err.count("\n") == 1


def test_corrupted_sqlite_file_is_one_error_line_naming_it(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (env / ".mloop").mkdir()
    db = env / ".mloop" / "mloop.db"
    db.write_bytes(b"this is not a database " * 200)
    code, out, err = run_cli(capsys, "runs", "list")
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("error: metadata database ") and str(db) in err and "corrupted" in err, err
    assert "bug in mloop" not in err


def test_workspace_is_found_upward_and_by_option(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_cli(capsys, "run", "pipes.py:numbers", "-p", "path=numbers.txt")
    (env / "sub" / "deeper").mkdir(parents=True)
    monkeypatch.chdir(env / "sub" / "deeper")
    assert len(json.loads(run_cli(capsys, "runs", "list", "--json")[1])) == 1
    other = env / "elsewhere"
    code, _, err = run_cli(capsys, "runs", "list", "--workspace", str(other), "--json")
    assert code == 2 and f"no workspace at {other}" in err and not other.exists()
    other.mkdir()
    monkeypatch.setenv("MLOOP_WORKSPACE", str(env / ".mloop"))
    monkeypatch.chdir(other)
    assert len(json.loads(run_cli(capsys, "runs", "list", "--json")[1])) == 1


@pytest.mark.slow
def test_demo_through_the_installed_command(tmp_path: Path) -> None:
    """The README's quick start: `mloop demo` leaves a workspace the other commands can read."""
    exe = mloop_command()
    ws = tmp_path / "demo-ws"
    env = {**os.environ, "COLUMNS": "120"}
    done = subprocess.run(
        [*exe, "demo", "--workspace", str(ws), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    # stderr is the loop's story and nothing else: no pyarrow warning about the log's attrs, no
    # nanobind "leaked instance" page at exit (statistics kept alive by a daemon thread)
    assert "Warning" not in done.stderr and "leaked" not in done.stderr, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert 0.7 < report["metrics"]["accuracy"] < 0.9
    statuses = {s["name"]: s["status"] for s in report["rerun_steps"]}
    # production moved to v1 during the first run, so only the steps that depend on it run again
    assert {n for n, s in statuses.items() if s != "cached"} == {"validate_model", "register_model"}
    assert report["registered"] == {
        "name": "rainfall",
        "version": 1,
        "status": "registered",
        "alias": "production",
        "reasons": [],
    }
    assert "temperature" not in report["drifted_features"]  # wind and pressure do vary between periods
    [anomaly] = report["refused"]["anomalies"]
    assert (anomaly["column"], anomaly["kind"]) == ("visibility", "missing_column")
    kinds = {a["type"] for a in report["lineage"]["artifacts"]}
    assert kinds == {"file", "parquet", "joblib"}
    loop = report["loop"]
    # the loop: after the (injected) drift it is clearly better than v1 left alone
    assert loop["accuracy"]["loop"]["after_drift"] > loop["accuracy"]["static"]["after_drift"] + 0.05
    assert abs(loop["accuracy"]["loop"]["before_drift"] - loop["accuracy"]["static"]["before_drift"]) < 0.03
    assert loop["promotions"] >= 1 and loop["final"]["version"] > 1
    kinds_done = [e["kind"] for e in loop["events"]]
    assert "canary" in kinds_done and "promote" in kinds_done
    assert loop["final"]["run"]["trigger"] in ("degradation", "drift")
    assert loop["final"]["trigger_event"]["evidence"]["model"] == "rainfall"
    assert Path(loop["html"]).read_text().count("<svg") >= 1
    refused_run = report["refused"]["run_id"]
    human = subprocess.run(  # again, in the same workspace: the demo starts over from v1
        [*exe, "demo", "--workspace", str(ws), "--in-process"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert human.returncode == 0, human.stderr
    assert "lineage of the trained model" in human.stdout and "rainfall.csv.gz" in human.stdout
    assert "stopped by the schema gate" in human.stdout and "prequential accuracy" in human.stdout
    assert "<DataFrame>" not in human.stdout  # the gate's report names the refused file
    assert "Traceback" not in human.stderr
    assert "note: " in human.stderr and "already holds runs" in human.stderr  # says what it reuses
    listed = subprocess.run(
        [*exe, "runs", "list", "--workspace", str(ws), "--json", "--pipeline", "retrain"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    runs = json.loads(listed.stdout)
    assert [r["status"] for r in runs].count("stopped") == 2  # the refused batch, once per demo
    shown = subprocess.run(
        [*exe, "runs", "show", refused_run, "--workspace", str(ws)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert shown.returncode == 0 and "missing_column" in shown.stdout and "Anomalies" in shown.stdout
    monitored = subprocess.run(  # the command the demo suggests, on the windows the demo printed
        [*exe, "monitor", "rainfall", "--window", "1816", "--workspace", str(ws), "--no-store"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert monitored.returncode == 0, monitored.stderr
    rows = [line.split("│") for line in monitored.stdout.splitlines() if line.startswith("│")]
    rows = [cells for cells in rows if cells[1].strip().isdigit()]  # not a wrapped cell's next line
    share = [cells[6].strip() for cells in rows]  # the drift-share column holds numbers, never "failed"
    assert share and all(float(value) >= 0 for value in share), share
    skew = subprocess.run(
        [*exe, "models", "skew", "rainfall@production", "--workspace", str(ws)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert skew.returncode == 0 and skew.stdout.startswith("skew: inputs served to rainfall v"), skew.stdout


def test_a_misspelt_table_in_mloop_toml_is_one_error_line(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (env / "mloop.toml").write_text(
        '[[trigger]]\nname = "t"\nkind = "manual"\npipeline = "pipes.py:numbers"\n'
    )
    for argv in (("scheduler", "status"), ("runs", "list")):
        code, out, err = run_cli(capsys, *argv)
        assert code == 2, (argv, out, err)
        assert err.count("\n") == 1 and "unknown table 'trigger'" in err and "'triggers'" in err, err
