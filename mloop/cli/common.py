"""What every mloop command shares: consoles, options, JSON output, status colours, the workspace."""

from __future__ import annotations

import errno
import json
import math
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import rich.table
import typer
from rich.console import Console
from rich.text import Text

from mloop.entities import jsonable
from mloop.errors import ParameterError
from mloop.workspace import Workspace

# Piped output keeps whole lines: rich wraps at 80 columns when it is not a terminal, which cut ids and
# paths mid-word. On a terminal the terminal's width applies.
out = Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 10_000)
err = Console(stderr=True, highlight=False, emoji=False, width=None if sys.stderr.isatty() else 10_000)


class Table(rich.table.Table):
    """rich's Table, except that text is shown as it is and a title printed to a pipe stays one line.

    A ``str`` title or cell is never read as console markup: column names, paths and error messages
    come from users, and ``temp [c]`` lost its ``[c]`` while ``[/]`` crashed the command. Style a cell
    by passing a :class:`rich.text.Text` (see :func:`styled`). rich wraps a title to the table's
    width, so a narrow table broke the path or the source named in its title mid-word."""

    def __init__(self, *headers: Any, title: str | Text | None = None, **options: Any) -> None:
        if isinstance(title, str):
            title = Text(title)
        if isinstance(title, Text) and not sys.stdout.isatty():
            title.overflow = "ignore"
            title.no_wrap = True
        super().__init__(*headers, title=title, **options)

    def add_row(self, *renderables: Any, **options: Any) -> None:
        super().add_row(*(Text(r) if isinstance(r, str) else r for r in renderables), **options)


def styled(text: str, style: str) -> Text:
    """``text`` in ``style``, taken literally (a table cell or a part of :meth:`Text.assemble`)."""
    return Text(text, style=style)


WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace", "-w", help="Workspace directory (default: $MLOOP_WORKSPACE or ./.mloop upward)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
EncodingOpt = Annotated[str, typer.Option("--encoding", help="Text encoding of CSV files.")]
HtmlOpt = Annotated[Path | None, typer.Option("--html", help="Also write an HTML report to this file.")]

STATUS_STYLE = {
    "succeeded": "green",
    "cached": "cyan",
    "running": "yellow",
    "failed": "red",
    "stopped": "magenta",
    "skipped": "dim",
}


def print_json(value: Any) -> None:
    """``value`` as strict JSON: a NaN or an infinity (a metric, a missing key) is null, since
    ``NaN`` is not JSON and strict parsers (jq, JavaScript) refuse the whole document."""
    data = jsonable(value)
    try:
        text = json.dumps(data, indent=2, default=str, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(data), indent=2, default=str, allow_nan=False)
    sys.stdout.write(text + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def parse_params(items: list[str]) -> dict[str, str]:
    """``--param key=value`` options as a dict; a key given twice is refused (the last one silently
    won, whatever the first said)."""
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"--param {item!r}: expected key=value", field="param")
        if key.strip() in params:
            raise ParameterError(f"--param {key.strip()!r} is given twice: give it once", field=key.strip())
        params[key.strip()] = value
    return params


