"""``mloop serve``: run the prediction service for one registered model under uvicorn."""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Annotated

import typer

from mloop.cli.common import WorkspaceOpt, check_port_free, err, open_workspace, plural
from mloop.cli.logs import configure_logging
from mloop.errors import ArtifactCorruptedError, ConfigurationError, MloopError, ParameterError
from mloop.names import decimal
from mloop.serving.config import BATCH_ROWS_MAX
from mloop.workspace import Workspace, find_workspace_dir

if TYPE_CHECKING:
    from mloop.serving.config import ServeConfig

PARENT_ENV = "MLOOP_PARENT_PID"  # a service stops once this process (its launcher) is gone
_watching = threading.Event()


def serve(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: Annotated[str, typer.Option("--alias", help="Alias to serve.")] = "production",
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Worker processes.")] = 1,
    canary_fraction: Annotated[
        float | None,
        typer.Option(
            "--canary-fraction",
            min=0.0,
            max=1.0,
            help="Share of traffic for the canary (default: the model's [[rollout]] in mloop.toml, else 0).",
        ),
    ] = None,
    shadow: Annotated[
        str | None, typer.Option("--shadow", help="Alias that predicts on a copy of traffic.")
    ] = None,
    out_of_domain: Annotated[str, typer.Option("--out-of-domain", help="count or reject.")] = "count",
    max_batch_rows: Annotated[
        int,
        typer.Option("--max-batch-rows", min=1, max=BATCH_ROWS_MAX, help="Most rows one request may carry."),
    ] = 1000,
    batch_rows: Annotated[
        int | None,
        typer.Option(
            "--batch-rows",
            min=1,
            max=BATCH_ROWS_MAX,
            help="Concurrent requests are answered by one model call of up to this many rows; 1 turns"
            " batching off (default: batch_rows in mloop.toml's [serve] table, else 64).",
        ),
    ] = None,
    flush_interval: Annotated[
        float, typer.Option("--flush-interval", min=0.01, max=3600.0, help="Prediction log flush, s.")
    ] = 1.0,
    no_log: Annotated[bool, typer.Option("--no-log", help="Do not keep a prediction log.")] = False,
    compiled: Annotated[
        bool,
        typer.Option(
            "--compiled/--no-compiled",
            help="Serve a version's compiled ONNX form when it has one (proven equal at registration).",
        ),
    ] = True,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", min=1024, help="Largest request body accepted (413 above).")
    ] = 8 * 1024 * 1024,
    auth: Annotated[
        bool | None,
        typer.Option(
            "--auth/--no-auth",
            help="POST /feedback needs a feedback, editor or admin token (`mloop server token create`)."
            " Default: on, unless --host is a loopback address and --auth-predictions is not given.",
        ),
    ] = None,
    auth_predictions: Annotated[
        bool, typer.Option("--auth-predictions", help="Prediction routes need a token too, and /feedback.")
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
    log_format: Annotated[str, typer.Option("--log-format", help="text or json (to stderr).")] = "text",
    workspace: WorkspaceOpt = None,
) -> None:
    """Serve NAME@ALIAS over HTTP (Open Inference Protocol v2 and /predict); follows alias moves."""
    try:
        import uvicorn  # noqa: F401  (only: is the serve extra installed)
    except ImportError as exc:
        raise ConfigurationError("serving needs the serve extra: pip install 'mloop[serve]'") from exc
    from mloop.serving.config import ServeConfig, serve_defaults
    from mloop.serving.server import header_timeout_protocol, run_foreground

    configure_logging(log_level, log_format)
    if out_of_domain not in ("count", "reject"):
        raise ParameterError(
            f"--out-of-domain must be count or reject, got {out_of_domain!r}", field="out_of_domain"
        )
    with open_workspace(workspace) as ws:
        # fail now, with a clear error, not inside a worker: no such alias, or a corrupted model
        version = ws.model_version(f"{name}@{alias}")
        art = ws.metadata.get_artifact(version.artifact_id)
        if not ws.artifacts.verify(art.digest, art.size):
            raise ArtifactCorruptedError(
                f"model {name} v{version.version} ({name}@{alias}): its artifact {art.id} is corrupted"
                " or missing (register it again, or move the alias to another version)",
                field="model",
            )
        if shadow is not None:
            if shadow == alias:
                raise ParameterError(
                    f"--shadow {shadow!r} is the alias being served: a shadow must be another alias",
                    field="shadow",
                )
            if not any(shadow in v.aliases for v in ws.registry.versions(name)):
                err.print(
                    f"warning: model {name!r} has no alias {shadow!r} yet: "
                    "shadow traffic starts once it is set",
                    markup=False,
                )
        root = ws.root
        if canary_fraction is None:  # the rollout policy decides how much traffic a canary gets
            from mloop.orchestration.config import load_loop_config

            policy = load_loop_config(ws.config_dir).policy(name)
            canary_fraction = policy.canary_fraction if policy else 0.0
        # mloop.toml's [serve] table, then what the command line says
        options = {
            **serve_defaults(ws.config_dir),
            **({} if batch_rows is None else {"batch_rows": batch_rows}),
        }
        if workers > 1:
            # one worker loads the model before uvicorn starts it (app_in_worker); several start in
            # uvicorn's processes, where a version that does not load is a traceback per worker
            _check_loads(ws, ServeConfig(model=name, alias=alias, compiled=compiled, log_predictions=False))
    config = ServeConfig(
        model=name,
        alias=alias,
        canary_fraction=canary_fraction,
        shadow_alias=shadow,
        out_of_domain=out_of_domain,
        max_batch_rows=max_batch_rows,
        flush_interval_s=flush_interval,
        log_predictions=not no_log,
        compiled=compiled,
        max_body_bytes=max_body_bytes,
        feedback_auth=_feedback_auth(host, auth, auth_predictions),
        predict_auth=auth_predictions,
        **options,
    )
    check_port_free(host, port)
    os.environ["MLOOP_LOG_LEVEL"], os.environ["MLOOP_LOG_FORMAT"] = log_level, log_format
    # one-row predictions are what a service does: OpenMP/BLAS thread pools only add spinning
    # (HistGradientBoosting: p99 381 ms → 6 ms on a busy 2-core machine); the user's setting wins
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ["MLOOP_SERVE_CONFIG"] = json.dumps(dataclasses.asdict(config))
    os.environ["MLOOP_WORKSPACE"] = str(root or find_workspace_dir(workspace))
    exit_with_parent()  # whoever started this service (e.g. a scheduler's load test), if it said so
    os.environ[_ONE_WORKER] = "1" if workers == 1 else "0"
    if workers > 1:  # each worker stops once this supervisor is gone, even by SIGKILL
        os.environ[PARENT_ENV] = str(os.getpid())
        # prometheus_client's multiprocess mode: every worker's metrics in files of this folder, so
        # any worker's /metrics answers for all of them and counters never go back between scrapes
        metrics_dir = tempfile.mkdtemp(prefix="mloop-metrics-")
        atexit.register(shutil.rmtree, metrics_dir, True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    started = f"serving {name}@{alias} on http://{host}:{port} ({plural(workers, 'worker')})"
    if log_format.lower() == "json":  # every stderr line is then a JSON object
        logging.getLogger("mloop.serving").info(
            started, extra={"url": f"http://{host}:{port}", "model": name, "alias": alias, "workers": workers}
        )
    else:
        err.print(started, markup=False)
    run_foreground(
        "mloop.cli.serve:app_in_worker",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=5,
        http=header_timeout_protocol(),  # half-sent headers are cut off after 10 s
        h11_max_incomplete_event_size=64 * 1024,  # h11 only; the httptools protocol above refuses them too
    )


def app_in_worker() -> object:
    """The app in each uvicorn worker process, with the logging ``mloop serve`` was given."""
    from mloop.serving.app import app_from_env

    configure_logging(os.environ.get("MLOOP_LOG_LEVEL", "info"), os.environ.get("MLOOP_LOG_FORMAT", "text"))
    exit_with_parent()
    if os.environ.get("OMP_NUM_THREADS") == "1":
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)  # also for libraries loaded before the variable was read
    app = app_from_env()
    if os.environ.get(_ONE_WORKER) == "1":
        # the one worker is this process: load the model now, so a version that does not load is one
        # error line and exit code, not uvicorn's startup traceback (the lifespan finds it loaded)
        try:
            app.state.service.refresh()
        except MloopError as exc:
            err.print(f"error: {exc.message}", markup=False)
            raise SystemExit(exc.exit_code) from None
    return app


