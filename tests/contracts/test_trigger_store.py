"""The trigger store contract (claims, leases, evaluation leases, state), on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from mloop.errors import MetadataStoreError, NotFoundError, StoreUnavailableError
from mloop.stores.base import TriggerStore
from mloop.stores.sql.engine import connect
from mloop.stores.sql.triggers import SqlTriggerStore


@pytest.fixture
def store(metadata_url: str) -> Iterator[SqlTriggerStore]:
    engine = connect(metadata_url)
    yield SqlTriggerStore(engine)
    engine.dispose()


def _claim(
    store: TriggerStore, key: str, owner: str = "a", lease_s: float = 60.0, trigger: str = "t"
) -> object:
    return store.claim(trigger, key, kind="new_data", pipeline="p.py:job", evidence={"n": 1}, owner=owner,
                       lease_s=lease_s)  # fmt: skip


def test_the_sql_store_satisfies_the_protocol(store: SqlTriggerStore) -> None:
    typed: TriggerStore = store  # mypy checks the structure; this pins it at runtime too
    for name in (
        "claim",
        "update",
        "renew",
        "reclaim_expired",
        "evaluating",
        "events",
        "state",
        "save_state",
    ):
        assert callable(getattr(typed, name))


def test_an_event_is_claimed_once_with_its_owner_and_lease(store: SqlTriggerStore) -> None:
    first = store.claim("t", "k1", kind="manual", pipeline="p.py:job", evidence={"why": "x"}, owner="a")
    assert first is not None and first.status == "pending" and first.attempts == 1
    assert first.owner == "a" and first.lease_until is not None and first.lease_until > datetime.now(UTC)
    assert _claim(store, "k1", owner="b") is None  # already claimed, whoever asks
    assert _claim(store, "k1", trigger="other") is not None  # the key is per trigger
    [stored] = store.events("t")
    assert (stored.id, stored.owner, stored.evidence) == (first.id, "a", {"why": "x"})
    suppressed = store.claim("t", "k2", kind="manual", pipeline="p", evidence={}, status="suppressed")
    assert suppressed is not None and suppressed.attempts == 0 and suppressed.lease_until is None


def test_concurrent_claims_from_threads_have_one_winner(store: SqlTriggerStore) -> None:
    winners: list[str] = []
    barrier = threading.Barrier(8)

    def contend(owner: str) -> None:
        barrier.wait()
        if _claim(store, "race", owner=owner) is not None:
            winners.append(owner)

    threads = [threading.Thread(target=contend, args=(f"o{i}",)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert len(winners) == 1
    [event] = store.events("t")
    assert event.owner == winners[0]


CONTEND = """
import sys, time
from mloop.stores.sql.engine import connect
from mloop.stores.sql.triggers import SqlTriggerStore
store = SqlTriggerStore(connect(sys.argv[1]))
while time.time() < float(sys.argv[3]):
    time.sleep(0.005)
