"""Load a pipeline from a ``path/to/file.py:name``, a ``package.module:name``, or a deployed pipeline
version (``NAME`` = its production version, ``NAME@ALIAS``, ``NAME:VERSION``).

A deployed version runs exactly its frozen code: its source snapshot is extracted into a cache folder
keyed by the snapshot's digest and imported from there, never from the project's files on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Protocol

from mloop.core.pipeline import Pipeline
from mloop.core.sources import module_name, pack_sources, project_root, unpack_sources
from mloop.errors import PipelineLoadError
from mloop.names import decimal
from mloop.stores.base import ArtifactStore, PipelineStore

__all__ = ["FrozenPipelines", "load_pipeline", "parse_pipeline_ref", "snapshot_cache_dir"]

_VERSION_REF = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,127})(?:@(?P<alias>[A-Za-z0-9._-]+)|:(?P<version>[0-9]+))?$"
)


class FrozenPipelines(Protocol):
    """What loading a deployed version needs: a workspace's pipeline store and artifact store."""

    @property
    def artifacts(self) -> ArtifactStore: ...

    @property
    def pipelines(self) -> PipelineStore: ...


def parse_pipeline_ref(ref: str) -> tuple[str, int | None, str | None] | None:
    """``(name, version, alias)`` of a deployed-version reference, or None for a file/module path."""
    if ref.endswith(".py") or "/" in ref or os.sep in ref:
        return None
    found = _VERSION_REF.match(ref)
    if found is None:
        return None
    version = found["version"]
    alias = found["alias"] or (None if version else "production")
    number = decimal(version) if version else None
    if version and (number is None or number < 1):
        raise PipelineLoadError(
            f"pipeline version {ref[:80]!r}: expected NAME:VERSION with VERSION from 1 to 999999999",
            field="pipeline",
        )
    return found["name"], number, alias


def snapshot_cache_dir() -> Path:
    """Where snapshots are extracted: ``$MLOOP_CACHE_DIR`` or ``~/.cache/mloop``, then ``pipelines/``."""
    base = os.environ.get("MLOOP_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mloop"
    )
    return Path(base) / "pipelines"


def load_pipeline(ref: str, *, workspace: FrozenPipelines | None = None) -> Pipeline:
    """The :class:`Pipeline` named by ``ref``; PipelineLoadError/NotFoundError say what is wrong otherwise.

    A deployed version needs ``workspace``; the returned pipeline's ``version_ref`` is ``NAME:VERSION``
    (the runner records it on the run as the param ``pipeline.version``).
    """
    parsed = parse_pipeline_ref(ref)
    if parsed is not None:
        if workspace is None:
            raise PipelineLoadError(
                f"{ref!r} is not of the form path/to/file.py:pipeline_name (a deployed pipeline version,"
                " NAME, NAME@ALIAS or NAME:VERSION, is loaded from a workspace)",
                field="pipeline",
            )
        return _frozen(workspace, *parsed)
    file_part, sep, name = ref.rpartition(":")
    if not sep or not file_part or not name:
        raise PipelineLoadError(f"{ref!r} is not of the form path/to/file.py:pipeline_name", field="pipeline")
    path = Path(file_part).expanduser().resolve()
    if not path.is_file() and not file_part.endswith(".py") and "/" not in file_part:
        return _from_module(ref, file_part, name)
    if not path.is_file():
        raise PipelineLoadError(f"pipeline file {file_part} does not exist", field="pipeline")
    for directory in dict.fromkeys([str(path.parent), str(project_root(path))]):
        if directory not in sys.path:
            sys.path.insert(0, directory)  # so the file can import its sibling modules and its package
    module_name_ = path.stem if path.stem not in sys.modules else f"mloop_user_{path.stem}_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(module_name_, path)
    if spec is None or spec.loader is None:
        raise PipelineLoadError(f"{file_part} cannot be imported as a Python module", field="pipeline")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name_] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # sys.exit() at import ended mloop with its status
        sys.modules.pop(module_name_, None)
        raise PipelineLoadError(
            f"importing {file_part} failed: {type(exc).__name__}: {exc}", field="pipeline"
        ) from exc
    return _pick(vars(module), name, file_part)


