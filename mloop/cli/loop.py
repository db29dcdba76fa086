"""``mloop monitor``, ``mloop scheduler run|status|fire`` and ``mloop backtest``: the loop's shells."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from mloop.cli import remote
from mloop.cli.common import (
    EncodingOpt,
    HtmlOpt,
    JsonOpt,
    Table,
    WorkspaceOpt,
    check_output_file,
    count_progress,
    err,
    open_workspace,
    out,
    paint,
    plural,
    print_json,
    styled,
    write_output,
)
from mloop.cli.logs import check_format, configure_logging
from mloop.cli.remote import ServerOpt, TokenOpt
from mloop.errors import MloopError, NotFoundError, ParameterError, StoreUnreachableError
from mloop.names import check_name
from mloop.settings import CONFIG_FILE

if TYPE_CHECKING:
    from mloop.backtesting.backtest import BacktestReport
    from mloop.orchestration.scheduler import Scheduler, TickReport
    from mloop.workspace import Workspace

log = logging.getLogger("mloop.scheduler")

scheduler_app = typer.Typer(help="The daemon that evaluates triggers, starts runs and advances rollouts.")

LogLevelOpt = Annotated[
    str, typer.Option("--log-level", help="debug, info, warning or error (logs go to stderr).")
]
LogFormatOpt = Annotated[str, typer.Option("--log-format", help="text or json (one object per line).")]
# a command that prints its own outcome (fire, retry): its log goes to stderr only when asked for
OutcomeLogOpt = Annotated[str | None, typer.Option("--log-level", help="Also log to stderr at this level.")]


def _log_when_asked(log_level: str | None, log_format: str) -> None:
    check_format(log_format)
    if log_level is not None:
        configure_logging(log_level, log_format)
    else:  # the outcome is printed by the command; keep the log's copy of it off stderr
        logging.getLogger("mloop").addHandler(logging.NullHandler())


def monitor(
    name: Annotated[str, typer.Argument(help="Served model name.")],
    window: Annotated[
        str, typer.Option("--window", help="Rows (1000) or a duration (30m, 1h, 7d).")
    ] = "1000",
    slices: Annotated[
        list[str] | None, typer.Option("--slice", help="Slice spec, e.g. city or age:0,30,60.")
    ] = None,
    share: Annotated[
        float, typer.Option("--share", min=0.01, max=1.0, help="Drift share for dataset drift.")
    ] = 0.5,
    no_store: Annotated[bool, typer.Option("--no-store", help="Do not record the result.")] = False,
    html: HtmlOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Drift, prediction drift and live metrics of NAME's prediction log, window by window."""
    from mloop.monitoring.monitor import monitor as run_monitor

    if html is not None:  # before the windows are measured and the run recorded, not after
        check_output_file(html, "--html")
    with open_workspace(workspace) as ws:
        report = run_monitor(
            ws, name, window=window, slices=slices, share_threshold=share, store=not no_store
        )
    if html is not None:
        from mloop.monitoring.report import monitor_html

        write_output(html, monitor_html(report), "--html")
    if as_json:
        print_json(report.to_dict())
        return
    table = Table(title=f"{name}: {plural(len(report.windows), 'window')} of {report.window}")
    for col in ("#", "from", "rows", "labelled", "versions", "drift share", "drifted", "metrics"):
        table.add_column(col)
    for w in report.windows:
        metrics = _headline(w.metrics)
        table.add_row(
            f"{w.index + 1}{'' if w.complete else '*'}",
            w.start[:19],
            str(w.rows),
            str(w.labelled),
            " ".join(f"v{v}:{n}" for v, n in w.versions.items()),
            styled(f"{w.drift_share:.2f}", "red") if w.dataset_drift else f"{w.drift_share:.2f}",
            ", ".join(w.drifted[:4]) + ("…" if len(w.drifted) > 4 else ""),
            metrics or "-",
        )
    out.print(table)
    if any(w.slices for w in report.windows):  # --slice: each window's slices, as the JSON has them
        sliced = Table(title="slices (labelled rows)")
        for col in ("#", "slice", "rows", "metrics"):
            sliced.add_column(col)
        for w in report.windows:
            for segment, values in w.slices.items():
                sliced.add_row(
                    str(w.index + 1), segment, f"{values.get('rows', 0):.0f}", _headline(values) or "-"
                )
        out.print(sliced)
    if report.log_health:
        out.print("log: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.log_health.items()))
    if report.run_id:
        out.print(f"recorded as run {report.run_id}" + (f"; HTML: {html}" if html else ""), markup=False)


def _scheduler(ws: Workspace, tick: float | None) -> Scheduler:
    from mloop.cicd.gate import LoadTestGate
    from mloop.orchestration.config import load_loop_config
    from mloop.orchestration.scheduler import Scheduler

    config = load_loop_config(ws.config_dir)
    if tick is not None:
        config = config.model_copy(update={"tick_s": tick})
    return Scheduler(ws, config, gate=LoadTestGate())


def _headline(metrics: dict[str, float]) -> str:
    """The metrics a window's row shows (the JSON has all of them)."""
    return ", ".join(
        f"{k} {v:.4f}" for k, v in metrics.items() if k in ("accuracy", "roc_auc", "rmse", "mae")
    )


@scheduler_app.command("run")
def scheduler_run(
    tick: Annotated[float | None, typer.Option("--tick", min=0.05, help="Seconds between passes.")] = None,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    log_level: LogLevelOpt = "info",
    log_format: LogFormatOpt = "text",
    workspace: WorkspaceOpt = None,
) -> None:
    """Evaluate triggers and rollouts until SIGTERM/SIGINT (the run in progress finishes first).

    Faults inside a pass (database unreachable, failing pipeline…) are logged and retried with
    back-off, and a database server that does not answer yet at start is waited for; only bad
    configuration at start stops it, or (exit 1) its SQLite database file deleted or replaced under
    it. With ``--once``: exit 1 when the pass logged an error or a run it started failed, 2 for bad
    configuration.
    """
    configure_logging(log_level, log_format)
    if not once:
        _wait_for_the_database(workspace)
    with open_workspace(workspace, create=True) as ws:
        scheduler = _scheduler(ws, tick)
        if not scheduler.config.triggers and not scheduler.config.rollout:
            raise ParameterError(
                f"no [[triggers]] or [[rollout]] in {ws.config_dir / CONFIG_FILE}: nothing to schedule",
                field="config",
            )
        scheduler.check()

        def stop(signum: int, frame: Any) -> None:
            log.info("scheduler: %s received, stopping after the current run", signal.Signals(signum).name)
            scheduler.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        config = scheduler.config
        log.info(
            "scheduler %s: %s, %s, every %g s, lease %g s",
            scheduler.owner,
            plural(len(config.triggers), "trigger"),
            plural(len(config.rollout), "rollout policy", "rollout policies"),
            config.tick_s,
            config.lease_s,
        )
        if once:
            report = scheduler.tick()  # it logs each problem as it meets it: said once, not again here
            failed = [run for run, status in report.runs if status != "succeeded"]
            if report.errors or failed:  # a cron job's pass must say it went wrong
                problems = [f"run {run}" for run in failed] + [
                    name  # a run's failure is also its trigger's: named once, by the run
                    for name, exc in report.failures.items()
                    if getattr(exc, "run_id", None) not in failed
                ]
                log.error(
                    "scheduler: the pass met %s: %s", plural(len(problems), "problem"), ", ".join(problems)
                )
                raise typer.Exit(1)
        else:
            scheduler.serve_forever()
    log.info("scheduler: stopped")


def _wait_for_the_database(workspace: Path | None) -> None:
    """Wait, with back-off, for a metadata database server that does not answer yet: a daemon
    started beside its database (at boot, or while it restarts) exited with "cannot connect"
    instead of riding it out as it does an outage once running. SIGTERM/SIGINT end the wait."""
    stopping = threading.Event()
    handlers = {s: signal.signal(s, lambda *_: stopping.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    pause = 1.0
    try:
        while True:
            try:
                with open_workspace(workspace, create=True):
                    return
            except StoreUnreachableError as exc:
                log.warning("scheduler: %s; trying again in %g s", exc.message, pause)
            if stopping.wait(pause):
                log.info("scheduler: stopped before the database answered")
                raise typer.Exit(0)
            pause = min(pause * 2, 60.0)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@scheduler_app.command("status")
def scheduler_status(
    workspace: WorkspaceOpt = None, as_json: JsonOpt = False, server: ServerOpt = None, token: TokenOpt = None
) -> None:
    """Each trigger: last evaluation and its result, last firing, next due time."""
    from mloop.orchestration.config import load_loop_config
    from mloop.orchestration.scheduler import trigger_status

    rows = remote.read(
        server,
        token,
        workspace,
        lambda api: [_status_row(r) for r in api.scheduler_status()],
        lambda ws: trigger_status(ws.triggers, load_loop_config(ws.config_dir)),
    )
    if as_json:
        print_json(rows)
        return
    table = Table(title="triggers")
    for col in (
        "name",
        "kind",
        "pipeline",
        "evaluated",
        "result",
        "error",
        "fired",
        "next due",
        "last event",
    ):
        table.add_column(col)
    for r in rows:
        last = r["last_event"]
        table.add_row(
            r["name"],
            r["kind"],
            r["pipeline"],
            str(r["evaluated_at"] or "-")[:19],
            r["result"] or "-",
            r["last_error"] or "-",
            str(r["fired_at"] or "-")[:19],
            str(r["next_due_at"] or "-")[:19],
            Text.assemble(paint(last["status"]), f" {last['run_id'] or ''}") if last else "-",
        )
    out.print(table)


def _status_row(row: dict[str, Any]) -> dict[str, Any]:
    """A status row from the team server, with its times as the local rows hold them."""
    times = ("evaluated_at", "fired_at", "next_due_at")
    return {k: datetime.fromisoformat(v) if k in times and v else v for k, v in row.items()}


@scheduler_app.command("fire")
def scheduler_fire(
    name: Annotated[str, typer.Argument(help="Trigger name.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded as the evidence).")] = "requested",
    log_level: OutcomeLogOpt = None,
    log_format: LogFormatOpt = "text",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fire a trigger now and run its pipeline (how manual triggers fire).

    A run that fails or cannot start is one ``error:`` line on stderr: exit 2 for bad input (e.g. a
    parameter the pipeline does not take), 1 for a failed run.
    """
    _log_when_asked(log_level, log_format)
    with open_workspace(workspace) as ws:
        scheduler = _scheduler(ws, None)
        report = scheduler.fire(name, reason)
    _report_runs(report, as_json, {"trigger": name})


def _report_runs(report: TickReport, as_json: bool, head: dict[str, Any]) -> None:
    """What ``fire`` and ``retry`` print: the runs, or one error line and the exit code."""
    runs = [{"run_id": r, "status": s} for r, s in report.runs]
    if as_json:
        print_json({**head, "runs": runs, "errors": report.errors})
    else:
        for r in runs:
            out.print(f"run {r['run_id']} {paint(r['status']).markup}")
    if report.failures:
        where, exc = next(iter(report.failures.items()))
        err.print(f"error: trigger {where}: {report.errors[where]}", markup=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code if isinstance(exc, MloopError) else 1)
    if any(r["status"] != "succeeded" for r in runs):
        raise typer.Exit(1)


@scheduler_app.command("events")
def scheduler_events(
    trigger: Annotated[str | None, typer.Option("--trigger", help="Only this trigger's events.")] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help="Only events in this status (pending, running, succeeded, failed, …)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many.")] = 50,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Trigger events, newest first: what fired, with what, and what became of it (a failed one can
    be run again with ``mloop scheduler retry EVENT_ID``)."""
    from mloop.entities import EVENT_STATUSES, TriggerEvent

    if trigger is not None:
        check_name(trigger, what="trigger name", field="trigger")
    if status is not None and status not in EVENT_STATUSES:
        raise ParameterError(
            f"--status {status!r} is not an event status ({', '.join(EVENT_STATUSES)})", field="status"
        )
    events = remote.read(
        server,
        token,
        workspace,
        lambda api: [
            remote.entity(TriggerEvent, e) for e in api.trigger_events(trigger, limit=limit, status=status)
        ],
        lambda ws: ws.triggers.events(trigger, limit=limit, status=status),
    )
    rows = [
        {
            "id": e.id,
            "trigger": e.trigger,
            "key": e.event_key,
            "kind": e.kind,
            "status": e.status,
            "attempts": e.attempts,
            "fired_at": e.fired_at,
            "run_id": e.run_id,
            "params": e.evidence.get("params", {}),
            "why": str(e.evidence.get("why") or e.evidence.get("reason") or ""),
        }
        for e in events
    ]
    if as_json:
        print_json(rows)
        return
    table = Table(title="trigger events")
    for col in ("id", "trigger", "status", "attempts", "fired", "run", "params", "why"):
        table.add_column(col, overflow="fold")
    for r in rows:
        params = ", ".join(f"{k}={_short(v)}" for k, v in r["params"].items()) or "-"
        table.add_row(r["id"], r["trigger"], paint(r["status"]), str(r["attempts"]),
                      str(r["fired_at"])[:19], r["run_id"] or "-", params, r["why"] or "-")  # fmt: skip
    out.print(table)


def _short(value: Any) -> str:
    """A parameter as an events row shows it: a list of files as its count and first one."""
    if isinstance(value, list):
        return f"[{plural(len(value), 'item')}: {value[0]}, …]" if len(value) > 1 else str(value)
    return str(value)


@scheduler_app.command("retry")
def scheduler_retry(
    event: Annotated[
        str, typer.Argument(help="The id of a failed or stopped event (mloop scheduler events).")
    ],
    log_level: OutcomeLogOpt = None,
    log_format: LogFormatOpt = "text",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a failed (or stopped) event again, with the parameters it fired with (a new_data event's
    files), once its cause is fixed. Exit 0 when the run succeeds, 1 when it fails, 2 for bad input."""
    _log_when_asked(log_level, log_format)
    given = event.strip()
    if not (given.isascii() and given.isalnum()):  # ids are ULIDs: nothing else can name one
        raise NotFoundError(f"no trigger event {event[:80]!r}", field="event")
    with open_workspace(workspace, create=False) as ws:
        report = _scheduler(ws, None).retry(given.upper())
    _report_runs(report, as_json, {"event": event, "trigger": report.events[0].trigger})


def backtest(
    data: Annotated[Path, typer.Argument(help="A time-ordered CSV or Parquet file.")],
    target: Annotated[str, typer.Option("--target", help="The label column.")],
    time_col: Annotated[str | None, typer.Option("--time-col", help="Sort by this column first.")] = None,
    initial: Annotated[float, typer.Option("--initial", help="Fraction that trains the first model.")] = 0.2,
    windows: Annotated[
        int, typer.Option("--windows", min=2, max=1000, help="Windows the rest is replayed in.")
    ] = 8,
    config: Annotated[Path | None, typer.Option("--config", help="mloop.toml with triggers/rollout.")] = None,
    estimator: Annotated[
        str, typer.Option("--estimator", help="'auto' or module:factory(features, task).")
    ] = "auto",
    metric: Annotated[
        str | None,
        typer.Option(
            "--metric",
            help="Judge degradation and promotion by this metric (default: ROC-AUC when one class "
            "dominates, accuracy for other classification, MAE for regression).",
        ),
    ] = None,
    http: Annotated[bool, typer.Option("--http", help="Through a real HTTP service on 127.0.0.1.")] = False,
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace",
            "-w",
            help="Replay in this workspace and leave it there for the other commands (default: a "
            "temporary one, removed afterwards; never $MLOOP_WORKSPACE, which a replay would fill).",
        ),
    ] = None,
    keep: Annotated[
        Path | None, typer.Option("--keep-workspace", hidden=True, help="The old name of --workspace.")
    ] = None,
    encoding: EncodingOpt = "utf-8",
    html: HtmlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replay DATA through the retraining loop; compare with a static model and retraining every window."""
    if keep is not None:
        err.print("note: --keep-workspace is now --workspace (the old name goes in the next release)")
        workspace = workspace or keep
    from mloop.backtesting.backtest import backtest as run_backtest
    from mloop.backtesting.report import backtest_html
    from mloop.orchestration.config import load_loop_config

    if not data.is_file():
        what = (
            "is a folder, not a file"
            if data.is_dir()
            else "is not a regular file (a device or a pipe: save the data to a file)"
            if data.exists()
            else "does not exist"
        )
        raise ParameterError(f"data file {data} {what}", field="data")
    if time_col is not None and time_col == target:
        raise ParameterError(f"--time-col {time_col!r} is the target: name the time column", field="time_col")
    if html is not None:  # before the replay, not after it
        if html.exists() and html.resolve() == data.resolve():
            raise ParameterError(f"--html {html} is the data file: name another file", field="html")
        check_output_file(html, "--html")
    if config is not None and not config.exists():  # a folder name with a typo would read as no policy
        raise ParameterError(f"--config {config} does not exist", field="config")
    if config is not None and config.is_dir() and not (config / "mloop.toml").exists():
        raise ParameterError(f"--config {config} is a folder without an mloop.toml", field="config")
    loop_config = load_loop_config(config) if config is not None else None
    with count_progress() as update:
        report = run_backtest(
            data,
            target,
            time_col=time_col,
            encoding=encoding,
            initial=initial,
            windows=windows,
            config=loop_config,
            estimator=estimator,
            metric=metric,
            http=http,
            workspace_dir=workspace,
            progress=update,
        )
    if html is not None:
        write_output(html, backtest_html(report), "--html")
    if as_json:
        print_json(report.to_dict())
        return
    metric_names = sorted({m for p in (report.loop, report.static, report.every_window) for m in p.metrics})
    table = Table(
        title=f"backtest: {report.rows:,} rows, target {report.target} "
        f"({report.task}, judged by {report.metric})"
    )
    table.add_column("policy")
    for m in metric_names:
        table.add_column(m, justify="right")
    table.add_column("retrains", justify="right")
    for name, p in (("loop", report.loop), ("static", report.static), ("every_window", report.every_window)):
        shown = (f"{p.metrics[m]:.4f}" if m in p.metrics else "–" for m in metric_names)
        failed = f" ({p.failed_runs} failed)" if p.failed_runs else ""
        table.add_row(name, *shown, f"{p.retrains}{failed}")
    out.print(table)
    out.print(f"model: {report.model}", markup=False)
    out.print("triggers: " + "; ".join(f"{t['name']} ({t['kind']})" for t in report.triggers), markup=False)
    for e in report.events:
        out.print(
            f"  window {e.window + 1}: {e.kind}{f' ({e.trigger})' if e.trigger else ''}: {e.detail}",
            markup=False,
        )
    if report.recovered is not None:
        out.print(_kept_line(report), markup=False)
    if report.refused_rows:
        replayed = report.rows - report.initial_rows
        out.print(
            f"{report.refused_rows:,} of {replayed:,} replayed rows were refused by the serving version "
            "(see the 'refused' events): the loop's figures count them as wrong answers",
            markup=False,
        )
    if html is not None:
        out.print(f"HTML report: {html}", markup=False)


def _kept_line(report: BacktestReport) -> str:
    """The share of every_window's gain the loop kept, with that gain and its noise: a share of a gain
    within two standard errors of zero says little."""
    from mloop.validation.model import LOWER_IS_BETTER

    m = report.metric
    sign = -1 if m in LOWER_IS_BETTER else 1
    gain = sign * (report.every_window.metrics[m] - report.static.metrics[m])
    kept = round((report.recovered or 0.0) * 100)  # an int: never "-0"
    moved = "lowered" if sign < 0 else "raised"
    line = f"the loop kept {kept}% of every_window's gain over static (every_window {moved} {m} by {gain:.4f}"
    se = report.gain_se.get("every_window")
    if se is None:
        return line + ")"
    noisy = ": within noise, the share says little" if gain < 2 * se else ""
    return f"{line} ± {se:.4f}{noisy})"
