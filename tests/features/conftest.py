"""A feature repository on disk: a Parquet source, a definitions file, and a workspace that applied it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from feature_helpers import DEFINITIONS, stats_frame

import mloop


@pytest.fixture
def feature_repo(tmp_path: Path) -> Callable[..., Path]:
    """Write ``stats.parquet`` (or the given frame) and ``features.py``; returns the definitions path."""

    def make(frame: pd.DataFrame | None = None, ttl: str = "1d") -> Path:
        (frame if frame is not None else stats_frame()).to_parquet(tmp_path / "stats.parquet")
        path = tmp_path / "features.py"
        path.write_text(DEFINITIONS.replace("{ttl}", ttl), encoding="utf-8")
        return path

    return make


@pytest.fixture
def fws(tmp_path: Path, feature_repo: Callable[..., Path]) -> Iterator[mloop.Workspace]:
    """A workspace with the hand-built repository applied."""
    ws = mloop.Workspace.open(tmp_path / "ws")
    ws.features.apply(feature_repo())
    try:
        yield ws
    finally:
        ws.close()
