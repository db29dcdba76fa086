"""One contract for every online store: SQLite (always) and Redis (when MLOOP_TEST_REDIS_URL is set)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mloop.errors import StoreUnavailableError
from mloop.stores.base import OnlineStore
from mloop.stores.online_redis import RedisOnlineStore
from mloop.stores.online_sqlite import SqliteOnlineStore

REDIS_ENV = "MLOOP_TEST_REDIS_URL"


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    if request.param == "sqlite":
        s: OnlineStore = SqliteOnlineStore(tmp_path / "online.db")
        yield s
        s.close()
        return
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"{REDIS_ENV} is not set: Redis tests skipped")
    r = RedisOnlineStore(url, prefix=f"mloop-test:{uuid.uuid4().hex[:12]}:")
    try:
        yield r
    finally:
        r.drop_prefix()
        r.close()


def test_reads_what_was_written_in_key_order(store: OnlineStore) -> None:
    assert store.write("v", [("a", 10.0, '{"x":1}'), ("b", 11.5, '{"x":2}')]) == 2
    assert store.read("v", ["b", "a", "missing", "a"]) == [
        (11.5, '{"x":2}'),
        (10.0, '{"x":1}'),
        None,
        (10.0, '{"x":1}'),
    ]
    assert store.read("v", ["a"]) == [(10.0, '{"x":1}')]


def test_an_older_row_never_overwrites_a_newer_one(store: OnlineStore) -> None:
    store.write("v", [("a", 20.0, "new")])
    store.write("v", [("a", 10.0, "old")])
    assert store.read("v", ["a"]) == [(20.0, "new")]
    store.write("v", [("a", 30.0, "newer")])
    assert store.read("v", ["a"]) == [(30.0, "newer")]


def test_views_are_separate_and_drop_forgets_one_view(store: OnlineStore) -> None:
    store.write("v1", [("a", 1.0, "one")])
    store.write("v2", [("a", 2.0, "two")])
    store.drop("v1")
    assert store.read("v1", ["a"]) == [None]
    assert store.read("v2", ["a"]) == [(2.0, "two")]


def test_payloads_keep_every_character_and_batches_span_chunks(store: OnlineStore) -> None:
    rows = [(f"k{i}\x1f{i}", float(i), f'{{"s":"é|ü {i}"}}') for i in range(2500)]
    store.write("v", rows)
    got = store.read("v", [r[0] for r in rows])
    assert got == [(r[1], r[2]) for r in rows]


def test_newest_is_the_newest_event_time_held_per_view(store: OnlineStore) -> None:
    assert store.newest("v") is None
    store.write("v", [("a", 20.5, "x"), ("b", 10.0, "y")])
    store.write("v", [("a", 5.0, "older")])  # refused for "a", and the newest time stays
    store.write("w", [("a", 99.0, "z")])
    assert store.newest("v") == 20.5 and store.newest("w") == 99.0
    store.drop("v")
    assert store.newest("v") is None


def test_a_password_in_the_redis_url_is_never_shown() -> None:
    store = RedisOnlineStore("redis://default:s3cretpw@127.0.0.1:1/0", prefix="x:")
    with pytest.raises(StoreUnavailableError) as raised:
        store.read("v", ["a"])
    assert "s3cretpw" not in str(raised.value) and "***" in str(raised.value)
    assert "s3cretpw" not in store.url


def test_redis_that_cannot_connect_is_one_clear_error() -> None:
    store = RedisOnlineStore("redis://127.0.0.1:1/0", prefix="x:")
    with pytest.raises(
        StoreUnavailableError, match=r"cannot connect to the online store redis://127\.0\.0\.1:1"
    ):
        store.read("v", ["a"])
