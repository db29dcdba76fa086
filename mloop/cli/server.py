"""``mloop server``: the team server (``start``) and its tokens (``token create|list|revoke``)."""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Annotated

import typer

from mloop.auth import ROLES, create_token
from mloop.cli import remote
from mloop.cli.common import (
    JsonOpt,
    Table,
    WorkspaceOpt,
    check_port_free,
    err,
    open_workspace,
    out,
    plural,
    print_json,
)
from mloop.cli.logs import configure_logging
from mloop.cli.remote import ServerOpt, TokenOpt
from mloop.entities import ApiToken
from mloop.errors import ConfigurationError, ParameterError
from mloop.workspace import current_user, find_workspace_dir

__all__ = ["server_app"]

server_app = typer.Typer(help="The team server: REST API and web UI over a workspace.", no_args_is_help=True)
token_app = typer.Typer(help="Tokens of the team server and the prediction service.", no_args_is_help=True)
server_app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option("--name", help="Who or what holds the token (recorded in the audit).")],
    role: Annotated[str, typer.Option("--role", help="viewer, feedback, editor or admin.")] = "viewer",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token; its secret is printed once and only its sha256 is stored."""
    if role not in ROLES:
        raise ParameterError(f"--role must be one of {', '.join(ROLES)}, got {role!r}", field="role")
    with open_workspace(workspace, create=True) as ws:
        secret, token = create_token(ws.tokens, name, role, created_by=current_user())
    if as_json:
        print_json({"token": secret, "id": token.id, "name": token.name, "role": token.role})
        return
    err.print(f"token {token.id} ({token.name}, {token.role}); shown once, keep it safe:", markup=False)
    out.print(secret, markup=False)


@token_app.command("list")
def token_list(
    workspace: WorkspaceOpt = None, as_json: JsonOpt = False, server: ServerOpt = None, token: TokenOpt = None
) -> None:
    """List tokens (never their secrets); from a team server, with an admin's token."""
    tokens = remote.read(
        server,
        token,
        workspace,
        lambda api: [remote.entity(ApiToken, t) for t in api.tokens()],
        lambda ws: ws.tokens.list_tokens(),
    )
    if as_json:
        print_json(tokens)
        return
    table = Table(title=plural(len(tokens), "token"), title_justify="left")
    for col in ("id", "name", "role", "created", "by", "revoked"):
        table.add_column(col)
    for t in tokens:
        revoked = f"{t.revoked_at:%Y-%m-%d %H:%M:%S}" if t.revoked_at else ""
        table.add_row(t.id, t.name, t.role, f"{t.created_at:%Y-%m-%d %H:%M:%S}", t.created_by, revoked)
    out.print(table)


@token_app.command("revoke")
def token_revoke(token_id: str, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Revoke a token: a running team server refuses it within a second (each of its processes
    trusts a token it has read for that long)."""
    with open_workspace(workspace) as ws:
        token = ws.tokens.revoke_token(token_id)
        ws.tokens.record_audit(
            current_user(), "token.revoke", f"token:{token.id}", details={"name": token.name}
        )
    if as_json:
        print_json(token)
        return
    out.print(f"revoked token {token.id} ({token.name})", markup=False)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@server_app.command("start")
def start(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8765,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Worker processes.")] = 1,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve without tokens (only on a loopback address).")
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
    log_format: Annotated[str, typer.Option("--log-format", help="text or json (to stderr).")] = "text",
    workspace: WorkspaceOpt = None,
) -> None:
    """Serve the REST API (/api/v1, OpenAPI at /docs) and the web UI (/) over a workspace.

    A daemon: what it prints is its log on stderr, one JSON object per line with --log-format json."""
    try:
        import uvicorn  # noqa: F401  (only: is the serve extra installed)
    except ImportError as exc:
        raise ConfigurationError("the team server needs the serve extra: pip install 'mloop[serve]'") from exc
    from mloop.serving.server import header_timeout_protocol, run_foreground

    configure_logging(log_level, log_format)  # a bad value is one error line, before anything starts
    if no_auth and not is_loopback(host):
        raise ParameterError(
            f"--no-auth is only allowed on a loopback address (127.0.0.1, ::1, localhost), not {host!r}",
            field="no_auth",
        )
    with open_workspace(workspace) as ws:  # fail now, with a clear error, not inside a worker
        root = ws.root
    check_port_free(host, port)
    os.environ["MLOOP_WORKSPACE"] = str(root or find_workspace_dir(workspace))
    os.environ["MLOOP_SERVER_AUTH"] = "0" if no_auth else "1"
    os.environ["MLOOP_LOG_LEVEL"], os.environ["MLOOP_LOG_FORMAT"] = log_level, log_format
    mode = "WITHOUT authentication" if no_auth else "tokens required"
    started = f"team server on http://{host}:{port} ({plural(workers, 'worker')}, {mode})"
    if log_format.lower() == "json":  # every stderr line is then a JSON object
        logging.getLogger("mloop.server").info(
            started, extra={"url": f"http://{host}:{port}", "workers": workers, "auth": not no_auth}
        )
    else:
        err.print(started, markup=False)
    run_foreground(
        "mloop.cli.server:server_in_worker",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,  # access lines carry query strings; tokens only travel in headers, but be safe
        timeout_keep_alive=5,
        http=header_timeout_protocol(),  # half-sent headers are cut off after 10 s
        h11_max_incomplete_event_size=64 * 1024,
    )


def server_in_worker() -> object:
    """The team server's app in each uvicorn worker process, with the logging ``server start`` was given."""
    from mloop.server.app import app_from_env

    configure_logging(os.environ.get("MLOOP_LOG_LEVEL", "info"), os.environ.get("MLOOP_LOG_FORMAT", "text"))
    return app_from_env()