got = store.claim("t", "race", kind="manual", pipeline="p", evidence={}, owner=sys.argv[2])
print("won" if got is not None else "lost")
"""


@pytest.mark.slow  # several processes racing: the slow tier
def test_concurrent_claims_from_processes_have_one_winner(store: SqlTriggerStore, metadata_url: str) -> None:
    start_at = time.time() + 4  # every process connected and waiting when the race starts
    procs = [
        subprocess.Popen([sys.executable, "-c", CONTEND, metadata_url, f"p{i}", str(start_at)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
        for i in range(4)
    ]  # fmt: skip
    outcomes = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        outcomes.append(stdout.strip())
    assert sorted(outcomes) == ["lost", "lost", "lost", "won"]
    assert len(store.events("t")) == 1


def test_an_event_is_reclaimed_only_after_its_lease_expired(store: SqlTriggerStore) -> None:
    held = _claim(store, "held", owner="a", lease_s=60)  # claimed, no run yet (importing the pipeline)
    assert held is not None
    assert store.reclaim_expired("b") == []  # not merely because it has no run yet
    short = _claim(store, "short", owner="a", lease_s=0.2)
    assert short is not None
    time.sleep(0.5)
    [taken] = store.reclaim_expired("b", lease_s=60)
    assert (taken.event_key, taken.owner, taken.attempts, taken.status) == ("short", "b", 2, "pending")
    assert store.reclaim_expired("c") == []  # b's fresh lease protects it now
    assert store.renew("a", 60, events=[short.id]) == set()  # a lost it: renewing does not steal it back


def test_renewal_keeps_an_event_and_a_final_status_ends_the_lease(store: SqlTriggerStore) -> None:
    event = _claim(store, "k", owner="a", lease_s=0.3)
    assert event is not None
    assert store.renew("a", 60, events=[event.id]) == {event.id}
    time.sleep(0.5)  # past the first lease, within the renewed one
    assert store.reclaim_expired("b") == []
    store.update(event.id, status="running", run_id="r1")
    assert store.event_of_run("r1") is not None and store.event_of_run("r1").status == "running"  # type: ignore[union-attr]
    store.update(event.id, status="succeeded")
    [done] = store.events("t")
    assert done.status == "succeeded" and done.lease_until is None and done.run_id == "r1"
    assert store.renew("a", 60, events=[event.id]) == set()  # nothing active to renew


def test_vetoed_and_exhausted_events(store: SqlTriggerStore) -> None:
    event = _claim(store, "k", owner="a", lease_s=0.1)
    assert event is not None
    time.sleep(0.3)
    assert store.reclaim_expired("b", may_take=lambda e: e.owner != "a") == []  # e.g. "a" is alive
    [again] = store.reclaim_expired("b", lease_s=0.1)
    assert again.attempts == 2
    time.sleep(0.3)
    assert store.reclaim_expired("c", max_attempts=2) == []  # past max_attempts: left failed
    assert store.events("t")[0].status == "failed"


def test_one_scheduler_evaluates_a_trigger_at_a_time(store: SqlTriggerStore) -> None:
    with store.evaluating("t", "a") as mine:
        assert mine
        with store.evaluating("t", "b") as theirs:
            assert not theirs
        with store.evaluating("other", "b") as theirs:
            assert theirs  # per trigger
    with store.evaluating("t", "b") as theirs:
        assert theirs  # released on exit
    with store.evaluating("t", "a", lease_s=0.1) as mine:
        assert mine
        time.sleep(0.3)
        with store.evaluating("t", "b") as theirs:
            assert theirs  # a's evaluation lease expired (a died mid-evaluation)


def test_state_roundtrip_and_last_error(store: SqlTriggerStore) -> None:
    empty = store.state("t")
    assert (empty.evaluated_at, empty.watermark, empty.last_error, empty.last_result) == (None, {}, None, "")
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    store.save_state("t", evaluated_at=now, last_result="2 new files", watermark={"files": {"a": [1, 2]}})
    store.save_state("t", last_error="metadata store unavailable")
    state = store.state("t")
    assert (state.evaluated_at, state.last_result, state.watermark, state.last_error) == (
        now, "2 new files", {"files": {"a": [1, 2]}}, "metadata store unavailable"
    )  # fmt: skip
    store.save_state("t", fired_at=now, last_error="")
    state = store.state("t")
    assert state.last_error is None and state.fired_at == now and state.last_result == "2 new files"


def test_events_are_listed_newest_first(store: SqlTriggerStore) -> None:
    for i in range(5):
        _claim(store, f"k{i}", trigger="t" if i % 2 else "u")
    assert [e.event_key for e in store.events()] == ["k4", "k3", "k2", "k1", "k0"]
    assert [e.event_key for e in store.events("t")] == ["k3", "k1"]
    assert len(store.events(limit=2)) == 2


def test_database_errors_are_mloop_errors(metadata_url: str, tmp_path: Path) -> None:
    if metadata_url.startswith("sqlite"):
        unreachable = f"sqlite:///{tmp_path / 'gone' / 'meta.db'}"
        corrupt = tmp_path / "corrupt.db"
        corrupt.write_bytes(b"this is not a database" * 200)
        broken = SqlTriggerStore(sa.create_engine(f"sqlite:///{corrupt}"))
        with pytest.raises(MetadataStoreError, match="metadata store failed"):
            broken.events()
    else:
        unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2"
    down = SqlTriggerStore(sa.create_engine(unreachable))
    with pytest.raises(StoreUnavailableError, match="metadata store unavailable"):
        down.events()
    with pytest.raises(StoreUnavailableError):
        _claim(down, "k")
    with pytest.raises(StoreUnavailableError):
        down.state("t")


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[SqlTriggerStore]:
    engine = connect(postgres_url)
    yield SqlTriggerStore(engine)
    engine.dispose()


def _slow_host(monkeypatch: pytest.MonkeyPatch, minutes: float) -> None:
    """This process's clock, ``minutes`` behind, as a host whose clock is off would read it."""
    from datetime import timedelta

    import mloop.entities
    import mloop.stores.sql.base

    skewed = lambda: datetime.now(UTC) - timedelta(minutes=minutes)  # noqa: E731
    for module in (mloop.entities, mloop.stores.sql.base, sys.modules["mloop.stores.sql.triggers"]):
        monkeypatch.setattr(module, "utcnow", skewed)


def test_a_lease_held_by_a_host_with_a_slow_clock_is_not_taken_from_it(
    pg_store: SqlTriggerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hosts sharing PostgreSQL judge a lease by the database's clock: a scheduler whose host was 10
    minutes slow wrote leases that had "expired" for every other host, which ran its event a second
    time beside it, and took its evaluation lease while it evaluated."""
    with monkeypatch.context() as slow:
        _slow_host(slow, 10)
        event = _claim(pg_store, "k", owner="slow", lease_s=60)
        assert event is not None
        with pg_store.evaluating("t", "slow", lease_s=60) as mine:
            assert mine
            pg_store.renew("slow", 60, events=[event.id], triggers=["t"])  # type: ignore[attr-defined]
            slow.undo()  # the other host's clock is right
            assert pg_store.reclaim_expired("other", lease_s=60) == []
            with pg_store.evaluating("t", "other", lease_s=60) as theirs:
                assert not theirs


def test_only_an_event_that_ended_without_success_is_retried_and_once(store: SqlTriggerStore) -> None:
    event = _claim(store, "k", owner="a")
    assert event is not None
    assert store.retry(event.id, owner="b") is None  # still pending: its owner runs it
    store.update(event.id, status="failed", run_id="run1")
    first = store.retry(event.id, owner="b", lease_s=60)
    assert first is not None and (first.status, first.attempts, first.owner) == ("pending", 2, "b")
    assert first.lease_until is not None and first.lease_until > datetime.now(UTC)
    assert store.retry(event.id, owner="c") is None  # taken by b: two callers never both win
    store.update(event.id, status="succeeded")
    assert store.retry(event.id, owner="c") is None
    assert store.event(event.id).status == "succeeded"
    assert [e.id for e in store.events(status="succeeded")] == [event.id] and store.events(
        status="failed"
    ) == []
    with pytest.raises(NotFoundError, match="no trigger event 'nope'"):
        store.event("nope")
