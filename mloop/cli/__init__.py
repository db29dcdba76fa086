"""The ``mloop`` command: parse → one library call → render (rich tables, or ``--json``).

Errors become one ``error: …`` line on stderr with the exit code the error class carries
(2 bad usage/input, 1 a failed check or step).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.tree import Tree

from mloop.cli import remote
from mloop.cli.ci import ci_app
from mloop.cli.common import (
    JsonOpt,
    Table,
    WorkspaceOpt,
    count_progress,
    duration,
    err,
    open_workspace,
    out,
    paint,
    plural,
    print_json,
)
from mloop.cli.data import anomalies_table, data_app
from mloop.cli.features import features_app
from mloop.cli.loop import backtest, monitor, scheduler_app
from mloop.cli.models import models_app
from mloop.cli.pipelines import build_app, pipelines_app
from mloop.cli.remote import ServerOpt, TokenOpt
from mloop.cli.serve import serve
from mloop.cli.server import server_app
from mloop.core.lineage import LineageGraph
from mloop.core.loader import load_pipeline
from mloop.core.runner import RunResult, StepListener
from mloop.entities import RunStatus, StepStatus
from mloop.errors import MloopError
from mloop.stores.base import RunQuery

__all__ = ["app", "main"]

app = typer.Typer(
    name="mloop",
    help="MLOps levels 0-2: pipelines with caching and lineage, on SQLite or PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: no markup eating "[[rollout]]", no "<bool>" metavar on flags
)
runs_app = typer.Typer(help="Inspect pipeline runs.", no_args_is_help=True)
artifacts_app = typer.Typer(help="Inspect artifacts.", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"mloop {version('mloop')}", markup=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """MLOps levels 0-2: pipelines with caching and lineage, validation, registry, serving, continuous
    training."""


app.add_typer(runs_app, name="runs")
app.add_typer(artifacts_app, name="artifacts")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(ci_app, name="ci")
app.add_typer(pipelines_app, name="pipelines")
app.add_typer(build_app, name="build")
app.command("serve")(serve)
app.command("monitor")(monitor)
app.command("backtest")(backtest)
app.add_typer(scheduler_app, name="scheduler")
app.add_typer(features_app, name="features")
app.add_typer(server_app, name="server")


@contextmanager
def _progress(total: int, enabled: bool) -> Iterator[StepListener | None]:
    """A progress bar on stderr advanced by the runner's step events."""
    if not enabled or not err.is_terminal:
        yield None
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=total)

        def listener(name: str, status: StepStatus) -> None:
            if status == StepStatus.RUNNING:
                progress.update(task, description=f"running [bold]{name}[/]")
            else:
                progress.update(task, advance=1, description=f"{name} {status.value}")

        yield listener


