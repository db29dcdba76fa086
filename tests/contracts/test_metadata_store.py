"""The metadata store contract, run against SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mloop.entities import RunStatus, StepStatus
from mloop.errors import NotFoundError, ParameterError
from mloop.stores.base import NewArtifact, RunQuery
from mloop.stores.sql.metadata import SqlMetadataStore


@pytest.fixture
def store(metadata_url: str) -> Iterator[SqlMetadataStore]:
    s = SqlMetadataStore.from_url(metadata_url)
    yield s
    s.close()


def _art(n: int) -> NewArtifact:
    return NewArtifact(f"{n:064x}", "json", "builtins.int", n, f"/tmp/{n}")


def _run(store: SqlMetadataStore, pipeline: str = "p", **params: object) -> str:
    return store.create_run(pipeline, params=params, trigger="manual", code_commit="abc", code_hash="h").id


def test_run_lifecycle_roundtrips_every_field(store: SqlMetadataStore) -> None:
    run = store.create_run(
        "train", params={"C": 1.5, "name": "x"}, trigger="schedule", code_commit="abc123", code_hash="h1"
    )
    assert run.status == RunStatus.RUNNING and run.created_at.tzinfo is not None
    done = store.finish_run(run.id, RunStatus.FAILED, error="boom")
    got = store.get_run(run.id)
    assert got == done
    assert (got.pipeline, got.trigger, got.params, got.code_commit, got.code_hash, got.error) == (
        "train",
        "schedule",
        {"C": 1.5, "name": "x"},
        "abc123",
        "h1",
        "boom",
    )
    assert got.status == RunStatus.FAILED and got.ended_at is not None and got.ended_at >= got.created_at
    assert got.created_at.utcoffset() is not None and got.created_at.utcoffset().total_seconds() == 0


def test_unknown_ids_raise_not_found(store: SqlMetadataStore) -> None:
    with pytest.raises(NotFoundError, match="run 'nope' not found"):
        store.get_run("nope")
    with pytest.raises(NotFoundError):
        store.finish_run("nope", RunStatus.SUCCEEDED)
    with pytest.raises(NotFoundError):
        store.get_step("nope")
    with pytest.raises(NotFoundError):
        store.get_artifact("nope")


def test_step_outputs_events_and_cache_lookup(store: SqlMetadataStore) -> None:
    run_id = _run(store)
    source = store.add_artifact(_art(1))
    step = store.start_step(run_id, "train", cache_key="k1", params={"C": 1}, inputs={"data": source.id})
    assert store.find_cached("k1") is None  # running executions are not cache hits
    outs = store.finish_step(
        step.id, StepStatus.SUCCEEDED, outputs={"model": _art(2)}, metrics=[("acc", 0.9, 0)]
    )
    hit = store.find_cached("k1")
    assert hit is not None
    assert hit[0].id == step.id and hit[1] == outs and outs["model"].digest == _art(2).digest
    events = {(e.kind, e.name, e.artifact_id) for e in store.events(step_run_ids=[step.id])}
    assert events == {("input", "data", source.id), ("output", "model", outs["model"].id)}
    assert [m.value for m in store.get_metrics(run_id, "acc")] == [0.9]


def test_failed_steps_are_never_cache_hits(store: SqlMetadataStore) -> None:
    step = store.start_step(_run(store), "s", cache_key="k2", params={}, inputs={})
    store.finish_step(step.id, StepStatus.FAILED, error_type="ValueError", error_message="bad")
    assert store.find_cached("k2") is None
    got = store.get_step(step.id)
    assert (got.status, got.error_type, got.error_message) == (StepStatus.FAILED, "ValueError", "bad")


def test_cached_step_relinks_the_same_artifacts(store: SqlMetadataStore) -> None:
    first = store.start_step(_run(store), "s", cache_key="k3", params={}, inputs={})
    outs = store.finish_step(first.id, StepStatus.SUCCEEDED, outputs={"output": _art(3)})
    cached = store.record_cached_step(
        _run(store), "s", cache_key="k3", params={}, inputs={}, cached_from=first.id,
        outputs={"output": outs["output"].id},
    )  # fmt: skip
    assert cached.status == StepStatus.CACHED and cached.cached_from == first.id
    producers = {e.step_run_id for e in store.events(artifact_ids=[outs["output"].id], kind="output")}
    assert producers == {first.id, cached.id}
    assert store.find_cached("k3")[0].id == first.id  # type: ignore[index]


def test_same_digest_is_one_artifact(store: SqlMetadataStore) -> None:
    a = store.add_artifact(_art(4))
    b = store.add_artifact(_art(4))
    assert a == b
    assert store.get_artifact(a.digest) == a


def test_search_runs_by_pipeline_status_param_and_latest_metric(store: SqlMetadataStore) -> None:
    ids = []
    for i in range(6):
        run_id = _run(store, "a" if i % 2 else "b", C=i % 3, kind="lr")
        store.log_metrics(run_id, [("acc", 0.5, 0), ("acc", i / 10, 1)])
        store.finish_run(run_id, RunStatus.SUCCEEDED if i < 4 else RunStatus.FAILED)
        ids.append(run_id)
    found = store.search_runs(RunQuery(pipeline="a", status=RunStatus.SUCCEEDED))
    assert [r.id for r in found] == [ids[3], ids[1]]  # newest first
    assert {r.id for r in store.search_runs(RunQuery(params={"C": 1}))} == {ids[1], ids[4]}
    # the latest value counts (0.5 at step 0 is older than i/10)
    assert {r.id for r in store.search_runs(RunQuery(metrics=[("acc", ">=", 0.3)]))} == set(ids[3:])
    assert len(store.search_runs(RunQuery(limit=2))) == 2
    with pytest.raises(ParameterError, match="operator"):
        store.search_runs(RunQuery(metrics=[("acc", "~", 1.0)]))


def test_params_and_metrics_logging(store: SqlMetadataStore) -> None:
    run_id = _run(store, lr=0.1)
    store.log_params(run_id, {"layers": [1, 2], "name": "m"})
    store.log_metrics(run_id, [("loss", 1.0, 0), ("loss", 0.5, 1)])
    assert store.get_params(run_id) == {"lr": 0.1, "layers": [1, 2], "name": "m"}
    assert [(m.step, m.value) for m in store.get_metrics(run_id, "loss")] == [(0, 1.0), (1, 0.5)]
    with pytest.raises(ParameterError, match="not JSON-serialisable"):
        store.log_params(run_id, {"bad": object()})
    with pytest.raises(ParameterError, match="not a number"):
        store.log_metrics(run_id, [("loss", "high", 0)])  # type: ignore[list-item]


def test_stale_runs_are_failed_with_a_reason(store: SqlMetadataStore) -> None:
    dead = _run(store)
    alive = _run(store)
    dead_pid = store.get_run(dead).pid
    step = store.start_step(dead, "s", cache_key="k", params={}, inputs={})
    failed = store.fail_stale_runs(
        host=store.get_run(dead).host or "", is_alive=lambda pid: pid != dead_pid,
        stale_after_s=3600,
    )  # fmt: skip
    # both runs come from this process (same pid); is_alive says it is dead
    assert set(failed) == {dead, alive}
    run = store.get_run(dead)
    assert run.status == RunStatus.FAILED and "died" in (run.error or "")
    assert store.get_step(step.id).status == StepStatus.FAILED
    heartbeat_run = _run(store)
    assert store.fail_stale_runs(host="other-host", is_alive=lambda pid: True, stale_after_s=3600) == []
    assert store.fail_stale_runs(host="other-host", is_alive=lambda pid: True, stale_after_s=1e-9) == [
        heartbeat_run
    ]


def test_artifacts_are_found_by_a_prefix_of_their_id_or_digest(store: SqlMetadataStore) -> None:
    first, second = store.add_artifact(_art(0xABC1)), store.add_artifact(_art(0xABC2))
    assert [a.id for a in store.find_artifacts(first.id[:12].lower())] in ([first.id], [first.id, second.id])
    assert [a.id for a in store.find_artifacts(first.id, limit=5)] == [first.id]
    digest_prefix = first.digest[:62]  # the two digests differ only in their last two hex digits
    assert {a.id for a in store.find_artifacts(digest_prefix.upper(), limit=5)} == {first.id, second.id}
    assert store.find_artifacts(first.digest[:62], limit=1) == [min((first, second), key=lambda a: a.id)]
    assert store.find_artifacts("%") == [] and store.find_artifacts("zz_z") == []


def test_artifacts_by_id_in_one_read(store: SqlMetadataStore) -> None:
    made = [store.add_artifact(_art(n)) for n in range(1, 1203)]  # more than one IN list of 500
    wanted = [a.id for a in made[::-1]] + [made[0].id, "nope"]  # any order, repeats, unknown ids
    found = store.get_artifacts(wanted)
    assert found == {a.id: a for a in made} and store.get_artifacts([]) == {}


def test_a_live_run_on_a_host_with_a_slow_clock_is_not_failed_as_stale(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's heartbeat is judged by other hosts: with PostgreSQL both sides read its clock. A host
    10 minutes slow wrote heartbeats 10 minutes old, and every other host failed its live runs."""
    from datetime import UTC, datetime, timedelta

    import mloop.entities
    import mloop.stores.sql.base
    import mloop.stores.sql.metadata

    store = SqlMetadataStore.from_url(postgres_url)
    try:
        with monkeypatch.context() as slow:
            skewed = lambda: datetime.now(UTC) - timedelta(minutes=10)  # noqa: E731
            for module in (mloop.entities, mloop.stores.sql.base, mloop.stores.sql.metadata):
                slow.setattr(module, "utcnow", skewed)
            live = _run(store)
            store.heartbeat(live)
        assert store.fail_stale_runs(host="other-host", is_alive=lambda pid: True, stale_after_s=120) == []
        assert store.get_run(live).status == RunStatus.RUNNING
    finally:
        store.close()
