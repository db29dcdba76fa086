"""An in-memory, columnar index of ``latest_metrics`` for the runs page: an index cache over the
store, not a second store.

Why: a page filtered on one metric and sorted on another reads, in SQL, either the sort's index until
50 runs pass the filter or all of the filter's matches. When the filter is unselective and
anti-correlated with the sort (``m0 > 0.7`` sorted by ``-m1`` where the best m1 values all fail),
both are tens of thousands of index entries per page. Held as one float array per metric key (a row
per run), the same page is a vectorised comparison and a partial sort over 100,000 values: about a
millisecond.

What it holds: the latest value of each metric key the pages have asked about (a key's column is
read whole on its first use), by run. What keeps it true:

* **New and changed values** — every request first reads the rows of ``latest_metrics`` changed since
  the previous look, by their ``seq`` (stamped by every write, see
  :func:`mloop.stores.sql.schema.latest_metrics_seq`): on SQLite the largest seq seen, on PostgreSQL
  the oldest transaction still running at the last look. So a value committed before a request is
  in that request's answer.
* **The database decides membership** — the index proposes the page's runs in page order; the page
  then reads those runs from the database, with their sort and filter values and every other
  condition (pipeline, status, params, time). A run the database no longer has is dropped from the
  index; a value that differs from the database's is corrected and the page recomputed. A page
  therefore never shows a run that the SQL plan would not, and the index only ever decides order.

**Sort orders** — a key a page sorts on also keeps its rows sorted by value (a permutation, built
on first use), so a page walks that order from the cursor instead of partitioning every passing value.
A row whose value changed since (or that was added since) is *moved*: the walk skips it and every page
checks the moved rows one by one, so the order never has to be right for them; it is sorted afresh
once the moved rows pass ``resort`` (or a sixteenth of the rows).

The index is per process and thread-safe; ``mloop server start`` makes one per worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import sqlalchemy as sa

from mloop.stores.sql import schema as t

__all__ = ["LatestMetricsIndex"]

_OPS = {
    ">": np.greater,
    ">=": np.greater_equal,
    "<": np.less,
    "<=": np.less_equal,
    "=": np.equal,
    "!=": np.not_equal,
}
# PostgreSQL: the rows stamped by transactions not finished at the previous look, and, on a row of its
# own (run_id NULL), the oldest transaction this statement's snapshot does not see finished
_PG_CHANGES = sa.text(
    "SELECT NULL AS run_id, NULL AS key, NULL AS value, "
    "pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS seq "
    "UNION ALL SELECT run_id, key, value, seq FROM latest_metrics WHERE seq >= :mark"
)
_SQLITE_CHANGES = sa.select(
    t.latest_metrics.c.run_id, t.latest_metrics.c.key, t.latest_metrics.c.value, t.latest_metrics.c.seq
).where(t.latest_metrics.c.seq > sa.bindparam("mark"))
_ID_DTYPE = "<U32"  # ids are letters and digits, at most 32 (the server's check_id)


@dataclass
class _SortOrder:
    """One key's rows in ascending order of the values they had when sorted (rows without a value
    left out), and which rows moved since: changed (``moved``) or added (from ``sorted_rows`` on)."""

    rows: np.ndarray
    values: np.ndarray
    moved: np.ndarray  # bool per row that existed when sorted
    sorted_rows: int
    moved_rows: list[int] = field(default_factory=list)  # the rows ``moved`` marks


class LatestMetricsIndex:
    """Latest metric values by run, as numpy columns, kept up to date from ``latest_metrics``.

    Construction stores nothing but empty state; the first page that needs a key reads its column.
    ``resort``: how many moved rows a sort order tolerates before it is sorted again (at least; a
    sixteenth of the rows when that is more).
    """

    def __init__(self, *, resort: int = 1024) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, int] = {}
        self._ids = np.empty(0, dtype=_ID_DTYPE)
        self._columns: dict[str, np.ndarray] = {}
        self._orders: dict[str, _SortOrder] = {}
        self.resort = resort
        self._mark: int | None = None  # what the previous look saw (seq or transaction id), None: never
        self._fresh_from = float("-inf")  # when (time.monotonic()) the latest look began

    # keeping up ----------------------------------------------------------------------------------

    def refresh(self, conn: sa.Connection, keys: Iterable[str]) -> None:
        """Read what changed since the last look, then load the columns of ``keys`` not held yet."""
        asked = time.monotonic()
        with self._lock:
            postgres = conn.dialect.name == "postgresql"
            if self._fresh_from >= asked:
                # a look that began after this request arrived has finished meanwhile: it saw every
                # change committed before the request, so many viewers share one look
                pass
            elif self._mark is None:
                # the first look: no column is held, so nothing to bring up to date; start the marks
                self._fresh_from = time.monotonic()
                self._mark = self._now(conn, postgres)
            else:
                self._fresh_from = time.monotonic()
                # PostgreSQL: one statement, one snapshot: the changes and where the next look starts
                changes = _PG_CHANGES if postgres else _SQLITE_CHANGES
                changed = conn.execute(changes, {"mark": self._mark})
                newest = self._mark
                for run_id, key, value, seq in changed:
                    if run_id is None:  # PostgreSQL's row carrying the snapshot's oldest transaction
                        newest = seq
                        continue
                    if not postgres:
                        newest = max(newest, seq)
                    if key in self._columns:
                        row = self._row(run_id)
                        self._columns[key][row] = value
                        self._moved(key, row)
                self._mark = newest
            for key in keys:
                if key not in self._columns:
                    self._load(conn, key)

    def warm(self, conn: sa.Connection, *, keys: int = 64) -> None:
        """Load the columns of up to ``keys`` metric keys now (a server does it before its first
        request, so no viewer waits for a column to be read)."""
        lm = t.latest_metrics
        found = conn.execute(sa.select(lm.c.key).distinct().order_by(lm.c.key).limit(keys)).scalars().all()
        self.refresh(conn, found)

    @staticmethod
    def _now(conn: sa.Connection, postgres: bool) -> int:
        """Where the next look starts: the oldest running transaction (PostgreSQL), the largest seq
        (SQLite). Read before the changes themselves, so a change committing in between is read
        twice rather than never."""
        if postgres:
            return int(
                conn.execute(
                    sa.text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                ).scalar_one()
            )
        return int(
            conn.execute(sa.select(sa.func.coalesce(sa.func.max(t.latest_metrics.c.seq), 0))).scalar_one()
        )

    def _load(self, conn: sa.Connection, key: str) -> None:
        """Read one key's column whole. Rows changing meanwhile have a seq past the mark (which was
        taken before), so the next look reads them again."""
        lm = t.latest_metrics
        rows = conn.execute(sa.select(lm.c.run_id, lm.c.value).where(lm.c.key == key)).all()
        positions = np.fromiter((self._row(run_id) for run_id, _ in rows), dtype=np.intp, count=len(rows))
        column = np.full(len(self._ids), np.nan)
        column[positions] = np.fromiter((value for _, value in rows), dtype=float, count=len(rows))
        self._columns[key] = column
        self._orders.pop(key, None)

    def _moved(self, key: str, row: int) -> None:
        """Row ``row`` of ``key`` changed: its place in the key's sort order is no longer known."""
        order = self._orders.get(key)
        if order is not None and row < order.sorted_rows and not order.moved[row]:
            order.moved[row] = True
            order.moved_rows.append(row)

    def _row(self, run_id: str) -> int:
        """The row of ``run_id``, appended (every column grown, NaN: no value) when new."""
        row = self._rows.get(run_id)
        if row is not None:
            return row
        row = len(self._rows)
        if row >= len(self._ids):
            size = max(1024, 2 * len(self._ids))
            ids = np.empty(size, dtype=_ID_DTYPE)
            ids[:row] = self._ids[:row]
            self._ids = ids
            for key, column in self._columns.items():
                grown = np.full(size, np.nan)
                grown[:row] = column[:row]
                self._columns[key] = grown
        self._ids[row] = run_id
        self._rows[run_id] = row
        return row

    def correct(self, truth: dict[str, dict[str, float | None]]) -> bool:
        """Set the held values of these runs (``{run id: {key: value}}``, None: no value, e.g. a
        deleted run) to the database's; whether any was stale."""
        changed = False
        with self._lock:
            for run_id, values in truth.items():
                row = self._rows.get(run_id)
                if row is None:
                    continue
                for key, value in values.items():
                    column = self._columns.get(key)
                    if column is None:
                        continue
                    old = column[row]
                    if value is None:
                        if not np.isnan(old):
                            column[row] = np.nan
                            self._moved(key, row)
                            changed = True
                    elif old != value:
                        column[row] = value
                        self._moved(key, row)
                        changed = True
        return changed

    # pages ---------------------------------------------------------------------------------------

    def held(self, run_id: str, key: str) -> float | None:
        """The held value of ``key`` for ``run_id`` (None when there is none)."""
        with self._lock:
            row, column = self._rows.get(run_id), self._columns.get(key)
            if row is None or column is None or np.isnan(column[row]):
                return None
            return float(column[row])

    def order(
        self,
        metrics: Sequence[tuple[str, str, float]],
        sort_key: str | None,
        descending: bool,
        after: tuple[float | None, str] | None,
        count: int,
    ) -> list[tuple[str, float | None]]:
        """The first ``count`` (run id, sort value) passing every metric condition, strictly after
        ``after`` in page order (sort value, then id; by id alone when ``sort_key`` is None).

        A run without a value of a filtered or sorted key is left out, as the SQL plan leaves it.
        Keys must have been loaded by :meth:`refresh`.
        """
        with self._lock:
            n = len(self._rows)
            ids = self._ids[:n]
            mask = np.ones(n, dtype=bool)
            with np.errstate(invalid="ignore"):
                for key, op, number in metrics:
                    column = self._columns[key][:n]
                    mask &= _OPS[op](column, number)
                    if op == "!=":
                        mask &= ~np.isnan(column)
            if sort_key is None:
                chosen = np.flatnonzero(mask)
                if after is not None:
                    chosen_ids = ids[chosen]
                    chosen = chosen[chosen_ids < after[1] if descending else chosen_ids > after[1]]
                rank = np.argsort(ids[chosen], kind="stable")
                chosen = chosen[rank[::-1] if descending else rank][:count]
                return [(str(ids[i]), None) for i in chosen]
            sort = self._columns[sort_key][:n]
            chosen = self._candidates(sort_key, mask, descending, after, count)
            keys = -sort[chosen] if descending else sort[chosen]
            if len(chosen) > count:
                # the count best values, and every run tied with the last of them (ids break ties)
                kth = np.partition(keys, count - 1)[count - 1]
                near = keys <= kth
                chosen, keys = chosen[near], keys[near]
            by_id = np.argsort(ids[chosen], kind="stable")
            if descending:
                by_id = by_id[::-1]
            by_value = np.argsort(keys[by_id], kind="stable")
            chosen = chosen[by_id][by_value][:count]
            return [(str(ids[i]), float(sort[i])) for i in chosen]

    def _candidates(
        self,
        sort_key: str,
        mask: np.ndarray,
        descending: bool,
        after: tuple[float | None, str] | None,
        count: int,
    ) -> np.ndarray:
        """Rows among which the page's first ``count`` are, ties included: the first ``count`` rows
        passing ``mask`` and ``after`` along the key's sort order (with every row tied with the last
        of them), and every moved row that passes. Called under the lock."""
        n = len(mask)
        sort, ids = self._columns[sort_key][:n], self._ids[:n]
        order = self._sort_order(sort_key, n)
        rows = order.rows[::-1] if descending else order.rows
        values = order.values[::-1] if descending else order.values
        moved = order.moved
        after_value, after_id = after if after is not None else (None, "")
        start = 0
        if after_value is not None:  # skip the rows wholly before the cursor's value in page order
            if descending:
                start = len(values) - int(np.searchsorted(order.values, after_value, side="right"))
            else:
                start = int(np.searchsorted(order.values, after_value, side="left"))

        def beyond(at: np.ndarray, value_at: np.ndarray) -> np.ndarray:
            """Which of rows ``at`` (valued ``value_at``) lie strictly after the cursor."""
            if after_value is None:
                return np.ones(len(at), dtype=bool)
            tied = value_at == after_value
            ok = value_at < after_value if descending else value_at > after_value
            ok[tied] = ids[at[tied]] < after_id if descending else ids[at[tied]] > after_id
            return ok

        # rows that did not move, in page order from the cursor: their sorted value is their value
        found: list[np.ndarray] = []
        have, stop, size = 0, len(rows), max(4 * count, 256)
        while start < stop and have < count:
            at, at_values = rows[start : start + size], values[start : start + size]
            keep = mask[at] & ~moved[at] & beyond(at, at_values)
            found.append(at[keep][: count - have])  # a doubled chunk may hold thousands: keep a page
            have += len(found[-1])
            start += size
            size *= 2
        if have >= count:  # the rows tied with the count-th lie next to it in the order
            last = np.concatenate(found)[count - 1]
            tied_to = sort[last]
            lo, hi = (
                np.searchsorted(order.values, tied_to, side="left"),
                np.searchsorted(order.values, tied_to, side="right"),
            )
            at = order.rows[lo:hi]
            found.append(at[mask[at] & ~moved[at] & beyond(at, order.values[lo:hi])])
        # rows that moved or came since the order was sorted, each checked on its own value
        late = np.concatenate([np.array(order.moved_rows, dtype=np.intp), np.arange(order.sorted_rows, n)])
        late = late[mask[late] & ~np.isnan(sort[late])]
        found.append(late[beyond(late, sort[late])])
        return np.unique(np.concatenate(found))

    def _sort_order(self, key: str, n: int) -> _SortOrder:
        """The key's sort order, sorted afresh when it is missing or too many rows moved."""
        order = self._orders.get(key)
        if order is None or len(order.moved_rows) + (n - order.sorted_rows) > max(self.resort, n // 16):
            column = self._columns[key][:n]
            rows = np.flatnonzero(~np.isnan(column))
            rows = rows[np.argsort(column[rows], kind="stable")]
            order = _SortOrder(rows, column[rows], np.zeros(n, dtype=bool), n)
            self._orders[key] = order
        return order
