"""Pipeline CD: freeze a pipeline into an immutable, numbered version; move its aliases.

A version holds the source snapshot of the pipeline's module and the project modules it imports
(packed and stored as a content-addressed artifact), its parameters, the git commit and whether the
tree was dirty, the Python version, the exact package versions of the environment, and the CI verdict
recorded for its code hash: code that has not passed ``mloop ci run`` deploys only with ``force`` and a
reason. A new version becomes ``staging``; ``production`` moves by promotion and rolls back by history.
"""

from __future__ import annotations

import ast
import importlib.metadata
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mloop.core import fingerprint
from mloop.core.sources import collect_sources, is_pipeline_decorator, pack_sources, sources_hash
from mloop.entities import AliasEvent, PipelineVersion, utcnow
from mloop.errors import ConflictError, ParameterError, PipelineLoadError
from mloop.workspace import Workspace, current_user

__all__ = ["deploy_pipeline", "environment", "parse_version_ref", "promote_pipeline", "rollback_pipeline"]

SNAPSHOT_TYPE = "pipeline_snapshot"


def environment() -> tuple[str, dict[str, str]]:
    """The Python version and ``{distribution: version}`` of every installed package."""
    packages: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages[name] = dist.version
    return platform.python_version(), dict(sorted(packages.items(), key=lambda kv: kv[0].lower()))


def _git_state(root: Path) -> tuple[str | None, bool | None]:
    commit = fingerprint._git(root, "rev-parse", "HEAD")
    if not commit:
        return None, None
    return commit, bool(fingerprint._git(root, "status", "--porcelain", "--", "."))


def _pipeline_params(path: Path, function: str) -> list[str]:
    """The parameter names of the ``@pipeline`` function ``function`` defined in ``path``."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise PipelineLoadError(f"{path} is not valid Python: {exc}", field="pipeline") from exc
    found = {
        n.name: n
        for n in tree.body
        if isinstance(n, ast.FunctionDef) and any(map(is_pipeline_decorator, n.decorator_list))
    }
    if function not in found:
        raise PipelineLoadError(
            f"{path.name} has no pipeline {function!r} (pipelines found: {sorted(found) or 'none'})",
            field="pipeline",
        )
    args = found[function].args
    return [a.arg for a in [*args.args, *args.kwonlyargs]]


def parse_version_ref(ref: str) -> tuple[str, int]:
    """``NAME:VERSION`` → (name, version); ParameterError otherwise."""
    name, _, version = ref.rpartition(":")
    if not name or not version.isdigit() or int(version) < 1:
        raise ParameterError(
            f"pipeline version {ref!r}: expected NAME:VERSION with VERSION ≥ 1", field="version"
        )
    return name, int(version)


def deploy_pipeline(
    workspace: Workspace,
    ref: str,
    *,
    name: str,
    params: Mapping[str, Any] | None = None,
    force: bool = False,
    reason: str = "",
    who: str | None = None,
) -> PipelineVersion:
    """Freeze the pipeline ``file.py:function`` as the next version of ``name`` and make it ``staging``."""
    file_part, sep, function = ref.rpartition(":")
    if not sep or not file_part.endswith(".py"):
        raise PipelineLoadError(f"{ref!r} is not of the form path/to/file.py:pipeline_name", field="pipeline")
    path = Path(file_part).expanduser().resolve()
    if not path.is_file():
        raise PipelineLoadError(f"pipeline file {file_part} does not exist", field="pipeline")
    names = _pipeline_params(path, function)  # read from the source: deploying imports nothing
    params = dict(params or {})
    for key in params:
        if key not in names:
            raise ParameterError(
                f"unknown parameter {key!r} for pipeline {function!r} (parameters: {sorted(names)})",
                field=key,
            )
    root, files = collect_sources(path)
    code_hash = sources_hash(files)
    store = workspace.pipelines
    record = store.get_ci(code_hash)
    if record is None or not record.passed:
        why = "has no recorded `mloop ci run`" if record is None else "failed `mloop ci run`"
        if not force:
            raise ConflictError(
                f"{ref} (code {code_hash[:12]}) {why}; run `mloop ci run --workspace …` first, "
                "or deploy with --force and a --reason",
                field="ci",
            )
        if not reason.strip():
            raise ParameterError("deploying without passing CI (--force) needs a --reason", field="reason")
    data = pack_sources(files)
    artifact = workspace.store_bytes(data, type=SNAPSHOT_TYPE, python_type="bytes")
    commit, dirty = _git_state(root)
    python, packages = environment()
    ci = (
        None
        if record is None
        else {
            "passed": record.passed,
            "recorded_at": record.recorded_at.isoformat(),
            "checks": record.report.get("checks", []),
        }
    )
    who = who or current_user()
    version = store.create_version(
        PipelineVersion(
            id="",
            name=name,
            version=0,
            entry=f"{path.relative_to(root).as_posix()}:{function}",
            snapshot_artifact_id=artifact.id,
            snapshot_digest=artifact.digest,
            code_hash=code_hash,
            params=params,  # coerced by the pipeline's types when a run binds them
            git_commit=commit,
            git_dirty=dirty,
            python_version=python,
            packages=packages,
            ci=ci,
            forced_reason=reason.strip() if force and (record is None or not record.passed) else None,
            created_at=utcnow(),
            created_by=who,
        )
    )
    store.move_alias(name, "staging", version.version, action="promote", who=who, reason="deployed")
    return version


def promote_pipeline(
    workspace: Workspace, ref: str, *, alias: str = "production", reason: str = "", who: str | None = None
) -> AliasEvent:
    """Point ``alias`` of the pipeline at version ``NAME:VERSION``."""
    name, version = parse_version_ref(ref)
    return workspace.pipelines.move_alias(
        name, alias, version, action="promote", who=who or current_user(), reason=reason
    )


def rollback_pipeline(
    workspace: Workspace, name: str, *, alias: str = "production", reason: str = "", who: str | None = None
) -> AliasEvent:
    """Give ``alias`` back to the version it pointed at before its current one."""
    return workspace.pipelines.move_alias(
        name, alias, None, action="rollback", who=who or current_user(), reason=reason
    )
