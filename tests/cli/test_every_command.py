"""A walk over every command of the CLI, checking the rules each one follows: it takes --workspace, it
takes --json when it prints data, its help renders, and a bad option is one clear error line."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from cli_helpers import run as run_cli

from mloop.cli import app

# commands that do not work on a workspace, and why
NO_WORKSPACE: dict[str, str] = {
    "ci init": "writes a CI workflow file into a project folder; no workspace state is read or written",
}
# commands that print no data, and why (a daemon's output is its log, whose JSON form is --log-format json)
NO_JSON: dict[str, str] = {
    "build pipeline": "writes a build context folder; prints only the folder it wrote",
    "build serve": "writes a build context folder; prints only the folder it wrote",
    "ci init": "writes a workflow file; prints only the file it wrote",
    "scheduler run": "a daemon: --log-format json",
    "serve": "a daemon: --log-format json",
    "server start": "a daemon: --log-format json",
}


def _walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    if hasattr(command, "commands"):  # a group (typer vendors click: its own classes, not click's)
        for name, sub in sorted(command.commands.items()):
            yield from _walk(sub, (*path, name))
    else:
        yield " ".join(path), command


COMMANDS = dict(_walk(typer.main.get_command(app), ()))


def _option_params(command: Any) -> list[Any]:
    return [p for p in command.params if p.param_type_name == "option"]


def _options(command: Any) -> set[str]:
    return {opt for p in _option_params(command) for opt in p.opts}


def test_the_walk_finds_the_commands_and_the_exemptions_are_real() -> None:
    assert {"run", "runs list", "serve", "backtest", "scheduler run", "data schema infer"} <= set(COMMANDS)
    assert set(NO_WORKSPACE) <= set(COMMANDS) and set(NO_JSON) <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_takes_workspace(name: str) -> None:
    if name in NO_WORKSPACE:
        assert "--workspace" not in _options(COMMANDS[name]), f"{name} is exempt but takes --workspace"
        return
    assert "--workspace" in _options(COMMANDS[name])


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_that_prints_data_takes_json(name: str) -> None:
    if name in NO_JSON:
        assert "--json" not in _options(COMMANDS[name]), f"{name} is exempt but takes --json"
        return
    assert "--json" in _options(COMMANDS[name])


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_renders(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, *name.split(), "--help")
    assert code == 0 and err == ""
    assert "Usage: mloop " + name in out, out[:300]
    assert "<bool>" not in out and "[]" not in out  # no flag metavars, no markup eaten
    usage = out.split("\n\n")[0]
    assert re.search(r"[{\[][a-z_]+[}\]]", usage) is None, usage  # arguments in capitals, all alike
    described = [p for p in _option_params(COMMANDS[name]) if not p.hidden]
    for option in described:
        assert option.help, f"{name} {option.opts[0]} has no help text"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_an_unknown_option_is_one_error_line(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, *name.split(), "--no-such-option")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "--no-such-option" in err, err


@pytest.mark.slow
def test_backtest_leaves_its_workspace_where_workspace_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from loop_helpers import stream

    data = tmp_path / "history.csv"
    stream(1200, drift_at=700, seed=3).to_csv(data, index=False)
    where = tmp_path / "bt-ws"
    code, out, err = run_cli(capsys, "backtest", str(data), "--target", "y", "--windows", "2",
                             "--workspace", str(where), "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["workspace"] == str(where)
    code, out, err = run_cli(capsys, "runs", "list", "--workspace", str(where), "--json")
    assert code == 0 and json.loads(out), err  # the replay's runs, readable by the other commands
