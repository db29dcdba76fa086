"""Ids sort in creation order: audit trails, trigger events and logs are listed by id."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ulid import ULID

from mloop.entities import new_id


def test_ids_created_in_one_millisecond_still_sort_in_creation_order() -> None:
    """Random bits per id made ids of one millisecond sort at random (audit entries listed out of order)."""
    ids = [new_id() for _ in range(50_000)]  # thousands per millisecond
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(str(ULID.from_str(i)) == i for i in ids[:100])


def test_ids_from_many_threads_are_unique() -> None:
    with ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(lambda _: [new_id() for _ in range(5_000)], range(8)))
    every = [i for batch in batches for i in batch]
    assert len(set(every)) == len(every)
    assert all(batch == sorted(batch) for batch in batches)
