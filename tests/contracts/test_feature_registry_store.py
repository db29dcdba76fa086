"""The feature registry contract (definition versions, materializations), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from mloop.errors import ConflictError, NotFoundError
from mloop.stores.base import FeatureRegistry
from mloop.stores.sql.engine import connect
from mloop.stores.sql.features import SqlFeatureRegistry


@pytest.fixture
def store(metadata_url: str) -> Iterator[FeatureRegistry]:
    engine = connect(metadata_url)
    yield SqlFeatureRegistry(engine)
    engine.dispose()


def test_a_changed_spec_is_a_new_version_and_an_unchanged_one_is_not(store: FeatureRegistry) -> None:
    first = store.record("view", "trips", {"ttl": 60, "features": ["a"]}, who="ann")
    assert first is not None and first.version == 1 and first.who == "ann"
    assert store.record("view", "trips", {"features": ["a"], "ttl": 60}, who="bob") is None  # same spec
    second = store.record("view", "trips", {"ttl": 90, "features": ["a"]}, who="bob")
    assert second is not None and second.version == 2 and second.digest != first.digest
    assert [d.version for d in store.versions("view", "trips")] == [1, 2]
    assert store.get("view", "trips").spec == {"ttl": 90, "features": ["a"]}
    assert store.get("view", "trips", 1).spec == {"ttl": 60, "features": ["a"]}


def test_latest_gives_the_newest_version_of_each_definition(store: FeatureRegistry) -> None:
    store.record("entity", "driver", {"key": "driver_id"}, who="ann")
    store.record("view", "trips", {"ttl": 60}, who="ann")
    store.record("view", "trips", {"ttl": 90}, who="ann")
    store.record("service", "model", {"features": ["trips:a"]}, who="ann")
    assert [(d.kind, d.name, d.version) for d in store.latest()] == [
        ("entity", "driver", 1),
        ("service", "model", 1),
        ("view", "trips", 2),
    ]
    assert [d.name for d in store.latest("view")] == ["trips"]
    assert store.latest("nothing") == []


def test_unknown_definitions_are_not_found_naming_what_was_asked(store: FeatureRegistry) -> None:
    with pytest.raises(NotFoundError, match="view 'nope'") as info:
        store.get("view", "nope")
    assert info.value.field == "name"
    store.record("view", "trips", {"ttl": 60}, who="ann")
    with pytest.raises(NotFoundError, match="version 7"):
        store.get("view", "trips", 7)
    assert store.versions("view", "nope") == []


def test_the_last_materialization_of_each_view(store: FeatureRegistry) -> None:
    assert store.last_materialization("trips") is None
    end = datetime(2026, 1, 2, tzinfo=UTC)
    first = store.record_materialization("trips", 1, None, end, 10)
    second = store.record_materialization("trips", 1, end, end + timedelta(days=1), 3)
    store.record_materialization("other", 1, None, end, 1)
    last = store.last_materialization("trips")
    assert last is not None and last.id == second.id != first.id
    assert (last.view, last.version, last.rows) == ("trips", 1, 3)
    assert last.start == end and last.end == end + timedelta(days=1)


def test_concurrent_changes_give_distinct_versions_or_a_conflict(store: FeatureRegistry) -> None:
    outcomes: list[object] = []

    def change(n: int) -> None:
        try:
            outcomes.append(store.record("view", "trips", {"ttl": n}, who=f"w{n}"))
        except ConflictError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=change, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recorded = [o for o in outcomes if not isinstance(o, ConflictError)]
    assert len(outcomes) == 6 and recorded
    assert [d.version for d in store.versions("view", "trips")] == list(range(1, len(recorded) + 1))
