"""``--server URL`` on read commands: the same data from a team server instead of a local workspace.

Answers come back as the entities the local commands render, so one table serves both paths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from datetime import datetime
from enum import Enum
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin, get_type_hints

import typer

from mloop.core.lineage import LineageGraph
from mloop.entities import ArtifactRef, Run, StepRun
from mloop.errors import ParameterError

__all__ = [
    "LocalServerOpt",
    "LocalTokenOpt",
    "ServerOpt",
    "TokenOpt",
    "client",
    "entity",
    "local_only",
    "read",
    "to_lineage",
]

T = TypeVar("T")

ServerOpt = Annotated[
    str | None,
    typer.Option("--server", help="Read from a team server (http://host:port) instead of a workspace."),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="MLOOP_TOKEN", show_envvar=True, show_default=False, help="Team server token."
    ),
]

# Read commands that work on this machine's files (a data file, an output file, the offline sources)
# take --server only to refuse it in one line, instead of click's bare "no such option": hidden, as
# the option never works there.
LocalServerOpt = Annotated[str | None, typer.Option("--server", hidden=True)]
LocalTokenOpt = Annotated[str | None, typer.Option("--token", hidden=True)]


def local_only(server: str | None, command: str, why: str) -> None:
    """Refuse ``--server`` on a command that only runs where its data is (``why`` says what it reads
    or writes here): ParameterError, so one ``error:`` line and exit 2."""
    if server:
        raise ParameterError(
            f"--server: `mloop {command}` {why}, so it has no team-server form; run it without --server",
            field="server",
        )


def client(server: str, token: str | None) -> Any:
    from mloop.server.client import Client

    return Client(server, token=token)


def read(
    server: str | None,
    token: str | None,
    workspace: Path | None,
    from_server: Callable[[Any], T],
    from_workspace: Callable[[Any], T],
) -> T:
    """One read command's data: ``from_server(client)`` with ``--server``, else ``from_workspace(ws)``
    on the local workspace (opened read-only in spirit: a read never creates one)."""
    if server:
        with client(server, token) as api:
            return from_server(api)
    from mloop.cli.common import open_workspace

    with open_workspace(workspace) as ws:
        return from_workspace(ws)


def entity(cls: type[T], d: dict[str, Any]) -> T:
    """The entity ``cls`` (a frozen dataclass of ``mloop.entities``) from its JSON form (``jsonable``'s
    output): times, enums and tuples come back as what the local command renders; keys the server
    adds beside the fields (``duration_s``…) are left out."""
    hints = get_type_hints(cls)
    given = [f.name for f in fields(cls) if f.name in d]  # type: ignore[arg-type]
    return cls(**{name: _decode(hints[name], d[name]) for name in given})


def _decode(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    if get_origin(hint) in (Union, UnionType):  # X | None
        hint = next(a for a in get_args(hint) if a is not type(None))
    if hint is datetime:
        return datetime.fromisoformat(value)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint(value)
    if get_origin(hint) is tuple:
        return tuple(value)
    return value


def to_lineage(d: dict[str, Any]) -> LineageGraph:
    """A lineage graph as the team server answers it (``GET /lineage/{ref}``)."""
    return LineageGraph(
        root=d["root"],
        direction=d["direction"],
        artifacts={a["id"]: entity(ArtifactRef, a) for a in d["artifacts"]},
        steps={step["id"]: entity(StepRun, step) for step in d["steps"]},
        runs={r["id"]: entity(Run, r) for r in d["runs"]},
        edges=[(e["from"], e["to"], e["name"]) for e in d["edges"]],
        read_at={(e["from"], e["to"], e["name"]): e["uri"] for e in d["edges"] if e.get("uri")},
    )
