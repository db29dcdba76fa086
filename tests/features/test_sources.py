"""Feature views over a SQL database (SQLite and PostgreSQL, through SQLAlchemy) and over a remote
fsspec URL give the same point-in-time joins, online values and lineage as the same rows in a file."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pandas as pd
import pytest
import sqlalchemy as sa
from feature_helpers import stats_frame, utc

import mloop
from mloop.cli import main
from mloop.errors import DataError, NotFoundError, ParameterError
from mloop.features import Entity, FeatureService, FeatureView, SqlSource
from mloop.features.definitions import Definitions

ENTITIES = pd.DataFrame(
    {
        "driver_id": [1, 2, 1, 2, 3, 1],
        "event_timestamp": [
            utc("2024-01-02 06:00"),
            utc("2024-01-01 06:00"),
            utc("2024-01-01 00:00"),  # exactly at a row's event time
            utc("2024-01-05 00:00"),  # beyond the TTL of driver 2's last row
            utc("2024-01-02 00:00"),  # no history
            utc("2024-01-02 06:00"),  # a duplicate entity row
        ],
    }
)
FEATURES = ["driver_stats:conv_rate", "driver_stats:trips"]


def definitions(source: str | SqlSource) -> Definitions:
    driver = Entity("driver", join_keys=["driver_id"])
    view = FeatureView(
        "driver_stats", [driver], source, timestamp="event_timestamp", ttl="1d", created="created"
    )
    return Definitions(
        entities={"driver": driver},
        views={"driver_stats": view},
        services={"driver_model": FeatureService("driver_model", FEATURES)},
    )


@pytest.fixture
def expected(tmp_path: Path) -> pd.DataFrame:
    """The join of the same rows read from a local Parquet file: what every other source must give."""
    stats_frame().to_parquet(tmp_path / "stats.parquet")
    ws = mloop.Workspace.open(tmp_path / "file-ws")
    try:
        ws.features.apply(definitions(str(tmp_path / "stats.parquet")))
        return ws.features.historical(ENTITIES, FEATURES)
    finally:
        ws.close()


@pytest.fixture
def sqlite_source(tmp_path: Path) -> SqlSource:
    url = f"sqlite:///{tmp_path / 'features.db'}"
    engine = sa.create_engine(url)
    stats_frame().to_sql("driver_stats", engine, index=False)
    engine.dispose()
    return SqlSource(url, table="driver_stats")


@pytest.fixture
def postgres_source(postgres_url: str) -> Iterator[SqlSource]:
    engine = sa.create_engine(postgres_url)
    table = f"stats_{uuid.uuid4().hex[:8]}"
    stats_frame().to_sql(table, engine, index=False)
    engine.dispose()
    yield SqlSource(postgres_url, query=f"SELECT * FROM {table} WHERE trips >= 0")


@pytest.mark.parametrize("backend", ["sqlite_source", "postgres_source"])
def test_a_sql_source_joins_materializes_and_serves_like_a_file(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, expected: pd.DataFrame
) -> None:
    source: SqlSource = request.getfixturevalue(backend)
    ws = mloop.Workspace.open(tmp_path / "ws")
    try:
        ws.features.apply(definitions(source))
        got = ws.features.historical(ENTITIES, FEATURES)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)
        assert got["driver_stats:trips"].isna().tolist() == [False, False, False, True, True, False]
        ws.features.materialize(end=utc("2024-01-03 12:00").to_pydatetime())
        (row, missing) = ws.features.online([{"driver_id": 2}, {"driver_id": 3}], service="driver_model")
        # the 2024 rows are older than the 1-day TTL now: null, with their age (so they were stored)
        assert row["features"] == {"driver_stats:conv_rate": None, "driver_stats:trips": None}
        assert row["age_seconds"]["driver_stats"] > 86400 and missing["age_seconds"]["driver_stats"] is None
        assert ws.features.skew(service="driver_model")["mismatches"] == 0
        spec = ws.features.show("driver_stats")["spec"]
        assert spec["source"]["sql"]["url"] == source.url
    finally:
        ws.close()


def test_training_on_a_sql_source_traces_to_its_rows_and_reruns_when_they_change(
    tmp_path: Path, sqlite_source: SqlSource
) -> None:
    from feature_pipelines import training

    ws = mloop.Workspace.open(tmp_path / "ws")
    try:
        ws.features.apply(definitions(sqlite_source))
        entities = tmp_path / "entities.parquet"
        ENTITIES.assign(label=[1, 0, 0, 1, 0, 1]).to_parquet(entities)
        first = ws.run(training, entities=entities)
        manifest = ws.metadata.get_params(first.run.id)["historical_features/feature_views"]["driver_stats"]
        source = ws.metadata.get_artifact(manifest["artifact_id"])
        assert source.uri.startswith("sql sqlite:///") and source.size == 5  # five rows read
        again = ws.run(training, entities=entities)
        assert [s.cached_from is not None for s in again.steps] == [True, True]
        engine = sa.create_engine(sqlite_source.url)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE driver_stats SET trips = 9 WHERE trips = 6"))
        engine.dispose()
        changed = ws.run(training, entities=entities)
        step = next(s for s in changed.steps if s.name == "historical_features")
        assert step.cached_from is None
        new = ws.metadata.get_params(changed.run.id)["historical_features/feature_views"]["driver_stats"]
        assert new["digest"] != manifest["digest"]
    finally:
        ws.close()


def test_a_remote_fsspec_source_joins_like_a_local_file(tmp_path: Path, expected: pd.DataFrame) -> None:
    fs = fsspec.filesystem("memory")
    root = f"/mloop-test-{uuid.uuid4().hex[:8]}"
    with fs.open(f"{root}/stats.parquet", "wb") as f:
        stats_frame().to_parquet(f)
    ws = mloop.Workspace.open(tmp_path / "ws")
    try:
        ws.features.apply(definitions(f"memory://{root}/stats.parquet"))
        pd.testing.assert_frame_equal(ws.features.historical(ENTITIES, FEATURES), expected, check_dtype=False)
        with pytest.raises(NotFoundError, match="does not exist"):
            ws.features.apply(definitions(f"memory://{root}/missing.parquet"))
        with pytest.raises(ParameterError, match="no fsspec filesystem"):
            ws.features.apply(definitions("nosuchproto://bucket/stats.parquet"))
    finally:
        fs.rm(root, recursive=True)
        ws.close()


def test_sql_sources_refuse_passwords_bad_names_and_unreachable_databases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ParameterError, match="literal password"):
        SqlSource("postgresql+psycopg://app:hunter2@db/features", table="t")
    with pytest.raises(ParameterError, match="exactly one of query= or table="):
        SqlSource("sqlite:///x.db")
    with pytest.raises(ParameterError, match="not a database URL"):
        SqlSource("features.db", table="t")
    with pytest.raises(ParameterError, match="not a table name"):
        SqlSource("sqlite:///x.db", table="t; DROP TABLE x").sql  # noqa: B018
    source = SqlSource("postgresql+psycopg://app:${MLOOP_TEST_NO_SUCH_VAR}@127.0.0.1:1/x", table="t")
    monkeypatch.delenv("MLOOP_TEST_NO_SUCH_VAR", raising=False)
    ws = mloop.Workspace.open(tmp_path / "ws")
    try:
        with pytest.raises(ParameterError, match="MLOOP_TEST_NO_SUCH_VAR, which is not set"):
            ws.features.apply(definitions(source))
        monkeypatch.setenv("MLOOP_TEST_NO_SUCH_VAR", "secret-pw")
        with pytest.raises(DataError, match="cannot read sql") as info:
            ws.features.apply(definitions(source))
        assert "secret-pw" not in str(info.value)
        with pytest.raises(DataError, match="cannot read sql"):
            ws.features.apply(definitions(SqlSource(f"sqlite:///{tmp_path / 'empty.db'}", table="nope")))
    finally:
        ws.close()


def test_the_cli_applies_and_joins_a_sql_view(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sqlite_source: SqlSource
) -> None:
    path = tmp_path / "features.py"
    path.write_text(
        "from mloop.features import Entity, FeatureView, SqlSource\n"
        "driver = Entity('driver', join_keys=['driver_id'])\n"
        f"stats = FeatureView('driver_stats', [driver], SqlSource({sqlite_source.url!r}, "
        "query='SELECT * FROM driver_stats'), timestamp='event_timestamp', ttl='1d', created='created')\n",
        encoding="utf-8",
    )
    w = ["--workspace", str(tmp_path / "ws")]
    assert main(["features", "apply", str(path), *w]) == 0
    ENTITIES.to_parquet(tmp_path / "entities.parquet")
    out = tmp_path / "out.parquet"
    code = main(
        [
            "features",
            "historical",
            str(tmp_path / "entities.parquet"),
            "--features",
            ",".join(FEATURES),
            "-o",
            str(out),
            *w,
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert pd.read_parquet(out)["driver_stats:trips"].tolist()[:3] == [3, 5, 1]
    assert main(["features", "list", *w]) == 0
    assert "sql sqlite:///" in capsys.readouterr().out
