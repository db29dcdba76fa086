"""``mloop runs list|show``, ``mloop artifacts show`` and ``mloop lineage``: what ran, what it made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.tree import Tree

from mloop.cli import remote
from mloop.cli.common import (
    JsonOpt,
    Table,
    WorkspaceOpt,
    duration,
    open_workspace,
    out,
    paint,
    plural,
    print_json,
)
from mloop.cli.data import anomalies_table
from mloop.cli.remote import ServerOpt, TokenOpt
from mloop.core.lineage import LineageGraph
from mloop.entities import ArtifactRef, Event, Metric, Run, RunStatus, StepRun
from mloop.stores.base import RunQuery

if TYPE_CHECKING:
    from mloop.validation.schema import Anomalies
    from mloop.workspace import Workspace

__all__ = ["artifacts_app", "lineage", "lineage_tree", "runs_app"]

runs_app = typer.Typer(help="Inspect pipeline runs.", no_args_is_help=True)
artifacts_app = typer.Typer(help="Inspect artifacts.", no_args_is_help=True)


@runs_app.command("list")
def runs_list(
    pipeline: Annotated[str | None, typer.Option(help="Only runs of this pipeline.")] = None,
    status: Annotated[RunStatus | None, typer.Option(help="Only runs with this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="At most this many runs, newest first.")] = 20,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """List runs, newest first."""
    if server:
        with remote.client(server, token) as api:
            found = api.iter_runs(
                pipeline=pipeline, status=status.value if status else None, limit=min(limit, 500)
            )
            runs = [remote.entity(Run, r) for r, _ in zip(found, range(limit), strict=False)]
    else:
        with open_workspace(workspace) as ws:
            runs = ws.runs(RunQuery(pipeline=pipeline, status=status, limit=limit))
    if as_json:
        print_json(runs)
        return
    table = Table(title=plural(len(runs), "run"), title_justify="left")
    for col in ("run", "pipeline", "status", "trigger", "started", "duration", "code"):
        table.add_column(col)
    for r in runs:
        table.add_row(
            r.id,
            r.pipeline,
            paint(r.status.value),
            r.trigger,
            f"{r.created_at:%Y-%m-%d %H:%M:%S}",
            duration(r.duration_s),
            (r.code_commit or "")[:12] or r.code_hash[:12],
        )
    out.print(table)


@dataclass(frozen=True)
class _RunDetail:
    """What ``runs show`` prints, from a workspace or from a team server alike."""

    run: Run
    steps: list[StepRun]
    params: dict[str, Any]
    metrics: list[Metric]
    outputs: list[dict[str, Any]]
    anomalies: list[Anomalies]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "steps": self.steps,
            "params": self.params,
            "metrics": self.metrics,
            "outputs": self.outputs,
        }


def _output(step: str, name: str, art: ArtifactRef) -> dict[str, Any]:
    return {
        "step": step,
        "output": name,
        "artifact_id": art.id,
        "type": art.type,
        "python_type": art.python_type,
    }


_ANOMALIES = "mloop.validation.schema.Anomalies"  # the recorded class of a schema gate's anomalies


def _is_anomalies(output: dict[str, Any]) -> bool:
    return bool(output["output"] == "anomalies" and output["python_type"] == _ANOMALIES)


def _local_run(ws: Workspace, run_id: str) -> _RunDetail:
    run_ = ws.resolve_run(run_id)
    steps = ws.metadata.list_steps(run_.id)
    names = {s.id: s.name for s in steps}
    # no steps (a tracking run): no events either (an empty filter would match every event)
    events = ws.metadata.events(step_run_ids=list(names), kind="output") if steps else []
    outputs = [_output(names[e.step_run_id], e.name, ws.metadata.get_artifact(e.artifact_id)) for e in events]
    return _RunDetail(
        run_,
        steps,
        ws.metadata.get_params(run_.id),
        ws.metadata.get_metrics(run_.id),
        outputs,
        [ws.load_artifact(o["artifact_id"]) for o in outputs if _is_anomalies(o)],
    )


def _remote_run(api: Any, run_id: str) -> _RunDetail:
    from mloop.validation.schema import Anomalies

    body = api.run(run_id)
    run_ = remote.entity(Run, body["run"])
    outputs = [
        _output(a["step"], a["name"], remote.entity(ArtifactRef, a))
        for a in body["artifacts"]
        if a["kind"] == "output"
    ]
    return _RunDetail(
        run_,
        [remote.entity(StepRun, s) for s in body["steps"]],
        body["params"],
        [remote.entity(Metric, m) for m in api.run_metrics(run_.id)],
        outputs,
        # a JSON report read as one, never unpickled (only Anomalies' own bytes are decoded)
        [Anomalies.from_bytes(api.artifact_content(o["artifact_id"])) for o in outputs if _is_anomalies(o)],
    )


@runs_app.command("show")
def runs_show(
    run_id: str,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Show one run: parameters, steps, metrics."""
    detail = remote.read(
        server, token, workspace, lambda api: _remote_run(api, run_id), lambda ws: _local_run(ws, run_id)
    )
    if as_json:
        print_json(detail.to_dict())
        return
    run_ = detail.run
    out.print(
        f"[bold]run {run_.id}[/] of [bold]{escape(run_.pipeline)}[/]: {paint(run_.status.value).markup}"
    )
    out.print(
        f"trigger {run_.trigger} · started {run_.created_at:%Y-%m-%d %H:%M:%S} UTC"
        f" · {duration(run_.duration_s)}"
    )
    out.print(
        f"code commit {run_.code_commit or '(not in a git repository)'} · code hash {run_.code_hash[:16]}"
    )
    if run_.resumed_from:
        out.print(f"resumed from {run_.resumed_from}", markup=False)
    if run_.error:
        out.print(f"[red]error:[/] {escape(run_.error)}")
    table = Table(title="steps", title_justify="left")
    for col in ("step", "status", "duration", "error"):
        table.add_column(col)
    for s in detail.steps:
        error = f"{s.error_type}: {s.error_message}" if s.error_type else ""
        table.add_row(s.name, paint(s.status.value), duration(s.duration_s), error)
    out.print(table)
    if detail.params:
        out.print("params: " + ", ".join(f"{k}={v!r}" for k, v in detail.params.items()), markup=False)
    if detail.outputs:
        at = Table(title="artifacts", title_justify="left")
        for col in ("step", "output", "type", "artifact"):
            at.add_column(col)
        for o in detail.outputs:
            at.add_row(
                o["step"], o["output"], o["python_type"].rpartition(".")[2] or o["type"], o["artifact_id"]
            )
        out.print(at)
    for found in detail.anomalies:
        if not found.ok:
            out.print(anomalies_table(found))
    if detail.metrics:
        names = {s.id: s.name for s in detail.steps}
        mt = Table(title="metrics", title_justify="left")
        for col in ("step", "key", "value", "index"):
            mt.add_column(col)
        for m in detail.metrics:
            mt.add_row(names.get(m.step_run_id or "", "-"), m.key, f"{m.value:.6g}", str(m.step))
        out.print(mt)


