"""``mloop runs list|show``, ``mloop artifacts show`` and ``mloop lineage``: what ran, what it made."""

from __future__ import annotations

from typing import Annotated

import typer
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
from mloop.entities import Run, RunStatus, StepRun
from mloop.stores.base import RunQuery

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


@runs_app.command("show")
def runs_show(
    run_id: str,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Show one run: parameters, steps, metrics."""
    if server:
        _remote_run_show(server, token, run_id, as_json)
        return
    with open_workspace(workspace) as ws:
        run_ = ws.resolve_run(run_id)
        run_id = run_.id
        steps = ws.metadata.list_steps(run_id)
        metrics = ws.metadata.get_metrics(run_id)
        params = ws.metadata.get_params(run_id)
        events = ws.metadata.events(step_run_ids=[s.id for s in steps], kind="output")
        artifacts = {e.artifact_id: ws.metadata.get_artifact(e.artifact_id) for e in events}
        anomalies = [ws.load_artifact(e.artifact_id) for e in events if e.name == "anomalies"]
    names = {s.id: s.name for s in steps}
    outputs = [
        {
            "step": names[e.step_run_id],
            "output": e.name,
            "artifact_id": e.artifact_id,
            "type": artifacts[e.artifact_id].type,
            "python_type": artifacts[e.artifact_id].python_type,
        }
        for e in events
    ]
    if as_json:
        print_json({"run": run_, "steps": steps, "params": params, "metrics": metrics, "outputs": outputs})
        return
    out.print(f"[bold]run {run_.id}[/] of [bold]{run_.pipeline}[/]: {paint(run_.status.value)}")
    out.print(
        f"trigger {run_.trigger} · started {run_.created_at:%Y-%m-%d %H:%M:%S} UTC"
        f" · {duration(run_.duration_s)}"
    )
    out.print(
        f"code commit {run_.code_commit or '(not in a git repository)'} · code hash {run_.code_hash[:16]}"
    )
    if run_.resumed_from:
        out.print(f"resumed from {run_.resumed_from}")
    if run_.error:
        out.print(f"[red]error:[/] {run_.error}")
    table = Table(title="steps", title_justify="left")
    for col in ("step", "status", "duration", "error"):
        table.add_column(col)
    for s in steps:
        error = f"{s.error_type}: {s.error_message}" if s.error_type else ""
        table.add_row(s.name, paint(s.status.value), duration(s.duration_s), error)
    out.print(table)
    if params:
        out.print("params: " + ", ".join(f"{k}={v!r}" for k, v in params.items()))
    if outputs:
        at = Table(title="artifacts", title_justify="left")
        for col in ("step", "output", "type", "artifact"):
            at.add_column(col)
        for o in outputs:
            at.add_row(
                o["step"], o["output"], o["python_type"].rpartition(".")[2] or o["type"], o["artifact_id"]
            )
        out.print(at)
    for found in anomalies:
        if not found.ok:
            out.print(anomalies_table(found))
    if metrics:
        mt = Table(title="metrics", title_justify="left")
        for col in ("step", "key", "value", "index"):
            mt.add_column(col)
        for m in metrics:
            mt.add_row(names.get(m.step_run_id or "", "-"), m.key, f"{m.value:.6g}", str(m.step))
        out.print(mt)


def _remote_run_show(server: str, token: str | None, run_id: str, as_json: bool) -> None:
    with remote.client(server, token) as api:
        body = api.run(run_id)
    if as_json:
        print_json(body)
        return
    run_ = remote.entity(Run, body["run"])
    out.print(f"[bold]run {run_.id}[/] of [bold]{run_.pipeline}[/]: {paint(run_.status.value)}")
    out.print(
        f"trigger {run_.trigger} · started {run_.created_at:%Y-%m-%d %H:%M:%S} UTC"
        f" · {duration(run_.duration_s)}"
    )
    table = Table(title="steps", title_justify="left")
    for col in ("step", "status", "duration", "error"):
        table.add_column(col)
    for s in (remote.entity(StepRun, s) for s in body["steps"]):
        error = f"{s.error_type}: {s.error_message}" if s.error_type else ""
        table.add_row(s.name, paint(s.status.value), duration(s.duration_s), error)
    out.print(table)
    if body["params"]:
        out.print("params: " + ", ".join(f"{k}={v!r}" for k, v in body["params"].items()))
    for key, m in body["metrics"].items():
        out.print(f"metric {key} = {m['value']:.6g}", markup=False)


@artifacts_app.command("show")
def artifacts_show(artifact_id: str, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Show an artifact (by id, digest or a unique prefix of either): type, size, digest, where it lives,
    who made and used it."""
    with open_workspace(workspace) as ws:
        art = ws.resolve_artifact(artifact_id)
        events = ws.metadata.events(artifact_ids=[art.id])
        steps = {e.step_run_id: ws.metadata.get_step(e.step_run_id) for e in events}
    if as_json:
        print_json({"artifact": art, "events": events})
        return
    out.print(f"[bold]artifact {art.id}[/] ({art.type}, {art.python_type}, {art.size:,} bytes)")
    out.print(f"digest sha256:{art.digest}")
    out.print(f"uri {art.uri}")
    table = Table(title="events", title_justify="left")
    for col in ("kind", "as", "step", "run", "status"):
        table.add_column(col)
    for e in events:
        s = steps[e.step_run_id]
        table.add_row(e.kind, e.name, s.name, s.run_id, paint(s.status.value))
    out.print(table)


def lineage_tree(graph: LineageGraph) -> Tree:
    """A rich tree of a lineage graph, rooted at what was asked for.

    The graph is a DAG: a node reached a second time is printed as a reference (``↑ see above``), and
    a cached rerun points at the execution it reused instead of repeating that subtree.
    """
    labels: dict[str, str] = {}
    for a in graph.artifacts.values():
        labels[a.id] = f"[cyan]{a.type}[/] {a.id} [dim]sha256:{a.digest[:12]} {a.size:,} B[/]"
        if a.type in ("file", "directory", "source", "feature_view"):
            labels[a.id] += f" [dim]{a.uri}[/]"
    for s in graph.steps.values():
        r = graph.runs.get(s.run_id)
        code = f" code {(r.code_commit or r.code_hash)[:12]}" if r else ""
        labels[s.id] = f"[bold]{s.name}[/] {paint(s.status.value)} [dim]run {s.run_id}{code}[/]"
        if s.cached_from:
            labels[s.id] += f" [dim]reused {s.cached_from}[/]"
    children: dict[str, list[tuple[str, str]]] = {}
    for src, dst, name in graph.edges:
        parent, child = (dst, src) if graph.direction == "upstream" else (src, dst)
        children.setdefault(parent, []).append((child, name))
    shown: set[str] = set()

    def grow(branch: Tree, node: str) -> None:
        shown.add(node)
        for child, name in children.get(node, []):
            step = graph.steps.get(child)
            if child in shown:
                branch.add(f"[dim]{name}:[/] {labels.get(child, child)} [dim]↑ see above[/]")
            elif step is not None and step.cached_from and graph.direction == "downstream":
                shown.add(child)  # a cached rerun: same outputs as the execution it reused
                branch.add(f"[dim]{name}:[/] {labels.get(child, child)}")
            else:
                grow(branch.add(f"[dim]{name}:[/] {labels.get(child, child)}"), child)

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