def _parse_params(items: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MloopError(f"--param {item!r}: expected key=value", field="param")
        params[key.strip()] = value
    return params


def _steps_table(result: RunResult, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("step", "status", "duration", "cached from"):
        table.add_column(col)
    for s in result.steps:
        table.add_row(s.name, paint(s.status.value), duration(s.duration_s), s.cached_from or "")
    return table


@app.command()
def run(
    pipeline_ref: Annotated[str, typer.Argument(metavar="FILE.py:PIPELINE", help="The pipeline to run.")],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="key=value (repeatable).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Execute every step.")] = False,
    resume: Annotated[
        str | None, typer.Option("--resume", help="Rerun RUN_ID's parameters from its failure.")
    ] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a pipeline defined in a Python file."""
    pipe = load_pipeline(pipeline_ref)
    params: dict[str, Any] = dict(_parse_params(param or []))
    with open_workspace(workspace, create=True) as ws, _progress(len(pipe.graph.nodes), True) as listener:
        result = ws.run(pipe, cache=not no_cache, resume=resume, listener=listener, **params)
    if as_json:
        print_json({"run": result.run, "steps": result.steps})
        return
    out.print(_steps_table(result, f"run {result.run.id} of {pipe.name}: {paint(result.run.status.value)}"))


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
            runs = [remote.to_run(r) for r, _ in zip(found, range(limit), strict=False)]
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
    run_ = remote.to_run(body["run"])
    out.print(f"[bold]run {run_.id}[/] of [bold]{run_.pipeline}[/]: {paint(run_.status.value)}")
    out.print(
        f"trigger {run_.trigger} · started {run_.created_at:%Y-%m-%d %H:%M:%S} UTC"
        f" · {duration(run_.duration_s)}"
    )
    table = Table(title="steps", title_justify="left")
    for col in ("step", "status", "duration", "error"):
        table.add_column(col)
    for s in map(remote.to_step, body["steps"]):
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


@app.command()
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


@app.command()
def demo(
    workspace: WorkspaceOpt = None,
    in_process: Annotated[
        bool, typer.Option("--in-process", help="Call the service directly instead of over HTTP.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The whole loop on the bundled rainfall stream: train, serve, monitor, retrain, canary, promote."""
    from mloop.demo import rainfall_training, run_demo

    with (
        open_workspace(workspace, create=True) as ws,
        _progress(len(rainfall_training.graph.nodes) * 2, not as_json) as listener,
        count_progress(not as_json) as bar,
    ):

        def rows(done: int, total: int) -> None:
            bar("replaying the stream", done, total)

        def event(e: Any) -> None:
            if not as_json and e.kind in ("trigger", "canary", "promote", "rollback", "run"):
                label = f"{e.kind} ({e.trigger})" if e.trigger else e.kind
                err.print(f"  day {e.row:>6}: {label}: {e.detail}", markup=False)

        earlier = ws.runs(RunQuery(limit=1))
        if earlier:
            err.print(
                f"note: {ws.location} already holds runs (the newest {earlier[0].id}): this demo reuses"
                " v1's cached steps and sets the earlier prediction log aside, while model versions,"
                " trigger events and cool-downs carry on, so its figures can differ from a fresh"
                " workspace's (give a new --workspace for those)",
                markup=False,
            )
        report = run_demo(ws, listener=listener, progress=rows, on_event=event, http=not in_process)
        root = ws.root
    if as_json:
        print_json({**report.to_dict(), "reused_workspace": bool(earlier)})
        return
    _print_demo(report, root)


def _print_demo(report: Any, root: Path | None) -> None:
    out.print(_steps_table(report.first, f"run {report.first.run.id}: {duration(report.first_s)}"))
    metrics = Table(title="v1 hold-out evaluation", title_justify="left")
    metrics.add_column("metric")
    metrics.add_column("value", justify="right")
    for key, value in report.metrics.items():
        metrics.add_row(key, f"{value:.4f}")
    out.print(metrics)
    cached = sum(s.status == StepStatus.CACHED for s in report.rerun.steps)
    out.print(
        f"rerun {report.rerun.run.id}: {cached}/{len(report.rerun.steps)} steps cached in "
        f"{duration(report.rerun_s)} (first run {duration(report.first_s)})"
    )
    out.print("[bold]lineage of the trained model[/]")
    out.print(lineage_tree(report.lineage))
    loop = report.loop
    summary = Table(title="prequential accuracy on the replayed stream", title_justify="left")
    for col in ("policy", "before the drift", "after the drift", "overall"):
        summary.add_column(col, justify="right" if col != "policy" else "left")
    for name, label in (("loop", "the loop"), ("static", "v1 left alone")):
        a = loop.accuracy[name]
        summary.add_row(label, f"{a['before_drift']:.4f}", f"{a['after_drift']:.4f}", f"{a['overall']:.4f}")
    out.print(summary)
    r = loop.report
    out.print(
        f"{r.rows - r.initial_rows:,} days replayed over HTTP in {r.seconds:.0f} s; "
        f"{plural(r.loop.retrains, 'retraining run')}, "
        f"{plural(sum(e.kind == 'promote' for e in r.events), 'promotion')}; "
        f"production is v{loop.final['version']}"
    )
    if "run" in loop.final:
        run = loop.final["run"]
        out.print(
            f"v{loop.final['version']} was trained by run {run['id']} (trigger {run['trigger']}, "
            f"code {run['code_hash'][:12]})",
            markup=False,
        )
    out.print(
        f"[bold]incoming batch {report.refused_batch.name}[/] → run {report.refused_run} "
        f"{paint('stopped')} by the schema gate:"
    )
    out.print(anomalies_table(report.anomalies))
    out.print(f"HTML report: {loop.html}")
    out.print(f"workspace left at {root}; try: mloop monitor rainfall --window 1816 --workspace {root}")


def _uppercase_arguments(command: Any) -> None:
    """Name every positional argument in capitals in help and errors (``{NAME}``, not ``{name}``
    beside ``{MODEL}``), as the arguments given an explicit metavar already are."""
    for sub in getattr(command, "commands", {}).values():
        _uppercase_arguments(sub)
    for param in getattr(command, "params", []):
        if param.param_type_name == "argument" and param.metavar is None:
            param.metavar = param.name.upper()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn every error into one ``error: …`` line and an exit code."""
    root = typer.main.get_command(app)
    _uppercase_arguments(root)
    command: Callable[..., Any] = root.main
    try:
        result = command(args=argv, prog_name="mloop", standalone_mode=False)
    except MloopError as exc:
        err.print(f"error: {exc.message}", markup=False, soft_wrap=True)
        return exc.exit_code
    except typer.Abort:
        err.print("error: aborted", markup=False)
        return 130
    except KeyboardInterrupt:
        err.print("error: interrupted", markup=False)
        return 130
    except Exception as exc:
        # typer vendors click: its usage errors carry format_message() and exit_code (2)
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            if os.environ.get("MLOOP_DEBUG"):
                raise
            err.print(
                f"error: unexpected {type(exc).__name__}: {exc} "
                "(a bug in mloop; MLOOP_DEBUG=1 shows the traceback)",
                markup=False,
                soft_wrap=True,
            )
            return 1
        # pydantic-style enum errors arrive as "Value error, …": the user needs the rest only
        message = exc.format_message().replace("Value error, ", "")
        if message:  # empty for "no arguments: help was shown"
            err.print(f"error: {message}", markup=False, soft_wrap=True)
        return int(exc.exit_code)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
