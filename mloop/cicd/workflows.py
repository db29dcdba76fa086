"""CI workflow files that run ``mloop ci run`` on a project: GitHub Actions and GitLab CI."""

from __future__ import annotations

from pathlib import Path

from mloop.errors import ConflictError

__all__ = ["GITHUB_PATH", "GITLAB_PATH", "write_workflow"]

GITHUB_PATH = ".github/workflows/mloop-ci.yml"
GITLAB_PATH = ".gitlab-ci.yml"

_GITHUB = """\
# Pipeline CI: the project's tests, a smoke run of each pipeline on a sample, and the model checks.
# Written by `mloop ci init --github`.
name: mloop pipeline CI

on:
  push:
    branches: [main]
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


def write_workflow(
    project: Path,
    kind: str,
    *,
    path: str = ".",
    install: str = "mloop pytest",
    python: str = "3.11",
    force: bool = False,
) -> Path:
    """Write the ``github`` or ``gitlab`` workflow into ``project`` (never over one, unless ``force``)."""
    target = project / (GITHUB_PATH if kind == "github" else GITLAB_PATH)
    if target.exists() and not force:
        raise ConflictError(f"{target} already exists (give --force to overwrite it)", field="path")
    template = _GITHUB if kind == "github" else _GITLAB
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(template.format(path=path, install=install, python=python), encoding="utf-8")
    return target
