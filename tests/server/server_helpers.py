"""Shared by the team-server tests: the CLI in-process, a seeded workspace, a real server in a thread."""

from __future__ import annotations

import pytest

from mloop.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``mloop ARGV``."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err
