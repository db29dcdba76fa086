"""Shared fixtures: real SQLite files and, when MLOOP_TEST_POSTGRES_URL is set, a real PostgreSQL
schema created for each test and dropped after it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from hypothesis import settings

import mloop

# CI runs the property tests on a fixed sequence of examples, so a run's verdict is the code's, not the
# draw's; locally they keep exploring (a failure found there becomes a regression test).
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

POSTGRES_ENV = "MLOOP_TEST_POSTGRES_URL"


@pytest.fixture(autouse=True)
def _cli_logging_undone() -> Iterator[None]:
    """A daemon command run in process (``scheduler run``, ``serve``) sets mloop's stderr logging for
    the rest of its process, as a CLI should; a test must not pass that on to the next one."""
    yield
    import logging

    logger = logging.getLogger("mloop")
    for handler in [h for h in logger.handlers if h.get_name() == "mloop-stderr"]:
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


def postgres_base_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped after the test."""
    base = postgres_base_url()
    if base is None:
        pytest.skip(f"{POSTGRES_ENV} is not set: PostgreSQL tests skipped")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def metadata_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every metadata backend: a SQLite file, and PostgreSQL when configured."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[mloop.Workspace]:
    """An embedded-default workspace (SQLite + local artifacts) in a temporary directory."""
    ws = mloop.Workspace.open(tmp_path / "ws")
    try:
        yield ws
    finally:
        ws.close()


@pytest.fixture
def any_workspace(tmp_path: Path, metadata_url: str) -> Iterator[mloop.Workspace]:
    """A workspace on every metadata backend."""
    ws = mloop.Workspace.open(tmp_path / "ws", metadata_url=metadata_url)
    try:
        yield ws
    finally:
        ws.close()
