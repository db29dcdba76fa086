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

# commands that change state or run something (no --server: a team server's API only reads, except
# alias moves, rollout decisions and firing triggers, which have their own Client methods), and why
WRITES: dict[str, str] = {
    "backtest": "replays DATA into a workspace of its own",
    "build pipeline": "writes a build context folder",
    "build serve": "writes a build context folder",
    "ci init": "writes a CI workflow file",
    "ci run": "runs the project's tests and pipelines, records the verdict",
    "data schema infer": "writes a schema file (and with --save an artifact)",
    "demo": "runs the whole loop into a workspace",
    "features apply": "records definitions",
    "features materialize": "writes the online store",
    "models promote": "moves an alias (Client.promote over the server)",
    "models register": "registers a version",
    "models rollback": "moves an alias (Client.rollback over the server)",
    "monitor": "records a monitoring run (read it back with models monitoring --server)",
    "pipelines deploy": "freezes a pipeline version",
    "pipelines promote": "moves an alias",
    "pipelines rollback": "moves an alias",
    "run": "runs a pipeline",
    "scheduler fire": "runs a trigger's pipeline (Client.fire_trigger over the server)",
    "scheduler retry": "runs a failed event's pipeline again (in this process, as scheduler fire does)",
    "scheduler run": "a daemon",
    "serve": "a daemon",
    "server start": "a daemon",
    "server token create": "creates a token",
    "server token revoke": "revokes a token",
}
# read commands that only work on this machine's files: a hidden --server refused in one line
LOCAL_ONLY = {
    "data drift",
    "data stats",
    "data validate",
    "features historical",
    "features skew",
    "models compare",
    "models evaluate",
    "models skew",
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
    assert set(WRITES) <= set(COMMANDS) and set(LOCAL_ONLY) <= set(COMMANDS)
    assert not set(WRITES) & LOCAL_ONLY


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_read_command_takes_server(name: str) -> None:
    """A read command reads from a team server with --server/--token (MLOOP_TOKEN), or refuses
    --server in one line when it only works on this machine's files; a write takes neither."""
    options = {opt: p for p in _option_params(COMMANDS[name]) for opt in p.opts}
    if name in WRITES:
        assert "--server" not in options, f"{name} writes ({WRITES[name]}) but takes --server"
        return
    assert {"--server", "--token"} <= set(options), f"{name} reads but lacks --server/--token"
    hidden = name in LOCAL_ONLY
    assert options["--server"].hidden is hidden and options["--token"].hidden is hidden, name
    if not hidden:
        assert options["--token"].envvar == "MLOOP_TOKEN"


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
