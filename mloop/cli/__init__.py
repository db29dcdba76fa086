"""The ``mloop`` command: parse → one library call → render (rich tables, or ``--json``).

Errors become one ``error: …`` line on stderr with the exit code the error class carries
(2 bad usage/input, 1 a failed check or step).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

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
    parse_params,
    plural,
    print_json,
)
from mloop.cli.data import anomalies_table, data_app
from mloop.cli.features import features_app
from mloop.cli.loop import backtest, monitor, scheduler_app
from mloop.cli.models import models_app
from mloop.cli.pipelines import build_app, pipelines_app
from mloop.cli.runs import artifacts_app, lineage, lineage_tree, runs_app
from mloop.cli.serve import serve
from mloop.cli.server import server_app
from mloop.core.loader import load_pipeline
from mloop.core.runner import RunResult, StepListener
from mloop.entities import StepStatus
from mloop.errors import MloopError, bounded
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
app.command("lineage")(lineage)


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


def _steps_table(result: RunResult, title: str | Text) -> Table:
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
    params: dict[str, Any] = dict(parse_params(param or []))
    with open_workspace(workspace, create=True) as ws, _progress(len(pipe.graph.nodes), True) as listener:
        if resume is not None:  # a unique prefix, as every command takes run ids
            resume = ws.resolve_run(resume).id
        result = ws.run(pipe, cache=not no_cache, resume=resume, listener=listener, **params)
    if as_json:
        print_json({"run": result.run, "steps": result.steps})
        return
    title = Text.assemble(f"run {result.run.id} of {pipe.name}: ", paint(result.run.status.value))
    out.print(_steps_table(result, title))


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
        f"[bold]incoming batch {escape(report.refused_batch.name)}[/] → run {report.refused_run} "
        f"{paint('stopped').markup} by the schema gate:"
    )
    out.print(anomalies_table(report.anomalies))
    out.print(f"HTML report: {loop.html}", markup=False)
    out.print(
        f"workspace left at {root}; try: mloop monitor rainfall --window 1816 --workspace {root}",
        markup=False,
    )


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
        err.print(f"error: {_one_line(exc.message)}", markup=False, soft_wrap=True)
        return exc.exit_code
    except typer.Abort:
        err.print("error: aborted", markup=False)
        return 130
    except KeyboardInterrupt:
        err.print("error: interrupted", markup=False)
        return 130
    except UnicodeEncodeError as exc:
        if "surrogates not allowed" not in str(exc):
            raise
        # an argument of bytes that are no UTF-8 text (Python keeps them as surrogates), given on to
        # a database or a file: it names nothing mloop can have stored
        err.print(f"error: {exc.object[:80]!r} is not valid UTF-8 text", markup=False, soft_wrap=True)
        return 2
    except Exception as exc:
        # typer vendors click: its usage errors carry format_message() and exit_code (2)
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            if os.environ.get("MLOOP_DEBUG"):
                raise
            err.print(
                f"error: unexpected {type(exc).__name__}: {bounded(str(exc))} "
                "(a bug in mloop; MLOOP_DEBUG=1 shows the traceback)",
                markup=False,
                soft_wrap=True,
            )
            return 1
        # pydantic-style enum errors arrive as "Value error, …": the user needs the rest only
        message = bounded(exc.format_message().replace("Value error, ", ""))
        if message:  # empty for "no arguments: help was shown"
            err.print(f"error: {message}", markup=False, soft_wrap=True)
        return int(exc.exit_code)
    if result == 130:  # typer turns Ctrl-C into a quiet exit status 130
        err.print("error: interrupted", markup=False)
    return result if isinstance(result, int) else 0


def _one_line(message: str) -> str:
    """An error quoting a library's multi-line message (scikit-learn's) stays one line."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def entry() -> None:
    """The ``mloop`` command: :func:`main`, then exit. After Ctrl-C, or a step past its timeout, it
    exits at once, even while that step still runs in a worker thread (its run and step are already
    recorded as failed): the interpreter would otherwise wait for the step to end before exiting (a
    minute, or forever)."""
    code = main()
    stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    abandoned = any(t.name.startswith("mloop-step") for t in stuck)  # a finished run's pool has none
    if (code == 130 or abandoned) and any(t.is_alive() for t in stuck):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    sys.exit(main())
