"""CI workflow files that run ``mloop ci run`` on a project: GitHub Actions and GitLab CI."""

from __future__ import annotations

import tomllib
from pathlib import Path

from mloop.core.fingerprint import _git
from mloop.errors import ConflictError

__all__ = [
    "GITHUB_PATH",
    "GITIGNORE",
    "GITLAB_PATH",
    "current_branch",
    "install_args",
    "write_gitignore",
    "write_workflow",
]

# what mloop writes inside a project that is not source: the workspace and the CI report
GITIGNORE = (
    "# written by mloop: the local workspace and the CI report are not source\n.mloop/\nmloop-ci.xml\n"
)

GITHUB_PATH = ".github/workflows/mloop-ci.yml"
GITLAB_PATH = ".gitlab-ci.yml"

_GITHUB = """\
# Pipeline CI: the project's tests, a smoke run of each pipeline on a sample, and the model checks.
# Written by `mloop ci init --github`.
name: mloop pipeline CI

on:
  push:
    branches: [{branch}]
  pull_request:

jobs:
  pipeline-ci:
    runs-on: ubuntu-latest
    timeout-minutes: 30
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "{python}"
          cache: pip
      - name: Install
        run: |
          python -m pip install --upgrade pip
          python -m pip install {install}
      - name: mloop ci run
        run: mloop ci run {path} --junit mloop-ci.xml
      - name: Upload the CI report
        if: always()
        uses: actions/upload-artifact@v4
        with:
          name: mloop-ci-report
          path: mloop-ci.xml
"""

_GITLAB = """\
# Pipeline CI: the project's tests, a smoke run of each pipeline on a sample, and the model checks.
# Written by `mloop ci init --gitlab`.
stages: [test]

mloop-ci:
  stage: test
  image: python:{python}-slim
  script:
    - python -m pip install --upgrade pip
    - python -m pip install {install}
    - mloop ci run {path} --junit mloop-ci.xml
  artifacts:
    when: always
    reports:
      junit: mloop-ci.xml
"""


def current_branch(project: Path) -> str:
    """The branch checked out in ``project``'s git repository; ``main`` outside one (or detached)."""
    branch = _git(project, "symbolic-ref", "--quiet", "--short", "HEAD")
    return branch or "main"


def install_args(project: Path) -> str:
    """What the CI job pip-installs: the project's own dependencies (``requirements.txt``, and the
    project itself when its ``pyproject.toml`` declares one), then mloop and pytest."""
    args = []
    if (project / "requirements.txt").is_file():
        args.append("-r requirements.txt")
    pyproject = project / "pyproject.toml"
    if pyproject.is_file():
        try:
            declared = "project" in tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            declared = False
        if declared:
            args.append(".")  # installs the project with its declared dependencies
    return " ".join([*args, "mloop", "pytest"])


def write_workflow(
    project: Path,
    kind: str,
    *,
    path: str = ".",
    install: str | None = None,
    python: str = "3.11",
    force: bool = False,
) -> Path:
    """Write the ``github`` or ``gitlab`` workflow into ``project`` (never over one, unless ``force``).

    It runs on pushes to the branch checked out now (``main`` outside git) and installs ``install``,
    by default :func:`install_args`: the project's own dependency files, then mloop and pytest.
    """
    target = project / (GITHUB_PATH if kind == "github" else GITLAB_PATH)
    if target.exists() and not force:
        raise ConflictError(f"{target} already exists (give --force to overwrite it)", field="path")
    template = _GITHUB if kind == "github" else _GITLAB
    target.parent.mkdir(parents=True, exist_ok=True)
    text = template.format(
        path=path,
        install=install if install is not None else install_args(project),
        python=python,
        branch=current_branch(project),
    )
    target.write_text(text, encoding="utf-8")
    return target


def write_gitignore(project: Path) -> Path | None:
    """A ``.gitignore`` keeping mloop's workspace and CI report out of git, when the project has none
    (an existing one is the user's: left alone). The written path, or None."""
    target = project / ".gitignore"
    if target.exists():
        return None
    target.write_text(GITIGNORE, encoding="utf-8")
    return target
