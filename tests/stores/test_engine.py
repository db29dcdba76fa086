"""Connecting and migrating the metadata database."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from mloop.errors import ConfigurationError, SchemaVersionError, StoreUnavailableError, StoreUnreachableError
from mloop.stores.sql.engine import connect
from mloop.stores.sql.schema import HEAD_REVISION, VERSION_TABLE


def test_new_database_is_migrated_to_head(metadata_url: str) -> None:
    engine = connect(metadata_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() == HEAD_REVISION
        tables = set(sa.inspect(conn).get_table_names())
    assert {"runs", "step_runs", "artifacts", "events", "metrics", "params"} <= tables
    engine.dispose()
    connect(metadata_url).dispose()  # reopening an up-to-date database is a no-op


def test_database_from_a_newer_mloop_is_refused(metadata_url: str) -> None:
    engine = connect(metadata_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(SchemaVersionError, match="'9999', newer than this mloop knows"):
        connect(metadata_url)


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path / 'm.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_sqlite_opener_waits_for_another_writer_of_a_new_database(tmp_path: Path) -> None:
    # The CI race: another process opening the same new workspace holds the write lock while the
    # database is still in rollback mode; SQLite refused the switch to WAL at once ("database is
    # locked") instead of waiting as busy_timeout promises.
    path = tmp_path / "m.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    try:
        engine = connect(f"sqlite:///{path}")
    finally:
        release.join()
        other.close()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("SELECT x FROM t").scalar() == 1
    engine.dispose()


def test_unreachable_postgres_is_a_clear_error() -> None:
    # unreachable (worth waiting for: the scheduler daemon does), unlike a SQLite file that fails
    with pytest.raises(StoreUnreachableError, match=r"cannot connect to metadata store .*127\.0\.0\.1:1"):
        connect("postgresql+psycopg://nobody:secret@127.0.0.1:1/db")


def test_password_is_not_echoed() -> None:
    with pytest.raises(StoreUnavailableError) as info:
        connect("postgresql+psycopg://nobody:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in str(info.value)


def test_sqlite_in_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        connect(f"sqlite:///{tmp_path / 'no' / 'such' / 'm.db'}")


def test_garbage_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="not a database URL"):
        connect("not a url")
    with pytest.raises(ConfigurationError, match="no driver"):
        connect("nosuchdb://x/y")


def test_corrupted_sqlite_file_is_named(tmp_path: Path) -> None:
    db = tmp_path / "mloop.db"
    db.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(StoreUnavailableError, match="corrupted") as info:
        connect(f"sqlite:///{db}")
    assert str(db) in str(info.value) and info.value.exit_code == 2


def test_a_workspace_on_a_read_only_file_system_says_so(tmp_path: Path) -> None:
    # "unable to open database file" named no cause (SQLite writes its WAL beside the database)
    import subprocess

    source, mounted = tmp_path / "ws", tmp_path / "ro"
    source.mkdir()
    mounted.mkdir()
    connect(f"sqlite:///{source / 'mloop.db'}").dispose()
    for leftover in source.glob("mloop.db-*"):
        leftover.unlink()
    binds = [["mount", "--bind", str(source), str(mounted)], ["mount", "-o", "remount,ro,bind", str(mounted)]]
    try:
        for command in binds:
            if subprocess.run(command, capture_output=True).returncode != 0:
                pytest.skip("a read-only bind mount needs root and mount rights")
        with pytest.raises(StoreUnavailableError, match=r"the folder .*ro is read-only: SQLite writes"):
            connect(f"sqlite:///{mounted / 'mloop.db'}")
    finally:
        subprocess.run(["umount", str(mounted)], capture_output=True)
