"""The PipelineStore contract (deployed pipeline versions, aliases, CI verdicts) on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from mloop.entities import CiRecord, PipelineVersion, utcnow
from mloop.errors import ConflictError, NotFoundError, ParameterError
from mloop.stores.base import PipelineStore
from mloop.stores.sql.metadata import SqlMetadataStore
from mloop.stores.sql.pipelines import SqlPipelineStore


@pytest.fixture
def store(metadata_url: str) -> Iterator[PipelineStore]:
    meta = SqlMetadataStore.from_url(metadata_url)
    yield SqlPipelineStore(meta.engine)
    meta.close()


def draft(name: str = "churn", code: str = "a" * 64, **kw: object) -> PipelineVersion:
    values = {
        "id": "",
        "name": name,
        "version": 0,
        "entry": "churn/pipeline.py:training",
        "snapshot_artifact_id": "01ART",
        "snapshot_digest": "d" * 64,
        "code_hash": code,
        "params": {"C": "0.5"},
        "git_commit": "c" * 40,
        "git_dirty": False,
        "python_version": "3.11.9",
        "packages": {"mloop": "0.1.0", "scikit-learn": "1.5.0"},
        "ci": {"passed": True},
        "forced_reason": None,
        "created_at": utcnow(),
        "created_by": "alice",
    } | kw
    return PipelineVersion(**values)  # type: ignore[arg-type]


def test_versions_are_numbered_per_name_and_read_back_whole(store: PipelineStore) -> None:
    v1, v2 = store.create_version(draft()), store.create_version(draft(code="b" * 64, git_dirty=True))
    other = store.create_version(draft("fraud"))
    assert (v1.version, v2.version, other.version) == (1, 2, 1) and v1.id != v2.id
    assert store.get_version("churn", 1) == v1
    assert store.get_version("churn") == v2  # the newest
    got = store.get_version("churn", 2)
    assert got.git_dirty is True and got.packages == {"mloop": "0.1.0", "scikit-learn": "1.5.0"}
    assert got.params == {"C": "0.5"} and got.ci == {"passed": True}
    assert [v.ref for v in store.list_versions()] == ["churn:1", "churn:2", "fraud:1"]
    assert [v.ref for v in store.list_versions("fraud")] == ["fraud:1"]


def test_concurrent_deploys_get_unique_numbers(store: PipelineStore) -> None:
    numbers: list[int] = []

    def deploy() -> None:
        for _ in range(5):
            numbers.append(store.create_version(draft()).version)

    threads = [threading.Thread(target=deploy) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == list(range(1, 16))


def test_concurrent_identical_deploys_make_one_version(store: PipelineStore) -> None:
    """Six threads deploy the same code at once (twice over): one version is created, every other
    deploy gets it back, and a different code still makes a new one."""
    results: list[tuple[int, bool]] = []
    barrier = threading.Barrier(6)

    def deploy() -> None:
        barrier.wait()
        for _ in range(2):
            version, created = store.create_or_reuse(draft(), lambda v: v.code_hash == draft().code_hash)
            results.append((version.version, created))

    threads = [threading.Thread(target=deploy) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [(1, False)] * 11 + [(1, True)]
    assert [v.version for v in store.list_versions("churn")] == [1]
    other, created = store.create_or_reuse(draft(code="b" * 64), lambda v: v.code_hash == "b" * 64)
    assert (other.version, created) == (2, True)


def test_missing_names_versions_and_aliases_are_named(store: PipelineStore) -> None:
    with pytest.raises(NotFoundError, match="no deployed pipeline 'nope'"):
        store.get_version("nope")
    store.create_version(draft())
    with pytest.raises(NotFoundError, match=r"has no version 7 \(versions 1-1\)"):
        store.get_version("churn", 7)
    with pytest.raises(NotFoundError, match=r"no alias 'production' \(aliases: none\)"):
        store.get_version("churn", alias="production")
    with pytest.raises(NotFoundError, match="no version 3"):
        store.move_alias("churn", "production", 3, action="promote", who="a", reason="")
    with pytest.raises(ParameterError, match="pipeline name"):
        store.create_version(draft("bad name!"))
    with pytest.raises(NotFoundError):
        store.list_versions("nope")


def test_aliases_move_with_history_and_roll_back_in_order(store: PipelineStore) -> None:
    for _ in range(3):
        store.create_version(draft())
    store.move_alias("churn", "production", 1, action="promote", who="alice", reason="first")
    store.move_alias("churn", "production", 2, action="promote", who="bob", reason="better")
    store.move_alias("churn", "production", 3, action="promote", who="bob", reason="best")
    assert store.get_version("churn", alias="production").version == 3
    back = store.move_alias("churn", "production", None, action="rollback", who="carol", reason="bad")
    assert (back.from_version, back.to_version) == (3, 2)
    store.move_alias("churn", "production", None, action="rollback", who="carol", reason="worse")
    assert store.aliases("churn") == {"production": 1}
    with pytest.raises(ConflictError, match="no earlier version to roll back to"):
        store.move_alias("churn", "production", None, action="rollback", who="carol", reason="")
    history = store.alias_history("churn", "production")
    assert [(e.action, e.to_version, e.who) for e in history] == [
        ("promote", 1, "alice"),
        ("promote", 2, "bob"),
        ("promote", 3, "bob"),
        ("rollback", 2, "carol"),
        ("rollback", 1, "carol"),
    ]
    with pytest.raises(NotFoundError, match="no alias 'canary'"):
        store.move_alias("churn", "canary", None, action="rollback", who="x", reason="")


def test_promoting_the_current_holder_records_nothing_and_rollback_skips_repeats(
    store: PipelineStore,
) -> None:
    for _ in range(2):
        store.create_version(draft())
    store.move_alias("churn", "production", 1, action="promote", who="a", reason="")
    store.move_alias("churn", "production", 2, action="promote", who="a", reason="")
    same = store.move_alias("churn", "production", 2, action="promote", who="a", reason="again")
    assert (same.action, same.from_version, same.to_version) == ("unchanged", 2, 2)
    assert [e.to_version for e in store.alias_history("churn", "production")] == [1, 2]
    back = store.move_alias("churn", "production", None, action="rollback", who="a", reason="")
    assert (back.from_version, back.to_version) == (2, 1)
    with pytest.raises(ConflictError, match="no earlier version to roll back to"):
        store.move_alias("churn", "production", None, action="rollback", who="a", reason="")


def test_ci_verdicts_are_kept_per_code_hash_newest_first(store: PipelineStore) -> None:
    assert store.get_ci("f" * 64) is None
    now = utcnow()
    store.record_ci(CiRecord("f" * 64, "p.py:t", False, {"checks": [{"check": "finite"}]}, now))
    store.record_ci(CiRecord("f" * 64, "p.py:t", True, {"checks": []}, now + timedelta(seconds=1)))
    store.record_ci(CiRecord("e" * 64, "p.py:t", False, {}, now))
    got = store.get_ci("f" * 64)
    assert got is not None and got.passed and got.report == {"checks": []} and got.pipeline == "p.py:t"
    assert store.get_ci("e" * 64).passed is False


def test_a_name_that_differs_only_by_case_is_refused(store: PipelineStore) -> None:
    """``Churn`` beside ``churn`` was deployed as a second pipeline."""
    store.create_version(draft())
    with pytest.raises(
        ParameterError, match="pipeline 'Churn' differs from deployed pipeline 'churn' only by case"
    ):
        store.create_version(draft("Churn", code="b" * 64))
    assert store.create_version(draft(code="b" * 64)).version == 2
