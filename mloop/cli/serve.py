"""``mloop serve``: run the prediction service for one registered model under uvicorn."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from mloop.cli.common import WorkspaceOpt, err, open_workspace
from mloop.errors import ConfigurationError, ParameterError
from mloop.workspace import find_workspace_dir


def serve(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: Annotated[str, typer.Option("--alias", help="Alias to serve.")] = "production",
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8080,
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
    max_batch_rows: Annotated[int, typer.Option("--max-batch-rows", min=1)] = 1000,
    flush_interval: Annotated[
        float, typer.Option("--flush-interval", min=0.01, help="Prediction log flush, s.")
    ] = 1.0,
    no_log: Annotated[bool, typer.Option("--no-log", help="Do not keep a prediction log.")] = False,
    compiled: Annotated[
        bool,
        typer.Option(
            "--compiled/--no-compiled",
            help="Serve a version's compiled ONNX form when it has one (proven equal at registration).",
        ),
    ] = True,
    workspace: WorkspaceOpt = None,
) -> None:
    """Serve NAME@ALIAS over HTTP (Open Inference Protocol v2 and /predict); follows alias moves."""
    try:
        import uvicorn
    except ImportError as exc:
        raise ConfigurationError("serving needs the serve extra: pip install 'mloop[serve]'") from exc
    from mloop.serving.app import ServeConfig

    if out_of_domain not in ("count", "reject"):
        raise ParameterError(
            f"--out-of-domain must be count or reject, got {out_of_domain!r}", field="out_of_domain"
        )
    with open_workspace(workspace) as ws:
        ws.model_version(f"{name}@{alias}")  # fail now, with a clear error, not inside a worker
        root = ws.root
        if canary_fraction is None:  # the rollout policy decides how much traffic a canary gets
            from mloop.orchestration.config import load_loop_config

            policy = load_loop_config((root or Path.cwd()).parent).policy(name)
            canary_fraction = policy.canary_fraction if policy else 0.0
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
    )
    os.environ["MLOOP_SERVE_CONFIG"] = json.dumps(dataclasses.asdict(config))
    os.environ["MLOOP_WORKSPACE"] = str(root or find_workspace_dir(workspace))
    err.print(f"serving {name}@{alias} on http://{host}:{port} ({workers} worker(s))", markup=False)
    uvicorn.run(
        "mloop.serving.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )
