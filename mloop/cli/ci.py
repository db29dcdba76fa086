"""``mloop ci``: run a project's pipeline CI, and write the CI workflow that runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mloop.cli.common import (
    JsonOpt,
    Table,
    WorkspaceOpt,
    check_output_file,
    check_workspace_dir,
    duration,
    err,
    open_workspace,
    out,
    print_json,
    styled,
)
from mloop.errors import ParameterError

__all__ = ["ci_app"]

ci_app = typer.Typer(
    help="Pipeline CI: tests, smoke runs and model checks of a project.", no_args_is_help=True
)

_STYLE = {"passed": "green", "failed": "red", "skipped": "yellow"}


@ci_app.command("run")
def run(
    path: Annotated[Path, typer.Argument(help="The project folder.")] = Path("."),
    pipeline: Annotated[
        list[str] | None,
        typer.Option("--pipeline", help="Only this pipeline (name or file.py:name; repeatable)."),
    ] = None,
    rows: Annotated[int | None, typer.Option(min=1, help="Sample rows for the smoke runs.")] = None,
    no_tests: Annotated[bool, typer.Option("--no-tests", help="Skip the project's pytest suite.")] = False,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML report here.")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the project's tests, smoke-run each pipeline on a sample and check it; exit 1 on a failure.

    With --workspace the verdict is recorded for the code hash of each pipeline's sources (what
    `mloop pipelines deploy` requires); the smoke runs always use a throw-away workspace.
    """
    from mloop.cicd.ci import Check, ci_run, record_ci

    if junit is not None:  # the checks take a while: refuse where their results cannot go first
        check_output_file(junit, "--junit")
    check_workspace_dir(workspace)

    def show(c: Check) -> None:
        if not as_json:
            err.print(
                f"  {c.status:>7}  {c.pipeline}: {c.check}" + (f" [{c.step}]" if c.step else ""), markup=False
            )

    report = ci_run(path, pipelines=pipeline or (), rows=rows, tests=not no_tests, on_check=show)
    if junit is not None:
        junit.write_text(report.junit_xml(), encoding="utf-8")
    if workspace is not None:
        with open_workspace(workspace, create=True) as ws:
            record_ci(ws.pipelines, report)
    if as_json:
        print_json(report.to_dict())
    else:
        table = Table(title=f"mloop ci: {path} ({duration(report.seconds)})", title_justify="left")
        for col in ("pipeline", "check", "status", "step", "value / detail"):
            table.add_column(col)
        for c in report.checks:
            table.add_row(
                c.pipeline, c.check, styled(c.status, _STYLE[c.status]), c.step or "", c.value or c.detail
            )
        out.print(table)
    for c in report.failures:
        err.print(f"error: {c.message}", markup=False, soft_wrap=True)
    if not report.passed:
        raise typer.Exit(1)


@ci_app.command("init")
def init(
    path: Annotated[Path, typer.Argument(help="The project folder.")] = Path("."),
    github: Annotated[bool, typer.Option("--github", help="Write .github/workflows/mloop-ci.yml.")] = False,
    gitlab: Annotated[bool, typer.Option("--gitlab", help="Write .gitlab-ci.yml.")] = False,
    install: Annotated[
        str | None,
        typer.Option(
            help="What the workflow pip-installs (default: the project's requirements.txt / pyproject.toml"
            " dependencies, then mloop and pytest)."
        ),
    ] = None,
    python: Annotated[str, typer.Option(help="Python version of the CI job.")] = "3.11",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing workflow.")] = False,
) -> None:
    """Write a CI workflow that runs `mloop ci run` on the project."""
    from mloop.cicd.workflows import write_gitignore, write_workflow

    if github == gitlab:
        raise ParameterError("give exactly one of --github or --gitlab", field="github")
    if not path.is_dir():
        raise ParameterError(f"project folder {path} does not exist", field="path")
    written = write_workflow(
        path, "github" if github else "gitlab", install=install, python=python, force=force
    )
    out.print(f"wrote {written}", markup=False)
    ignore = write_gitignore(path)
    if ignore is not None:
        out.print(f"wrote {ignore} (keeps the .mloop/ workspace and mloop-ci.xml out of git)", markup=False)
