"""The rules every command follows: read commands never create a workspace and say where they looked;
ids print whole and unique prefixes are accepted; lineage takes every kind of reference; help renders."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import run as run_cli
from commands import mloop_command
from sklearn.linear_model import LogisticRegression

import mloop

ROOT = Path(__file__).resolve().parents[2]

SAMPLES = Path(__file__).resolve().parents[1] / "sample_pipelines.py"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLOOP_WORKSPACE", raising=False)
    shutil.copy(SAMPLES, tmp_path / "pipes.py")
    (tmp_path / "numbers.txt").write_text("1 2 3")
    return tmp_path


def test_read_commands_never_create_a_workspace(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["runs", "list"],
        ["runs", "list", "--workspace", "demo-wss"],
        ["models", "list"],
        ["lineage", "x"],
        ["scheduler", "status"],
    ):
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and err.startswith("error: no workspace at "), (argv, err)
        assert out == ""
    assert not (project / ".mloop").exists() and not (project / "demo-wss").exists()


def test_run_ids_print_whole_and_unique_prefixes_resolve(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for factor in ("1", "2"):
        assert (
            run_cli(capsys, "run", "pipes.py:numbers", "-p", "path=numbers.txt", "-p", f"factor={factor}")[0]
            == 0
        )
    ids = [r["id"] for r in json.loads(run_cli(capsys, "runs", "list", "--json")[1])]
    # piped (not a terminal): whole ids, whole lines, whatever the width
    piped = subprocess.run([*mloop_command(), "runs", "list"], capture_output=True, text=True, check=True)
    assert all(i in piped.stdout for i in ids), piped.stdout
    assert "…" not in piped.stdout
    newest = ids[0]
    # the shortest prefix that tells the two apart
    n = next(k for k in range(4, 27) if newest[:k] != ids[1][:k])
    code, out, err = run_cli(capsys, "runs", "show", newest[:n], "--json")
    assert code == 0 and json.loads(out)["run"]["id"] == newest, err
    common = newest[: n - 1] if n > 4 else None
    if common and len(common) >= 4:
        code, _, err = run_cli(capsys, "runs", "show", common)
        assert code == 2 and "ambiguous" in err
    code, _, err = run_cli(capsys, "runs", "show", "ZZZZZZZZ")
    assert code == 2 and "no run 'ZZZZZZZZ' in workspace " in err and str(project / ".mloop") in err


def test_lineage_accepts_digests_and_model_references(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(capsys, "run", "pipes.py:numbers", "-p", "path=numbers.txt")[0] == 0
    assert run_cli(capsys, "run", "pipes.py:numbers", "-p", "path=numbers.txt")[0] == 0  # a cached rerun
    run_id = json.loads(run_cli(capsys, "runs", "list", "--json")[1])[-1]["id"]
    graph = json.loads(run_cli(capsys, "lineage", run_id, "--json")[1])
    file_artifact = next(a for a in graph["artifacts"] if a["type"] == "file")
    for ref in (file_artifact["digest"], "sha256:" + file_artifact["digest"], file_artifact["id"]):
        code, out, err = run_cli(capsys, "lineage", ref, "--downstream", "--json")
        assert code == 0, err
        assert json.loads(out)["root"] == file_artifact["id"]
        code, out, err = run_cli(capsys, "lineage", ref, "--downstream")
        first = out.splitlines()[0]
        assert code == 0 and "file" in first and file_artifact["id"] in first, out
        # the cached rerun is a reference to the execution it reused, not a repeated subtree
        assert out.count("total ") <= 2, out

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=100)})
    y = (df["a"] > 0).astype(int)
    with mloop.Workspace.open(project / ".mloop") as ws:
        version = ws.register_model(
            "m", LogisticRegression().fit(df, y), signature={"output": {"label": "y"}}
        )
        ws.promote("m", version.version)
    for ref in ("m@production", "m:1"):
        code, out, err = run_cli(capsys, "lineage", ref, "--json")
        assert code == 0 and json.loads(out)["root"] == version.artifact_id, err
    code, _, err = run_cli(capsys, "lineage", "m@nope")
    assert code == 2 and err.startswith("error: ") and "nope" in err


def test_artifacts_by_digest_or_a_unique_prefix(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "run", "pipes.py:numbers", "-p", "path=numbers.txt")[0] == 0
    run_id = json.loads(run_cli(capsys, "runs", "list", "--json")[1])[0]["id"]
    arts = json.loads(run_cli(capsys, "lineage", run_id, "--json")[1])["artifacts"]
    art = arts[0]
    for ref in ("sha256:" + art["digest"], art["digest"][:12], art["id"]):
        code, out, err = run_cli(capsys, "artifacts", "show", ref, "--json")
        assert code == 0 and json.loads(out)["artifact"]["id"] == art["id"], (ref, err)
    ids = sorted(a["id"] for a in arts)
    common = next((i[:8] for i, j in itertools.pairwise(ids) if i[:8] == j[:8]), None)
    if common is not None:  # artifacts made in the same few seconds share their ids' time prefix
        code, _, err = run_cli(capsys, "artifacts", "show", common)
        assert code == 2 and "ambiguous" in err
    code, _, err = run_cli(capsys, "artifacts", "show", "ZZZZZZZZ")
    assert code == 2 and "no artifact 'ZZZZZZZZ' in workspace " in err
    code, _, err = run_cli(capsys, "artifacts", "show", art["id"][:5])  # said "no artifact '01M98'"
    assert code == 2 and "is too short: give at least 6 characters" in err
    code, out, err = run_cli(capsys, "lineage", art["digest"][:12], "--json")  # lineage takes prefixes too
    assert code == 0 and json.loads(out)["root"] == art["id"], err


def test_version_help_and_messages(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.startswith("mloop ")
    help_text = subprocess.run(
        [*mloop_command(), "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "[[rollout]]" in help_text and "<bool>" not in help_text
    code, _, err = run_cli(capsys, "run", "pipes.py:numbers", "-p", "path=numbers.txt", "-p", "factor=1e999")
    assert code == 2 and "not a finite number" in err
    code, _, err = run_cli(capsys, "runs", "list", "--status", "bogus", "-w", "nowhere")
    assert code == 2 and "Value error" not in err and "'bogus' is not one of" in err
    pd.DataFrame({"x": range(50)}).to_csv("a.csv", index=False)
    code, _, err = run_cli(capsys, "data", "drift", "a.csv", "a.csv", "--method", "nocol=psi")
    assert code == 2 and "'nocol'" in err and "no such column" in err


def test_counts_are_plural_words_not_parentheses(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ "1 run", "2 runs": counts read as words (the CLI printed "1 run(s)", "1 rollout polic(ies)")."""
    for factor, title in (("1", "1 run"), ("2", "2 runs")):
        assert (
            run_cli(capsys, "run", "pipes.py:numbers", "-p", "path=numbers.txt", "-p", f"factor={factor}")[0]
            == 0
        )
        code, out, _ = run_cli(capsys, "runs", "list")
        assert code == 0 and out.split("\n")[0].strip() == title, out[:200]
    sources = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "mloop" / "cli").glob("*.py"))
    assert re.search(r"\w\((s|es|ies)\)", sources) is None  # cli/common.plural says it once


