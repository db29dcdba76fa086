"""Pages of runs (filters, metric sort, keyset cursor) on SQLite and PostgreSQL."""

from __future__ import annotations

import mloop
from mloop.stores.sql.run_pages import RunPageQuery, SqlRunPages


def test_metric_sort_with_ties_pages_without_gaps_or_repeats(any_workspace: mloop.Workspace) -> None:
    ws = any_workspace
    for i in range(13):
        with ws.start_run("sweep", {"lr": 0.1 if i % 2 else 0.2}) as tr:
            tr.log_metric("acc", 0.0)  # overwritten: only the latest value counts
            tr.log_metric("acc", float(i % 4), step=1)
    pages = SqlRunPages(ws.metadata.engine)  # type: ignore[attr-defined]
    seen: list[tuple[float | None, str]] = []
    after = None
    while True:
        page = pages.page(RunPageQuery(sort_metric="acc", limit=4, after=after))
        seen += list(zip(page.sort_values, [r.id for r in page.runs], strict=True))
        after = page.next_after
        if after is None:
            break
    assert len(seen) == 13 and len({i for _, i in seen}) == 13
    assert seen == sorted(seen, reverse=True)
    filtered = pages.page(RunPageQuery(metrics=(("acc", ">=", 2.0),), params=(("lr", 0.1),), limit=50))
    assert filtered.runs and all(r.params["lr"] == 0.1 for r in filtered.runs)
    assert all(ws.metadata.get_metrics(r.id, "acc")[-1].value >= 2 for r in filtered.runs)
    assert len(filtered.runs) == sum(1 for i in range(13) if i % 2 and i % 4 >= 2)
