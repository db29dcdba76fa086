"""``--server URL`` on read commands: the same data from a team server instead of a local workspace.

Answers come back as the entities the local commands render, so one table serves both paths.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from mloop.core.lineage import LineageGraph
from mloop.entities import (
    AliasEvent,
    ArtifactRef,
    Model,
    ModelStatus,
    ModelVersion,
    Run,
    RunStatus,
    StepRun,
    StepStatus,
)

__all__ = [
    "ServerOpt",
    "TokenOpt",
    "client",
    "read",
    "to_artifact",
    "to_event",
    "to_lineage",
    "to_model",
    "to_run",
    "to_step",
    "to_version",
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


def _t(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def to_run(d: dict[str, Any]) -> Run:
    return Run(
        id=d["id"],
        pipeline=d["pipeline"],
        status=RunStatus(d["status"]),
        trigger=d["trigger"],
        params=d["params"],
        code_commit=d["code_commit"],
        code_hash=d["code_hash"],
        created_at=datetime.fromisoformat(d["created_at"]),
        ended_at=_t(d.get("ended_at")),
        error=d.get("error"),
        resumed_from=d.get("resumed_from"),
        host=d.get("host"),
        pid=d.get("pid"),
    )


def to_step(d: dict[str, Any]) -> StepRun:
    return StepRun(
        id=d["id"],
        run_id=d["run_id"],
        name=d["name"],
        status=StepStatus(d["status"]),
        cache_key=d["cache_key"],
        started_at=datetime.fromisoformat(d["started_at"]),
        params=d.get("params") or {},
        ended_at=_t(d.get("ended_at")),
        cached_from=d.get("cached_from"),
        error_type=d.get("error_type"),
        error_message=d.get("error_message"),
    )


def to_model(d: dict[str, Any]) -> Model:
    return Model(
        d["name"], datetime.fromisoformat(d["created_at"]), d["last_version"], d.get("aliases") or {}
    )


def to_version(d: dict[str, Any]) -> ModelVersion:
    return ModelVersion(
        name=d["name"],
        version=d["version"],
        id=d["id"],
        status=ModelStatus(d["status"]),
        artifact_id=d["artifact_id"],
        run_id=d["run_id"],
        signature=d["signature"],
        metrics=d["metrics"],
        tags=d["tags"],
        created_at=datetime.fromisoformat(d["created_at"]),
        created_by=d["created_by"],
        aliases=tuple(d.get("aliases") or ()),
    )


def to_event(d: dict[str, Any]) -> AliasEvent:
    return AliasEvent(
        name=d["name"],
        alias=d["alias"],
        action=d["action"],
        from_version=d["from_version"],
        to_version=d["to_version"],
        at=datetime.fromisoformat(d["at"]),
        who=d["who"],
        reason=d["reason"],
        evidence=d.get("evidence"),
    )


def to_artifact(d: dict[str, Any]) -> ArtifactRef:
    return ArtifactRef(
        id=d["id"],
        digest=d["digest"],
        type=d["type"],
        python_type=d["python_type"],
        size=d["size"],
        uri=d["uri"],
        created_at=datetime.fromisoformat(d["created_at"]),
    )


def to_lineage(d: dict[str, Any]) -> LineageGraph:
    """A lineage graph as the team server answers it (``GET /lineage/{ref}``)."""
    return LineageGraph(
        root=d["root"],
        direction=d["direction"],
        artifacts={a["id"]: to_artifact(a) for a in d["artifacts"]},
        steps={step["id"]: to_step(step) for step in d["steps"]},
        runs={r["id"]: to_run(r) for r in d["runs"]},
        edges=[(e["from"], e["to"], e["name"]) for e in d["edges"]],
    )