@artifacts_app.command("show")
def artifacts_show(
    artifact_id: str,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Show an artifact (by id, digest or a unique prefix of either): type, size, digest, where it lives,
    who made and used it."""
    art, events, steps = remote.read(
        server,
        token,
        workspace,
        lambda api: _remote_artifact(api, artifact_id),
        lambda ws: _local_artifact(ws, artifact_id),
    )
    if as_json:
        print_json({"artifact": art, "events": events})
        return
    out.print(f"[bold]artifact {art.id}[/] ({art.type}, {art.python_type}, {art.size:,} bytes)")
    out.print(f"digest sha256:{art.digest}")
    out.print(f"uri {art.uri}", markup=False)
    table = Table(title="events", title_justify="left")
    for col in ("kind", "as", "step", "run", "status"):
        table.add_column(col)
    for e in events:
        s = steps[e.step_run_id]
        table.add_row(e.kind, e.name, s.name, s.run_id, paint(s.status.value))
    out.print(table)


def _local_artifact(ws: Workspace, ref: str) -> tuple[ArtifactRef, list[Event], dict[str, StepRun]]:
    art = ws.resolve_artifact(ref)
    events = ws.metadata.events(artifact_ids=[art.id])
    return art, events, {e.step_run_id: ws.metadata.get_step(e.step_run_id) for e in events}


def _remote_artifact(api: Any, ref: str) -> tuple[ArtifactRef, list[Event], dict[str, StepRun]]:
    body = api.artifact(ref)
    steps = {s["id"]: remote.entity(StepRun, s) for s in body["steps"]}
    return remote.entity(ArtifactRef, body), [remote.entity(Event, e) for e in body["events"]], steps


def lineage_tree(graph: LineageGraph) -> Tree:
    """A rich tree of a lineage graph, rooted at what was asked for.

    The graph is a DAG: a node reached a second time is printed as a reference (``↑ see above``), and
    a cached rerun points at the execution it reused instead of repeating that subtree.
    """
    labels: dict[str, str] = {}
    for a in graph.artifacts.values():
        labels[a.id] = f"[cyan]{a.type}[/] {a.id} [dim]sha256:{a.digest[:12]} {a.size:,} B[/]"
        if a.type in ("file", "directory", "source", "feature_view"):
            labels[a.id] += f" [dim]{escape(a.uri)}[/]"
    for s in graph.steps.values():
        r = graph.runs.get(s.run_id)
        code = f" code {(r.code_commit or r.code_hash)[:12]}" if r else ""
        labels[s.id] = (
            f"[bold]{escape(s.name)}[/] {paint(s.status.value).markup} [dim]run {s.run_id}{code}[/]"
        )
        if s.cached_from:
            labels[s.id] += f" [dim]reused {s.cached_from}[/]"
    children: dict[str, list[tuple[str, str]]] = {}
    read_at: dict[tuple[str, str, str], str] = {}  # (parent, child, name) → where a same-bytes file was read
    for src, dst, name in graph.edges:
        parent, child = (dst, src) if graph.direction == "upstream" else (src, dst)
        children.setdefault(parent, []).append((child, name))
        read = graph.read_path((src, dst, name))
        if read is not None:
            read_at[(parent, child, name)] = f" [dim](read at {escape(read)})[/]"
    shown: set[str] = set()

    def grow(branch: Tree, node: str) -> None:
        shown.add(node)
        for child, name in children.get(node, []):
            step = graph.steps.get(child)
            label = f"[dim]{name}:[/] {labels.get(child, child)}{read_at.get((node, child, name), '')}"
            if child in shown:
                branch.add(f"{label} [dim]↑ see above[/]")
            elif step is not None and step.cached_from and graph.direction == "downstream":
                shown.add(child)  # a cached rerun: same outputs as the execution it reused
                branch.add(label)
            else:
                grow(branch.add(label), child)

    if graph.root in labels:
        tree = Tree(labels[graph.root])
        grow(tree, graph.root)
    else:  # a run id: the run's last steps are the roots
        tree = Tree(f"[bold]run {graph.root}[/]")
        consumed = {c for cs in children.values() for c, _ in cs}
        for top in (s for s in graph.steps if s not in consumed and graph.steps[s].run_id == graph.root):
            grow(tree.add(labels[top]), top)
    return tree


def lineage(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="REF",
            help="An artifact id or digest (sha256:… or bare), a step run or run id (or a unique"
            " prefix), or a model version NAME:VERSION / NAME@ALIAS.",
        ),
    ],
    upstream: Annotated[
        bool, typer.Option("--upstream/--downstream", help="What made it (default) or what used it.")
    ] = True,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Trace lineage: from a model back to its data and code, or from data forward to what used it."""
    direction = "upstream" if upstream else "downstream"
    graph = remote.read(
        server,
        token,
        workspace,
        lambda api: remote.to_lineage(api.lineage(ref, direction)),
        lambda ws: ws.lineage(ref, direction),
    )
    if as_json:
        print_json(graph.to_dict())
        return
    out.print(lineage_tree(graph))