def _pick(namespace: dict[str, object], name: str, where: str) -> Pipeline:
    obj = namespace.get(name)
    if obj is None:
        found = sorted(k for k, v in namespace.items() if isinstance(v, Pipeline))
        raise PipelineLoadError(
            f"{where} has no pipeline {name!r} (pipelines found: {found or 'none'})", field="pipeline"
        )
    if not isinstance(obj, Pipeline):
        raise PipelineLoadError(
            f"{where}:{name} is a {type(obj).__name__}, not a @pipeline", field="pipeline"
        )
    return obj


def _from_module(ref: str, module_name: str, name: str) -> Pipeline:
    """``package.module:name``: a pipeline shipped in an installed package (e.g. mloop's own)."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PipelineLoadError(
            f"{ref!r}: neither a file nor an importable module ({exc})", field="pipeline"
        ) from exc
    obj = getattr(module, name, None)
    if not isinstance(obj, Pipeline):
        raise PipelineLoadError(f"{module_name} has no @pipeline named {name!r}", field="pipeline")
    return obj


def _extracted(workspace: FrozenPipelines, digest: str) -> Path:
    """The snapshot's folder in the cache, extracted (atomically: a temp folder renamed) when it is
    missing or no longer holds exactly the snapshot's files (edited, deleted or added in the cache)."""
    target = snapshot_cache_dir() / digest
    if (target / ".complete").is_file() and _tree_digest(target) == digest:
        return target
    files = unpack_sources(workspace.artifacts.get(digest))  # verified against the digest
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=target.parent))
    for rel, data in files.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes(data)
    (staging / ".complete").write_text(digest)
    if target.exists():  # a tampered or broken copy: set it aside, then put the good one in its place
        stale = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-stale-", dir=target.parent))
        with contextlib.suppress(OSError):  # another process replaced it first
            target.rename(stale / "tree")
        shutil.rmtree(stale, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:  # another process extracted it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _tree_digest(folder: Path) -> str:
    """The digest the snapshot's packed bytes would have if packed from ``folder`` now (Python's own
    ``__pycache__`` and the ``.complete`` marker aside): equal to the snapshot's digest only when the
    folder holds exactly its files with exactly their bytes."""
    files = {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".complete" and "__pycache__" not in p.relative_to(folder).parts
    }
    return hashlib.sha256(pack_sources(files)).hexdigest()


def _frozen(workspace: FrozenPipelines, name: str, version: int | None, alias: str | None) -> Pipeline:
    frozen = workspace.pipelines.get_version(name, version, alias=alias)
    folder = _extracted(workspace, frozen.snapshot_digest)
    rel, _, function = frozen.entry.rpartition(":")
    modules = [module_name(p.relative_to(folder).as_posix()) for p in folder.rglob("*.py")]
    top = {m.split(".")[0] for m in modules}
    # the project's own modules are imported from the snapshot: set aside any copies already loaded
    # (from the files on disk, or another version), and restore them afterwards
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in top}
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module(module_name(rel))
    except Exception as exc:
        raise PipelineLoadError(
            f"importing {frozen.ref} ({rel}) failed: {type(exc).__name__}: {exc}", field="pipeline"
        ) from exc
    finally:
        sys.path.remove(str(folder))
        for k in [k for k in sys.modules if k.split(".")[0] in top]:
            del sys.modules[k]
        sys.modules.update(saved)
    pipe = _pick(vars(module), function, frozen.ref)
    pipe.version_ref = frozen.ref
    pipe.version_params = dict(frozen.params)
    if frozen.git_commit is not None:
        pipe.version_commit = frozen.git_commit + ("+dirty" if frozen.git_dirty else "")
    return pipe
