"""A pipeline's source snapshot: its module and the project modules it imports, hashed and packed.

The snapshot is what a pipeline version freezes and what CI results are keyed by: the same files
with the same bytes give the same hash wherever the project is checked out. Modules outside the
project (the standard library, installed packages) are not part of it; their versions are recorded
separately as the environment.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import io
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path

from mloop.errors import PipelineLoadError

__all__ = [
    "collect_sources",
    "module_name",
    "outside_modules",
    "pack_sources",
    "project_root",
    "sources_hash",
    "unpack_sources",
]


def is_pipeline_decorator(node: ast.expr) -> bool:
    """Whether a decorator is ``@pipeline``/``@mloop.pipeline`` (called or not): found by reading code."""
    target = node.func if isinstance(node, ast.Call) else node
    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
    return name == "pipeline"


def project_root(entry: Path) -> Path:
    """The folder imports resolve from: above the outermost package holding ``entry``."""
    folder = entry.resolve().parent
    while (folder / "__init__.py").is_file() and folder.parent != folder:
        folder = folder.parent
    return folder


def module_name(relpath: str) -> str:
    """``pkg/mod.py`` → ``pkg.mod``; ``pkg/__init__.py`` → ``pkg``."""
    parts = relpath[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(root: Path, dotted: str) -> list[Path]:
    """The project files a dotted module name maps to (the module and its packages' ``__init__``)."""
    found: list[Path] = []
    parts = dotted.split(".")
    for i in range(1, len(parts) + 1):
        base = root.joinpath(*parts[:i])
        if (base / "__init__.py").is_file():
            found.append(base / "__init__.py")
        elif base.with_suffix(".py").is_file():
            found.append(base.with_suffix(".py"))
            break
        else:
            break
    return found


def _imports(path: Path, root: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise PipelineLoadError(f"{path} is not valid Python: {exc}", field="pipeline") from exc
    rel = path.relative_to(root).as_posix()
    package = module_name(rel) if path.name == "__init__.py" else module_name(rel).rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join([*anchor, *([base] if base else [])])
            names.append(base)
            names.extend(f"{base}.{alias.name}" if base else alias.name for alias in node.names)
    return [n for n in names if n]


def collect_sources(entry: Path) -> tuple[Path, dict[str, bytes]]:
    """``(root, {relative path: bytes})`` of ``entry`` and every project module it imports, transitively."""
    entry = entry.resolve()
    root = project_root(entry)
    files: dict[str, bytes] = {}
    todo = [entry, *_resolve(root, module_name(entry.relative_to(root).as_posix()))]
    while todo:
        path = todo.pop()
        rel = path.relative_to(root).as_posix()
        if rel in files:
            continue
        files[rel] = path.read_bytes()
        for name in _imports(path, root):
            todo.extend(p for p in _resolve(root, name) if p.relative_to(root).as_posix() not in files)
    return root, dict(sorted(files.items()))


def outside_modules(root: Path, files: Mapping[str, bytes]) -> dict[str, str]:
    """``{module: where it is found}`` of the top-level modules the snapshot imports that are neither
    in it, nor the standard library, nor an installed distribution: found some other way (PYTHONPATH,
    a folder on ``sys.path``), so not frozen, and not recorded as the environment either.

    Found without importing them (``importlib.util.find_spec`` of a top-level name only locates it).
    """
    installed = importlib.metadata.packages_distributions()
    tops: set[str] = set()
    for rel in files:
        for name in _imports(root / rel, root):
            tops.add(name.split(".")[0])
    found: dict[str, str] = {}
    for top in sorted(tops):
        if top in sys.stdlib_module_names or top == "__future__" or top in installed or _resolve(root, top):
            continue
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            continue
        if spec is None or spec.origin in (None, "built-in", "frozen"):
            continue  # not importable here (the run says so), or part of the interpreter
        where = (
            spec.origin if spec.origin != "namespace" else ", ".join(spec.submodule_search_locations or [])
        )
        found[top] = where
    return found


def sources_hash(files: Mapping[str, bytes]) -> str:
    """Content hash of a snapshot: paths and bytes, independent of where the project lives."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode() + b"\0" + hashlib.sha256(files[rel]).digest())
    return h.hexdigest()


def pack_sources(files: Mapping[str, bytes]) -> bytes:
    """A deterministic tar of the snapshot (fixed order, times and owners): same files, same bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in sorted(files):
            info = tarfile.TarInfo(rel)
            info.size, info.mtime, info.mode = len(files[rel]), 0, 0o644
            tar.addfile(info, io.BytesIO(files[rel]))
    return buffer.getvalue()


def unpack_sources(data: bytes) -> dict[str, bytes]:
    """The files of a packed snapshot; refuses paths that would leave the snapshot folder."""
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        for member in tar.getmembers():
            if not member.isfile() or member.name.startswith("/") or ".." in member.name.split("/"):
                raise PipelineLoadError(f"snapshot holds an unsafe path {member.name!r}", field="pipeline")
            handle = tar.extractfile(member)
            files[member.name] = handle.read() if handle else b""
    return files