def test_a_title_printed_to_a_pipe_stays_one_line(tmp_path: Path) -> None:
    """A narrow table under a long title (a path, a data source) printed to a pipe: the title is one
    whole line, never wrapped to the table's width mid-path."""
    folder = tmp_path / ("a-folder-with-a-rather-long-name-" * 4)
    folder.mkdir()
    pd.DataFrame({"x": [1.0, 2.0]}).to_csv(folder / "train.csv", index=False)
    pd.DataFrame({"y": [1.0]}).to_csv(folder / "batch.csv", index=False)
    schema = tmp_path / "schema.json"
    exe = mloop_command()
    subprocess.run(
        [*exe, "data", "schema", "infer", str(folder / "train.csv"), "-o", str(schema)], check=True
    )
    done = subprocess.run(
        [*exe, "data", "validate", str(folder / "batch.csv"), "--schema", str(schema)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stderr
    assert f"2 anomalies in {folder / 'batch.csv'}" in done.stdout.splitlines(), done.stdout


def test_an_error_quoting_a_huge_value_stays_one_short_line(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A megabyte value (a pasted file as a cron expression, a model name) is quoted shortened: its
    start, its end and how much was left out, then the rule it broke."""
    huge = "x" * 1_000_000
    (project / "mloop.toml").write_text(
        f'[[triggers]]\nname = "t"\nkind = "schedule"\ncron = "{huge}"\npipeline = "pipes.py:numbers"\n'
    )
    code, _, err = run_cli(capsys, "scheduler", "run", "--once")
    assert code == 2 and err.count("\n") == 1 and len(err) < 1_000, err[:2000]
    assert "…[999,842 characters]…" in err and err.rstrip().endswith("(minute hour day month weekday)")
    (project / "mloop.toml").unlink()
    mloop.Workspace.open(project / ".mloop").close()
    spaced = "y " * 200_000  # no long token, a long message: its start and its end
    for argv in (["models", "show", huge], ["lineage", spaced]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and len(err) < 11_000, err[
            :300
        ]


def test_text_from_users_is_printed_as_it_is(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Column names, paths and errors that look like console markup print literally (``temp [c]`` lost
    its ``[c]``; a column named ``[/]`` crashed the command with rich's MarkupError)."""
    names = ["temp [c]", "[/]", "[red]x[/red]", "price [USD]"]
    folder = project / "data [red]"
    folder.mkdir()
    frame = pd.DataFrame({n: np.arange(20.0) + i for i, n in enumerate(names)})
    frame.to_csv(folder / "a.csv", index=False)
    frame.assign(**{"[/]": frame["[/]"] + 100}).to_csv(folder / "b.csv", index=False)
    code, out, err = run_cli(capsys, "data", "stats", str(folder / "a.csv"))
    assert code == 0, err
    assert str(folder / "a.csv") in out and all(n in out for n in names), out
    code, out, err = run_cli(capsys, "data", "drift", str(folder / "a.csv"), str(folder / "b.csv"))
    assert code == 0 and all(n in out for n in names), (out, err)
    (project / "bad.txt").write_text("1 2 [/]")
    code, out, err = run_cli(capsys, "run", "pipes.py:numbers", "-p", "path=bad.txt")
    assert code == 1, err
    run_id = json.loads(run_cli(capsys, "runs", "list", "--json")[1])[0]["id"]
    code, out, err = run_cli(capsys, "runs", "show", run_id)
    assert code == 0 and "'[/]'" in out, (out, err)


SLOW = """
import time
from pathlib import Path
import mloop

@mloop.step
def slow(marker: str) -> int:
    Path(marker).write_text("started")
    time.sleep(60)
    return 1

@mloop.pipeline
def p(marker: str) -> None:
    slow(marker)
"""


def test_ctrl_c_fails_the_run_and_its_running_step(tmp_path: Path) -> None:
    """SIGINT mid-step: the run was marked failed, but its step stayed 'running' forever; and the
    process waited for the step to end (a minute here) before exiting, saying nothing."""
    import signal
    import time

    (tmp_path / "slow.py").write_text(SLOW)
    marker = tmp_path / "started"
    ws = tmp_path / ".mloop"
    proc = subprocess.Popen(
        [*mloop_command(), "run", "slow.py:p", "-p", f"marker={marker}", "--workspace", str(ws)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)  # the step sleeps 60 s: exiting sooner means it did not wait
    assert proc.returncode == 130 and err.strip() == "error: interrupted", err
    with mloop.Workspace.open(ws) as opened:
        [run] = opened.runs()
        steps = opened.metadata.list_steps(run.id)
    assert run.status.value == "failed" and "KeyboardInterrupt" in (run.error or "")
    assert [s.status.value for s in steps] == ["failed"] and steps[0].error_type == "KeyboardInterrupt"


def test_a_step_past_its_timeout_fails_the_command_without_waiting_for_it(tmp_path: Path) -> None:
    """The command exits once the step's timeout has passed: the interpreter would otherwise wait
    at exit for the worker thread still running the step (60 s here)."""
    import time

    (tmp_path / "slow.py").write_text(SLOW.replace("@mloop.step\n", "@mloop.step(timeout=1)\n"))
    started = time.monotonic()
    proc = subprocess.run(
        [*mloop_command(), "run", "slow.py:p", "-p", f"marker={tmp_path / 'started'}",
         "--workspace", str(tmp_path / ".mloop")],
        cwd=tmp_path, capture_output=True, text=True, timeout=50,
    )  # fmt: skip
    assert time.monotonic() - started < 50
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert "step 'slow'" in lines[0] and "StepTimeoutError" in lines[0] and "timeout of 1 s" in lines[0]


def test_an_argument_that_is_no_utf8_text_is_one_error_line(tmp_path: Path) -> None:
    """``runs show $'\\xff\\xfe'`` said "unexpected UnicodeEncodeError (a bug in mloop)"."""
    import os

    mloop.Workspace.open(tmp_path / "ws").close()
    for argv in (["runs", "show"], ["models", "show"]):
        done = subprocess.run(
            [*mloop_command(), *argv, os.fsencode("\udcff\udcfe"), "--workspace", str(tmp_path / "ws")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("error: ") and "bug in mloop" not in done.stderr
