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
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mloop.core import fingerprint
from mloop.core.pipeline import coerce_param
from mloop.core.sources import (
    collect_sources,
    is_pipeline_decorator,
    outside_modules,
    pack_sources,
    sources_hash,
)
from mloop.entities import AliasEvent, PipelineVersion, utcnow
from mloop.errors import ConflictError, ParameterError, PipelineLoadError
from mloop.names import decimal
from mloop.stores.base import PipelineStore
from mloop.workspace import Workspace, current_user

__all__ = [
    "Deployment",
    "check_params",
    "deploy_pipeline",
    "environment",
    "parse_version_ref",
    "promote_pipeline",
    "rollback_pipeline",
]

SNAPSHOT_TYPE = "pipeline_snapshot"


@dataclass(frozen=True)
class Deployment:
    """What a deploy did: the version, whether it is new (False: an identical version of the name
    existed and is returned unchanged), and warnings worth a line each (e.g. no git commit)."""

    version: PipelineVersion
    created: bool
    warnings: tuple[str, ...] = ()


def _same(a: PipelineVersion, b: PipelineVersion) -> bool:
    """Identical code, entry, params and environment: deploying ``b`` again would change nothing."""
    return (a.code_hash, a.entry, a.params, a.python_version, a.packages) == (
        b.code_hash,
        b.entry,
        b.params,
        b.python_version,
        b.packages,
    )


def environment() -> tuple[str, dict[str, str]]:
    """The Python version and ``{distribution: version}`` of every installed package."""
    packages: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages[name] = dist.version
    return platform.python_version(), dict(sorted(packages.items(), key=lambda kv: kv[0].lower()))


def _git_state(root: Path, workspace: Path | None) -> tuple[str | None, bool | None]:
    """The commit checked out around ``root`` and whether the tree under it has changes; the
    workspace's own folder (often ``.mloop/`` inside the project) is state, not a change."""
    spec = ["."]
    if workspace is not None and workspace.resolve().is_relative_to(root):
        spec.append(f":(exclude){workspace.resolve().relative_to(root).as_posix()}")
    return fingerprint.git_state(root, *spec)


# the annotations a parameter's value is checked against without importing the pipeline's module
_TYPES: dict[str, Any] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "list": list,
    "dict": dict,
    "Path": Path,
    "pathlib.Path": Path,
    "Any": typing.Any,
    "typing.Any": typing.Any,
}


def _annotation(node: ast.expr | None) -> Any:
    """The type an annotation names (``int``, ``Path | None``, ``Optional[float]``…), read from the
    syntax tree; None (the value is not checked) for anything else."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a quoted annotation
        try:
            return _annotation(ast.parse(node.value, mode="eval").body)
        except SyntaxError:
            return None
    if isinstance(node, ast.Constant) and node.value is None:
        return type(None)
    if isinstance(node, ast.Name | ast.Attribute):
        return _TYPES.get(ast.unparse(node))
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("list", "dict"):
        return _TYPES[ast.unparse(node.value)]  # the container is checked, not its items
    members: list[Any] = []
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        members = [_annotation(node.left), _annotation(node.right)]
    elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("Optional", "typing.Optional"):
        members = [_annotation(node.slice), type(None)]
    elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("Union", "typing.Union"):
        elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        members = [_annotation(e) for e in elts]
    if not members or any(m is None for m in members):
        return None
    return typing.Union[tuple(members)]  # noqa: UP007 (built from parts)


def _pipeline_hints(path: Path, function: str) -> dict[str, Any]:
    """``{parameter: annotated type or None}`` of the ``@pipeline`` function ``function`` in ``path``,
    read from the source (deploying imports nothing)."""
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
    return {a.arg: _annotation(a.annotation) for a in [*args.args, *args.kwonlyargs]}


def _is_path(hint: Any) -> bool:
    return hint is Path or (
        typing.get_origin(hint) in (typing.Union, types.UnionType) and Path in typing.get_args(hint)
    )


def check_params(path: Path, function: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` checked against the pipeline's signature as ``mloop run`` checks them (known names,
    values of the annotated types, finite JSON numbers, files that exist) and coerced to those types."""
    hints = _pipeline_hints(path, function)
    typed: dict[str, Any] = {}
    for key, value in params.items():
        if key not in hints:
            raise ParameterError(
                f"unknown parameter {key!r} for pipeline {function!r} (parameters: {sorted(hints)})",
                field=key,
            )
        typed[key] = coerce_param(key, value, hints[key])
        if _is_path(hints[key]) and typed[key] is not None:
            file = Path(typed[key]).expanduser()
            if not file.exists():
                raise ParameterError(f"parameter {key!r}: file {file.resolve()} does not exist", field=key)
    return typed


def parse_version_ref(ref: str) -> tuple[str, int]:
    """``NAME:VERSION`` → (name, version); ParameterError otherwise."""
    name, _, version = ref.rpartition(":")
    number = decimal(version)
    if not name or number is None or number < 1:
        raise ParameterError(
            f"pipeline version {ref[:80]!r}: expected NAME:VERSION with VERSION from 1 to 999999999",
            field="version",
        )
    return name, number


