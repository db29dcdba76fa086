"""``mloop pipelines``: deploy frozen pipeline versions, move their aliases, inspect them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from mloop.cli import remote
from mloop.cli.common import (
    JsonOpt,
    Table,
    WorkspaceOpt,
    alias_history_table,
    check_output_dir,
    err,
    open_workspace,
    out,
    parse_params,
    plural,
    print_json,
    writing,
)
from mloop.cli.remote import ServerOpt, TokenOpt
from mloop.entities import AliasEvent, PipelineVersion, jsonable
from mloop.errors import ConfigurationError, ParameterError

__all__ = ["build_app", "pipelines_app"]

pipelines_app = typer.Typer(help="Deployed pipeline versions (pipeline CD).", no_args_is_help=True)


def _event_line(e: AliasEvent, name: str) -> str:
    before = "no version" if e.from_version is None else f"v{e.from_version}"
    after = "no version" if e.to_version is None else f"v{e.to_version}"
    return f"{name}@{e.alias}: {before} → {after} ({e.action} by {e.who})"


@pipelines_app.command("deploy")
def deploy(
    pipeline_ref: Annotated[str, typer.Argument(metavar="FILE.py:PIPELINE", help="The pipeline to freeze.")],
    name: Annotated[str, typer.Option("--name", help="The deployed pipeline's name.")],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="key=value (repeatable).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Deploy code without a passing CI run.")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why (required with --force).")] = "",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Freeze a pipeline's code, params and environment as the next version of NAME (becomes staging)."""
    from mloop.cicd.versions import deploy_pipeline

    with open_workspace(workspace, create=True) as ws:
        done = deploy_pipeline(
            ws, pipeline_ref, name=name, params=parse_params(param or []), force=force, reason=reason
        )
    version = done.version
    for warning in done.warnings:
        err.print(f"warning: {warning}", markup=False, soft_wrap=True)
    if as_json:
        print_json({**jsonable(version), "created": done.created, "warnings": list(done.warnings)})
        return
    if not done.created:
        out.print(
            f"already deployed as {version.ref} (identical code, params and environment): nothing changed",
            markup=False,
        )
        return
    ci = "forced: " + (version.forced_reason or "") if version.forced_reason else "CI passed"
    commit = (
        "no commit"
        if version.git_commit is None
        else f"commit {version.git_commit[:12]}{' (dirty)' if version.git_dirty else ''}"
    )
    params = ", ".join(f"{k}={v!r}" for k, v in version.params.items()) or "defaults"
    out.print(
        f"deployed {version.ref} (staging): code {version.code_hash[:12]}, {commit}, params {params}, {ci}",
        markup=False,
    )


@pipelines_app.command("promote")
def promote(
    ref: Annotated[str, typer.Argument(metavar="NAME:VERSION")],
    alias: Annotated[str, typer.Option("--alias", help="The alias to move.")] = "production",
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the alias history).")] = "",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point an alias (production by default) at a version."""
    from mloop.cicd.versions import promote_pipeline

    with open_workspace(workspace) as ws:
        event = promote_pipeline(ws, ref, alias=alias, reason=reason)
    if as_json:
        print_json(event)
        return
    if event.action == "unchanged":
        out.print(f"{event.name}@{event.alias} is already v{event.to_version}: nothing moved", markup=False)
        return
    out.print(_event_line(event, event.name), markup=False)


@pipelines_app.command("rollback")
def rollback(
    name: str,
    alias: Annotated[
        str, typer.Option("--alias", help="The alias to give back to its previous holder.")
    ] = "production",
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the alias history).")] = "",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give an alias back to the version it held before."""
    from mloop.cicd.versions import rollback_pipeline

    with open_workspace(workspace) as ws:
        event = rollback_pipeline(ws, name, alias=alias, reason=reason)
    if as_json:
        print_json(event)
        return
    out.print(_event_line(event, name), markup=False)


