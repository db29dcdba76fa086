"""Definitions and materializations in the metadata store, on every backend (SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import mloop
from mloop.errors import NotFoundError


def test_versions_and_materializations_on_every_backend(
    any_workspace: mloop.Workspace, feature_repo: Callable[..., Path]
) -> None:
    fs = any_workspace.features
    repo = feature_repo()
    assert {c.action for c in fs.apply(repo)} == {"created"}
    assert {c.action for c in fs.apply(repo)} == {"unchanged"}
    repo.write_text(repo.read_text().replace('ttl="1d"', 'ttl="36h"'))
    changes = {c.name: c for c in fs.apply(repo)}
    assert changes["driver_stats"].action == "updated" and changes["driver_stats"].version == 2
    assert changes["driver_stats"].diff == {"ttl_seconds": [86400.0, 129600.0]}
    assert [d.version for d in fs.registry.versions("view", "driver_stats")] == [1, 2]
    assert fs.view("driver_stats").ttl is not None and fs.view("driver_stats").ttl.total_seconds() == 129600
    assert fs.view("driver_stats", version=1).ttl.total_seconds() == 86400  # type: ignore[union-attr]
    assert sorted((d.kind, d.name) for d in fs.definitions()) == [
        ("entity", "driver"),
        ("service", "driver_model"),
        ("view", "driver_stats"),
    ]
    [m] = fs.materialize(["driver_stats"])
    assert (m.view, m.version, m.rows) == ("driver_stats", 2, 2)
    assert fs.registry.last_materialization("driver_stats") == m
    assert fs.show("driver_stats")["last_materialization"] == m
    with pytest.raises(NotFoundError, match="unknown feature view 'nope'"):
        fs.view("nope")