_ONE_WORKER = "MLOOP_SERVE_ONE_WORKER"


def _check_loads(ws: Workspace, config: ServeConfig) -> None:
    """Load the served version and answer its smoke test once, here (MloopError when it cannot)."""
    from mloop.serving.service import ModelService

    service = ModelService(ws, config)
    try:
        service.refresh()
    finally:
        service.stop()


def exit_with_parent() -> None:
    """Stop, as on SIGTERM (the prediction log is flushed), once the process named by
    ``MLOOP_PARENT_PID`` is no longer this one's parent. Without it a worker whose ``mloop serve``
    was SIGKILLed, or a candidate's service whose scheduler was, kept serving and holding the port
    with nobody left to stop it."""
    parent = decimal(os.environ.get(PARENT_ENV, ""), 18)
    if parent is None or os.getppid() != parent or _watching.is_set():
        return
    _watching.set()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        log = logging.getLogger("mloop.serving")
        log.warning("the process that started this service (pid %d) is gone: stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="mloop-parent-watch", daemon=True).start()


def _feedback_auth(host: str, auth: bool | None, auth_predictions: bool) -> bool:
    """Whether POST /feedback needs a token: as ``--auth`` says, else off the loopback address and
    whenever predictions need one (labels drive retraining: they were left open while /predict was
    closed). ``--no-auth --auth-predictions`` is refused for the same reason."""
    if auth is False and auth_predictions:
        raise ParameterError(
            "--auth-predictions with --no-auth would leave POST /feedback, whose labels drive "
            "retraining, open while predictions need a token: drop --no-auth",
            field="auth_predictions",
        )
    return auth if auth is not None else (auth_predictions or not _loopback(host))


def _loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: not known to be local
        return False