@pipelines_app.command("list")
def list_(
    name: Annotated[str | None, typer.Argument(help="Only this pipeline's versions.")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Deployed pipeline versions, with their aliases."""
    from mloop.cicd.versions import deployed_versions

    def from_server(api: Any) -> tuple[list[PipelineVersion], dict[str, dict[str, int]]]:
        body = api.pipeline_versions(name)
        return [remote.entity(PipelineVersion, v) for v in body["versions"]], body["aliases"]

    versions, aliases = remote.read(
        server, token, workspace, from_server, lambda ws: deployed_versions(ws.pipelines, name)
    )
    if as_json:
        print_json({"versions": versions, "aliases": aliases})
        return
    table = Table(title=plural(len(versions), "pipeline version"), title_justify="left")
    for col in ("version", "aliases", "entry", "code", "commit", "ci", "deployed"):
        table.add_column(col)
    for v in versions:
        held = ", ".join(a for a, n in aliases[v.name].items() if n == v.version)
        ci = "forced" if v.forced_reason else ("passed" if v.ci and v.ci["passed"] else "-")
        table.add_row(
            v.ref,
            held,
            v.entry,
            v.code_hash[:12],
            (v.git_commit or "")[:12],
            ci,
            f"{v.created_at:%Y-%m-%d %H:%M:%S}",
        )
    out.print(table)


@pipelines_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(metavar="NAME | NAME:VERSION | NAME@ALIAS")],
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """One version: its code, params, environment and CI verdict."""
    from mloop.cicd.versions import find_version

    v = remote.read(
        server,
        token,
        workspace,
        lambda api: remote.entity(PipelineVersion, api.pipeline_version(ref)),
        lambda ws: find_version(ws.pipelines, ref),
    )
    if as_json:
        print_json(v)
        return
    out.print(
        f"[bold]{v.ref}[/] {escape(v.entry)} · deployed {v.created_at:%Y-%m-%d %H:%M:%S} "
        f"by {escape(v.created_by)}"
    )
    out.print(f"code {v.code_hash} · snapshot artifact {v.snapshot_artifact_id}", markup=False)
    out.print(
        f"commit {v.git_commit or '(not in git)'}{' (dirty tree)' if v.git_dirty else ''}", markup=False
    )
    out.print(f"python {v.python_version} · {len(v.packages)} packages pinned", markup=False)
    out.print(f"params {v.params}", markup=False)
    out.print(f"ci {'forced: ' + v.forced_reason if v.forced_reason else 'passed'}", markup=False)


@pipelines_app.command("history")
def history(
    name: str,
    alias: Annotated[str | None, typer.Option("--alias", help="Only this alias's moves.")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Every alias move of a pipeline, oldest first."""
    from mloop.cicd.versions import alias_history

    events = remote.read(
        server,
        token,
        workspace,
        lambda api: [remote.entity(AliasEvent, e) for e in api.pipeline_history(name, alias)],
        lambda ws: alias_history(ws.pipelines, name, alias),
    )
    if as_json:
        print_json(events)
        return
    out.print(alias_history_table(f"{name}: {plural(len(events), 'alias move')}", events))


build_app = typer.Typer(
    help="Build contexts (Dockerfile + pinned environment) for serving or pipelines.", no_args_is_help=True
)


def _docker(out_dir: Path, build: bool) -> None:
    """``docker build`` the context, or one line saying why not (no docker, or no daemon to talk to)."""
    if not build:
        return
    engine = shutil.which("docker")
    reachable = engine is not None and (
        subprocess.run([engine, "info"], capture_output=True, timeout=30, check=False).returncode == 0
    )
    if engine is None or not reachable:
        raise ConfigurationError(
            f"--build: no container daemon here ({'no docker' if engine is None else 'docker info failed'});"
            f" the context is written: build it where one runs with `docker build {out_dir}`",
            field="build",
        )
    done = subprocess.run([engine, "build", str(out_dir)], check=False)
    if done.returncode != 0:
        raise ConfigurationError(f"docker build {out_dir} failed (exit {done.returncode})", field="build")


def _check_context_dir(output: Path) -> None:
    """A build context goes to a new or empty folder, or over one mloop wrote before: its Dockerfile
    and requirements replaced a user's files of those names without a word."""
    check_output_dir(output, "--output")
    if output.is_dir() and any(output.iterdir()) and not (output / "app" / "entrypoint.py").is_file():
        raise ParameterError(
            f"--output {output}: the folder holds files and is not a build context mloop wrote: name a new "
            "or empty folder",
            field="output",
        )


@build_app.command("serve")
def build_serve(
    ref: Annotated[str, typer.Argument(metavar="NAME@ALIAS", help="The model version to serve.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The build context folder to write.")],
    build: Annotated[bool, typer.Option("--build", help="Also run docker build.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Write a build context serving a model version (Dockerfile, wheel, pinned requirements, model)."""
    from mloop.cicd.build import build_serve_context

    _check_context_dir(output)
    with open_workspace(workspace) as ws, writing(output, "--output"):
        build_serve_context(ws, ref, output)
    out.print(f"wrote build context {output} (serves {ref} on port 8080)", markup=False)
    _docker(output, build)


@build_app.command("pipeline")
def build_pipeline(
    ref: Annotated[str, typer.Argument(metavar="NAME[@ALIAS|:VERSION]", help="The deployed pipeline.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The build context folder to write.")],
    build: Annotated[bool, typer.Option("--build", help="Also run docker build.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Write a build context running a deployed pipeline version in its recorded environment."""
    from mloop.cicd.build import build_pipeline_context

    _check_context_dir(output)
    with open_workspace(workspace) as ws, writing(output, "--output"):
        build_pipeline_context(ws, ref, output)
    out.print(f"wrote build context {output} (runs {ref})", markup=False)
    _docker(output, build)
