"""Code fingerprints: semantics count, docstrings and comments do not."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mloop.core.fingerprint import cache_key, code_hash, file_digest, git_commit

LIMIT = 3


def helper(x: int) -> int:
    return x + LIMIT


def uses_helper(x: int) -> int:
    """Docstring."""
    return helper(x)


def _load(path: Path, source: str) -> object:
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"fp_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.f  # type: ignore[attr-defined]


def test_docstrings_comments_and_formatting_do_not_count(tmp_path: Path) -> None:
    a = _load(tmp_path / "a.py", 'def f(x):\n    """Doc."""\n    return x + 1\n')
    b = _load(
        tmp_path / "b.py", 'def f(x):\n    """Other doc."""\n    # comment\n    return (x +\n            1)\n'
    )
    c = _load(tmp_path / "c.py", "def f(x):\n    return x + 2\n")
    assert code_hash(a) == code_hash(b)  # type: ignore[arg-type]
    assert code_hash(a) != code_hash(c)  # type: ignore[arg-type]


def test_module_constants_and_helpers_are_included() -> None:
    global LIMIT
    before = code_hash(uses_helper)
    LIMIT = 4
    try:
        assert code_hash(uses_helper) != before
    finally:
        LIMIT = 3


def test_cache_key_depends_on_each_part() -> None:
    base = cache_key("code", {"a": 1}, {"df": "d1"})
    assert base == cache_key("code", {"a": 1}, {"df": "d1"})
    assert len({base, cache_key("code2", {"a": 1}, {"df": "d1"}), cache_key("code", {"a": 2}, {"df": "d1"}),
                cache_key("code", {"a": 1}, {"df": "d2"})}) == 4  # fmt: skip


def test_directory_digest_covers_names_and_contents(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("1")
    first, size = file_digest(tmp_path / "d")
    assert size == 1
    (tmp_path / "d" / "a.txt").rename(tmp_path / "d" / "b.txt")
    assert file_digest(tmp_path / "d")[0] != first


def test_git_commit_outside_a_repository_is_none(tmp_path: Path) -> None:
    (tmp_path / "f.py").write_text("x = 1")
    assert git_commit(tmp_path / "f.py") is None


def test_git_commit_and_dirty_flag(tmp_path: Path) -> None:
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    git("config", "user.email", "ci@example.invalid")
    git("config", "user.name", "ci")
    (tmp_path / "pipe.py").write_text("x = 1\n")
    assert git_commit(tmp_path / "pipe.py") is None  # a repository without a commit yet
    git("add", "pipe.py")
    git("commit", "-qm", "init")
    head = git("rev-parse", "HEAD")
    assert git_commit(tmp_path / "pipe.py") == head
    (tmp_path / "other.py").write_text("y = 1\n")  # another file's change is not this one's
    assert git_commit(tmp_path / "pipe.py") == head
    (tmp_path / "pipe.py").write_text("x = 2\n")
    assert git_commit(tmp_path / "pipe.py") == f"{head}+dirty"
    git("checkout", "-q", "pipe.py")
    (tmp_path / "new.py").write_text("z = 1\n")  # untracked, and the pipeline itself
    assert git_commit(tmp_path / "new.py") == f"{head}+dirty"


def test_the_hash_is_of_the_code_loaded_not_of_the_file_edited_since(tmp_path: Path) -> None:
    """A long-running scheduler hashes its steps on every run: what it runs is what it imported, so an
    edit on disk shows up only once the module is loaded again."""
    loaded = _load(tmp_path / "m.py", "def f(x):\n    return x + 1\n")
    before = code_hash(loaded)  # type: ignore[arg-type]
    (tmp_path / "m.py").write_text("def f(x):\n    return x + 2\n")
    assert code_hash(loaded) == before  # type: ignore[arg-type]
    assert code_hash(_load(tmp_path / "m.py", "def f(x):\n    return x + 2\n")) != before  # type: ignore[arg-type]
