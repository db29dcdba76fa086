"""``mloop server token create|list|revoke`` and ``server start`` argument checks, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from server_helpers import run

from mloop.auth import check_token
from mloop.errors import UnauthorizedError
from mloop.workspace import Workspace


def test_token_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws_dir = str(tmp_path / "ws")
    code, stdout, stderr = run(
        capsys, "server", "token", "create", "--role", "editor", "--name", "ci", "-w", ws_dir
    )
    assert code == 0, stderr
    secret = stdout.strip()
    assert secret.startswith("mloop_") and "editor" in stderr
    code, stdout, _ = run(capsys, "server", "token", "list", "--json", "-w", ws_dir)
    listed = json.loads(stdout)
    assert code == 0 and [(t["name"], t["role"], t["revoked_at"]) for t in listed] == [("ci", "editor", None)]
    assert secret not in stdout and "hash" not in stdout
    with Workspace.open(ws_dir) as ws:
        assert check_token(ws.tokens, f"Bearer {secret}", roles=("editor",)).name == "ci"
    code, stdout, _ = run(capsys, "server", "token", "revoke", listed[0]["id"], "-w", ws_dir)
    assert code == 0 and "revoked" in stdout
    with Workspace.open(ws_dir) as ws:
        with pytest.raises(UnauthorizedError):
            check_token(ws.tokens, f"Bearer {secret}")
        assert ws.tokens.audit_entries()[0].action == "token.revoke"


def test_token_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws_dir = str(tmp_path / "ws")
    code, _, stderr = run(capsys, "server", "token", "create", "--role", "root", "--name", "x", "-w", ws_dir)
    assert code == 2 and stderr.startswith("error:") and "role" in stderr and len(stderr.splitlines()) == 1
    run(capsys, "server", "token", "create", "--name", "x", "-w", ws_dir)
    code, _, stderr = run(capsys, "server", "token", "revoke", "NOPE", "-w", ws_dir)
    assert code == 2 and "no token" in stderr


def test_no_auth_is_refused_off_loopback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, stderr = run(capsys, "server", "start", "--no-auth", "--host", "0.0.0.0", "-w", str(tmp_path))
    assert (
        code == 2 and stderr.startswith("error:") and "loopback" in stderr and len(stderr.splitlines()) == 1
    )