def deploy_pipeline(
    workspace: Workspace,
    ref: str,
    *,
    name: str,
    params: Mapping[str, Any] | None = None,
    force: bool = False,
    reason: str = "",
    who: str | None = None,
) -> Deployment:
    """Freeze the pipeline ``file.py:function`` as the next version of ``name`` and make it ``staging``.

    Idempotent: when a version of ``name`` already has identical code, params and environment, it is
    returned unchanged (``created`` False) and no alias moves.
    """
    file_part, sep, function = ref.rpartition(":")
    if not sep or not file_part.endswith(".py"):
        raise PipelineLoadError(f"{ref!r} is not of the form path/to/file.py:pipeline_name", field="pipeline")
    path = Path(file_part).expanduser().resolve()
    if not path.is_file():
        raise PipelineLoadError(f"pipeline file {file_part} does not exist", field="pipeline")
    hints = _pipeline_hints(path, function)
    params = check_params(path, function, params or {})
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
    python, packages = environment()
    entry = f"{path.relative_to(root).as_posix()}:{function}"
    data = pack_sources(files)
    artifact = workspace.store_bytes(data, type=SNAPSHOT_TYPE, python_type="bytes")
    digest = artifact.digest
    commit, dirty = _git_state(root, workspace.root)
    ci = (
        None
        if record is None
        else {
            "passed": record.passed,
            "recorded_at": record.recorded_at.isoformat(),
            "checks": record.report.get("checks", []),
            "smoke_params": record.report.get("smoke_params", {}).get(record.pipeline, {}),
        }
    )
    warnings = [] if ci is None else _untested_params(params, ci["smoke_params"], hints)
    if commit is None:
        warnings.append("not in a git repository: the version records no commit")
    outside = outside_modules(root, files)
    if outside:  # warned, not frozen: they are no part of the project's commit either
        named = ", ".join(f"{m} ({where})" for m, where in outside.items())
        warnings.append(
            f"not frozen: imported from outside the project and not an installed package: {named}; "
            "the version runs whatever they hold when it runs (move them into the project or install them)"
        )
    who = who or current_user()
    draft = PipelineVersion(
        id="",
        name=name,
        version=0,
        entry=entry,
        snapshot_artifact_id=artifact.id,
        snapshot_digest=digest,
        code_hash=code_hash,
        params=params,  # typed: checked and coerced as a run binds them
        git_commit=commit,
        git_dirty=dirty,
        python_version=python,
        packages=packages,
        ci=ci,
        forced_reason=reason.strip() if force and (record is None or not record.passed) else None,
        created_at=utcnow(),
        created_by=who,
    )
    version, created = store.create_or_reuse(draft, lambda v: _same(v, draft))
    if not created:
        return Deployment(version, created=False, warnings=tuple(warnings))
    store.move_alias(name, "staging", version.version, action="promote", who=who, reason="deployed")
    return Deployment(version, created=True, warnings=tuple(warnings))


def _untested_params(
    params: Mapping[str, Any], smoke: Mapping[str, Any], hints: Mapping[str, Any]
) -> list[str]:
    """A warning when the version's params are not the ones CI smoke-ran (files aside: CI runs on a
    sample). The CI verdict is recorded for the code; running the pipeline again at deploy time with
    these params would need the data and cost a smoke run, so the difference is said plainly instead."""
    differ = {k: v for k, v in params.items() if not _is_path(hints.get(k)) and smoke.get(k, _UNSET) != v}
    if not differ:
        return []
    ran = ", ".join(f"{k}={v!r}" for k, v in smoke.items()) or "the pipeline's defaults"
    given = ", ".join(f"{k}={v!r}" for k, v in differ.items())
    return [f"CI passed for this code with {ran}; it did not run with {given} (this version's params)"]


_UNSET = object()


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


def deployed_versions(
    store: PipelineStore, name: str | None = None
) -> tuple[list[PipelineVersion], dict[str, dict[str, int]]]:
    """Every deployed version (of ``name`` only, when given: NotFoundError for an unknown pipeline)
    and the aliases of each pipeline listed."""
    versions = store.list_versions(name)
    return versions, {n: store.aliases(n) for n in sorted({v.name for v in versions})}


def find_version(store: PipelineStore, ref: str) -> PipelineVersion:
    """The version ``ref`` names: ``NAME`` (its production version), ``NAME:VERSION`` or ``NAME@ALIAS``;
    ParameterError for anything else, NotFoundError naming what is missing."""
    from mloop.core.loader import parse_pipeline_ref

    parsed = parse_pipeline_ref(ref)
    if parsed is None:
        raise ParameterError(f"{ref!r} is not NAME, NAME:VERSION or NAME@ALIAS", field="pipeline")
    name, number, alias = parsed
    return store.get_version(name, number, alias=alias)


def alias_history(store: PipelineStore, name: str, alias: str | None = None) -> list[AliasEvent]:
    """Every alias move of a deployed pipeline (of ``alias`` only, when given), oldest first;
    NotFoundError for an unknown pipeline (which has no history, rather than an empty one)."""
    store.get_version(name)
    return store.alias_history(name, alias)
