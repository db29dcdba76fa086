"""docs/architecture.md matches the code: its layer list is the import-linter contract, the packages it
names exist, and nothing reaches the workspace through an untyped handle."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"


def _doc_layers() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- layers:.*?-->\s*```\n(.*?)```", text, re.S)
    assert block is not None, "docs/architecture.md has no layers block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def _contract_layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    [contract] = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    return [" | ".join(sorted(p.strip() for p in layer.split("|"))) for layer in contract["layers"]]


def test_the_documented_layers_are_the_checked_contract() -> None:
    documented = [" | ".join(sorted(p.strip() for p in layer.split("|"))) for layer in _doc_layers()]
    assert documented == _contract_layers()


def test_every_documented_package_exists() -> None:
    for layer in _doc_layers():
        for name in layer.split("|"):
            parts = name.strip().split(".")[1:]
            path = ROOT / "mloop" / Path(*parts)
            assert path.is_dir() or path.with_suffix(".py").is_file(), name


def test_only_the_typed_accessor_reads_the_step_s_workspace_handle() -> None:
    users = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "mloop").rglob("*.py")
        if "current_workspace(" in p.read_text(encoding="utf-8") and p.name != "context.py"
    )
    assert users == [], f"use mloop.steps.workspace() instead: {users}"
    core = (ROOT / "mloop" / "core" / "context.py").read_text(encoding="utf-8")
    assert "def current_workspace() -> object:" in core  # opaque below the workspace, typed above it


def test_no_workspace_is_typed_any() -> None:
    """A workspace passed as ``Any`` is an import in disguise (DESIGN: no untyped handle): every
    parameter or field named ws/workspace is typed (``object`` only where it is opaque by design)."""
    import ast

    untyped = []
    for path in sorted((ROOT / "mloop").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            named: list[tuple[str, ast.expr | None]] = []
            if isinstance(node, ast.arg):
                named.append((node.arg, node.annotation))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                named.append((node.target.id, node.annotation))
            for name, annotation in named:
                if (
                    name in ("ws", "workspace")
                    and annotation is not None
                    and ast.unparse(annotation) == "Any"
                ):
                    untyped.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')} {name}")
    assert untyped == []
