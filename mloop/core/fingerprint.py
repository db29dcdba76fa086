"""Code and data fingerprints: what makes up a cache key and a run's code version.

A step's code hash covers its own source and, transitively, the functions, classes and simple
constants of its own module that it refers to, so editing a helper invalidates the step. Docstrings,
comments, formatting and decorators do not count.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import inspect
import json
import subprocess
import textwrap
import types
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["cache_key", "code_hash", "file_digest", "git_commit"]

_CACHE_FORMAT = "mloop-cache-1"
_SIMPLE = (int, float, str, bool, bytes, type(None))


def _normalized_source(obj: Any) -> tuple[str, ast.AST | None]:
    try:
        source = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        code = getattr(obj, "__code__", None)
        if code is None:
            return repr(obj), None
        return f"{code.co_code.hex()}|{code.co_consts!r}", None
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node is tree.body[0]:
                node.decorator_list = []
            body = node.body
            first = body[0] if body else None
            if isinstance(first, ast.Expr) and isinstance(getattr(first.value, "value", None), str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False), tree


def _referenced_names(tree: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


# a function's or class's normalized source and the names it refers to, read once per object: a
# scheduler hashes the same steps on every run, and reading and parsing their source cost ~50 ms a run.
# The code a process runs is the code it loaded, so an edit on disk after the import must not change
# the hash either. What the names refer to (helpers, constants) is looked up on every call.
_ANALYSED: weakref.WeakKeyDictionary[Any, tuple[Any, str, tuple[str, ...] | None]] = (
    weakref.WeakKeyDictionary()
)


def _analysed(obj: Any) -> tuple[str, tuple[str, ...] | None]:
    code = getattr(obj, "__code__", None)  # a function whose code was swapped is read again
    try:
        known = _ANALYSED.get(obj)
    except TypeError:  # not weakly referenceable (a builtin, say)
        known = None
    if known is not None and known[0] is code:
        return known[1], known[2]
    source, tree = _normalized_source(obj)
    names = None if tree is None else tuple(sorted(_referenced_names(tree)))
    with contextlib.suppress(TypeError):
        _ANALYSED[obj] = (code, source, names)
    return source, names


def code_hash(fn: Callable[..., Any]) -> str:
    """Hash of ``fn``'s normalized source plus the same-module helpers and constants it uses."""
    module = getattr(fn, "__module__", None)
    parts: list[str] = []
    seen: set[int] = set()
    queue: list[Any] = [fn]
    while queue:
        obj = queue.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        source, names = _analysed(obj)
        parts.append(source)
        if names is None:
            continue
        namespace: Mapping[str, Any] = getattr(obj, "__globals__", None) or vars(
            inspect.getmodule(obj) or types
        )
        closure = inspect.getclosurevars(obj).nonlocals if inspect.isfunction(obj) else {}
        for name in names:
            value = closure.get(name, namespace.get(name, _MISSING))
            if value is _MISSING:
                continue
            target = getattr(value, "fn", value)  # a Step wraps its function
            if (inspect.isfunction(target) or inspect.isclass(target)) and target.__module__ == module:
                queue.append(target)
            elif isinstance(value, _SIMPLE) or (
                isinstance(value, tuple | frozenset) and all(isinstance(v, _SIMPLE) for v in value)
            ):
                parts.append(f"{name}={value!r}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


_MISSING = object()


def cache_key(step_code: str, params: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
    """The key under which a step execution's outputs are reused: code, parameters, input digests."""
    payload = json.dumps(
        {"format": _CACHE_FORMAT, "code": step_code, "params": params, "inputs": inputs},
        sort_keys=True,
        separators=(",", ":"),
        default=repr,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def file_digest(path: Path) -> tuple[str, int]:
    """``(sha256, size)`` of a file's bytes, or of a directory's relative paths and file contents."""
    if path.is_file():
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest(), path.stat().st_size
    h = hashlib.sha256()
    total = 0
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        sub, size = file_digest(child)
        h.update(f"{child.relative_to(path).as_posix()}\0{sub}\n".encode())
        total += size
    return h.hexdigest(), total


def git_commit(path: Path) -> str | None:
    """The commit checked out around ``path``, with ``+dirty`` when that file has uncommitted changes."""
    commit, dirty = git_state(path if path.is_dir() else path.parent, str(path))
    return f"{commit}+dirty" if commit and dirty else commit


def git_state(directory: Path, *pathspec: str) -> tuple[str | None, bool | None]:
    """The commit checked out around ``directory`` and whether anything under ``pathspec`` differs
    from it (untracked files included); ``(None, None)`` outside a repository or before its first
    commit. One ``git status`` (it prints the commit too): a run asks at every start."""
    out = _git(directory, "status", "--porcelain=v2", "--branch", "--", *pathspec)
    if out is None:
        return None, None
    lines = out.splitlines()
    commit = next((line.split()[2] for line in lines if line.startswith("# branch.oid ")), None)
    if commit is None or commit == "(initial)":
        return None, None
    return commit, any(not line.startswith("#") for line in lines)


def _git(directory: Path, *args: str) -> str | None:
    """git's stripped output, or None when git is missing, fails or is not in a repository."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=directory, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