def plural(n: int, one: str, many: str | None = None) -> str:
    """``1 rollout policy``, ``2 rollout policies``."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def paint(value: str) -> Text:
    """A status in its colour: a table cell, or (its ``.markup``) part of a printed line."""
    return styled(value, STATUS_STYLE.get(value, "white"))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


@contextmanager
def open_workspace(workspace: Path | None, *, create: bool = False) -> Iterator[Workspace]:
    """The workspace a command works on; only commands that write pass ``create=True`` (read commands
    never leave an empty workspace behind, and say where they looked)."""
    ws = Workspace.open(workspace, create=create)
    try:
        yield ws
    finally:
        ws.close()


# what the start of a report a command may overwrite looks like, by option
_REPORT_STARTS = {
    "--html": (b"<!doctype html", b"<html"),
    "--junit": (b"<?xml", b"<testsuite"),
    "--output": (b"{",),  # a JSON document (a schema)
}


def check_output_file(path: Path, option: str) -> None:
    """Refuse, before any work, a file a command would write where it cannot: in a missing folder, or
    at a path that is a folder; or over a file that is not such a report already (the data file
    through a hard link, the workspace's database, a configuration file: all were overwritten)."""
    if path.is_dir():
        raise ParameterError(f"{option} {path}: is a directory, not a file", field=option.lstrip("-"))
    if path.exists() and not (path.is_file() and os.access(path, os.W_OK)):
        what = "cannot be written" if path.is_file() else "is not a regular file"
        raise ParameterError(f"{option} {path}: {what}", field=option.lstrip("-"))
    starts = _REPORT_STARTS.get(option)
    if starts is not None and path.is_file() and path.stat().st_size:
        with path.open("rb") as f:
            head = f.read(64).lstrip().lower()
        if not head.startswith(starts):
            raise ParameterError(
                f"{option} {path}: the file exists and is not a report this command wrote: name another "
                "file (or remove it first)",
                field=option.lstrip("-"),
            )
    parent = path.expanduser().absolute().parent
    if not parent.is_dir():
        raise ParameterError(f"{option} {path}: folder {parent} does not exist", field=option.lstrip("-"))


@contextmanager
def writing(path: Path, option: str) -> Iterator[None]:
    """What the block writes to ``path`` (a file, or a folder it fills) failing at the OS (a full disk,
    a folder nothing may be created in such as /proc) is one error line naming ``option``."""
    try:
        yield
    except OSError as exc:
        raise ParameterError(
            f"{option} {path}: cannot be written ({exc.strerror or exc})", field=option.lstrip("-")
        ) from None


def write_output(path: Path, text: str, option: str) -> None:
    """Write a report checked by :func:`check_output_file`."""
    with writing(path, option):
        path.write_text(text, encoding="utf-8")


def check_output_dir(path: Path, option: str) -> None:
    """Refuse, before any work, a folder a command would write into that is a file (or under one)."""
    for folder in (path.expanduser().absolute(), *path.expanduser().absolute().parents):
        if folder.exists():
            if not folder.is_dir():
                raise ParameterError(
                    f"{option} {path}: {folder} exists and is not a folder", field=option.lstrip("-")
                )
            return


def check_workspace_dir(workspace: Path | None) -> None:
    """Refuse a ``--workspace`` that exists and is not a folder (e.g. ``/dev/null``) before any work."""
    if workspace is not None:
        check_output_dir(workspace, "--workspace")


@contextmanager
def byte_progress(description: str, enabled: bool = True) -> Iterator[Any]:
    """A transient progress bar on stderr for reading data; yields a ``(done, total)`` callback."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    if not enabled or not err.is_terminal:
        yield None
        return
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


@contextmanager
def count_progress(enabled: bool = True) -> Iterator[Any]:
    """Transient bars on stderr, one per named stage; yields an ``update(stage, done, total)`` callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not enabled or not err.is_terminal,
    ) as progress:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        yield update


def alias_history_table(title: str, events: list[Any]) -> Any:
    """Alias moves (of a model or a deployed pipeline), one row each: when, alias, action, from, to,
    who, why."""
    table = Table(title=title, title_justify="left")
    for col in ("when", "alias", "action", "from", "to", "who", "reason"):
        table.add_column(col)
    for e in events:
        table.add_row(
            f"{e.at:%Y-%m-%d %H:%M:%S}",
            e.alias,
            e.action,
            "-" if e.from_version is None else f"v{e.from_version}",
            "-" if e.to_version is None else f"v{e.to_version}",
            e.who,
            e.reason,
        )
    return table


def check_port_free(host: str, port: int) -> None:
    """Fail with one clear line, before announcing anything, when the port is taken (the daemons
    `serve` and `server start`; uvicorn would log its own error and exit 3)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = (
                "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound: {exc.strerror}"
            )
            raise ParameterError(f"port {port} on {host} {reason}", field="port") from exc
