"""Serving by entity key: a version registered with a feature service gets its features online.

A request row may then carry only the entity keys (plus any request-time features); the hook looks the
service's features up in the online store, puts them in the row under their ``view:feature`` names
(a value the request already carries wins), drops the keys the model does not take, and hands the row
to the usual signature validation, so the values used are the ones validated and logged. A key the
online store has never seen is a 404 naming it, never a 5xx; a stale value is null and fails
validation like any missing value.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mloop.entities import ModelVersion
from mloop.errors import NotFoundError
from mloop.serving.predictor import InputError
from mloop.workspace import Workspace

if TYPE_CHECKING:  # the feature store (and DuckDB) load only for a version that reads features by key
    from mloop.features.store import Selection

__all__ = ["FeatureHook"]


class FeatureHook:
    """Per served version: the feature service's selection, resolved once, and the lookup."""

    def __init__(self, workspace: Workspace) -> None:
        self.ws = workspace
        self._selections: dict[str, tuple[Selection, list[str]] | None] = {}
        self._lock = threading.Lock()

    def _selection(self, version: ModelVersion, columns: Sequence[str]) -> tuple[Selection, list[str]] | None:
        if version.id not in self._selections:
            service = version.signature.get("feature_service")
            with self._lock:
                self._selections[version.id] = (
                    (self.ws.features.selection(service=service), list(columns)) if service else None
                )
        return self._selections[version.id]

    def entity_keys(self, version: ModelVersion, columns: Sequence[str]) -> list[str]:
        """The join keys a request may carry instead of the features (none without a feature service)."""
        resolved = self._selection(version, columns)
        return [] if resolved is None else sorted({k for view, _ in resolved[0] for k in view.join_keys})

    def entities(
        self, version: ModelVersion, columns: Sequence[str], rows: list[Any]
    ) -> list[str | None] | None:
        """Each row's entity keys as JSON text (None for a row that carries none), for the log;
        None for a version that reads no features by key."""
        keys = self.entity_keys(version, columns)
        if not keys:
            return None
        out: list[str | None] = []
        for row in rows:
            found = {k: row[k] for k in keys if isinstance(row, dict) and k in row}
            out.append(json.dumps(found, sort_keys=True, default=str) if found else None)
        return out

    def fill(
        self, version: ModelVersion, columns: Sequence[str], rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """``rows`` with the version's online features added (unchanged when it has no feature service)."""
        resolved = self._selection(version, columns)
        if resolved is None:
            return rows
        selection, wanted = resolved
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise InputError(f"instances[{i}] must be a JSON object", field=f"instances[{i}]")
        keys = {k for view, _ in selection for k in view.join_keys}
        refs = [
            f"{view.name}:{f}" for view, names in selection for f in names if f"{view.name}:{f}" in wanted
        ]
        # rows that already carry every feature the model reads need no lookup (and no keys)
        todo = [i for i, row in enumerate(rows) if any(r not in row for r in refs)]
        if not todo:  # the keys such rows may still carry are not the model's columns
            return [{c: v for c, v in row.items() if c in wanted or c not in keys} for row in rows]
        for i in todo:
            missing = [k for k in sorted(keys) if k not in rows[i]]
            if missing:
                raise InputError(
                    f"instances[{i}]: entity key {missing[0]!r} is missing (the model reads its features "
                    f"by key from feature service {version.signature['feature_service']!r})",
                    field=missing[0],
                )
            for k in sorted(keys):  # null, a list or an object is no key: 422, not "unknown entity"
                value = rows[i][k]
                if value is None or isinstance(value, bool | list | dict):
                    raise InputError(
                        f"instances[{i}]: entity key {k!r} must be a string or a number, "
                        f"got {type(value).__name__ if value is not None else 'null'}",
                        field=k,
                    )
        from mloop.features.online import lookup

        found = lookup(self.ws.features.online_store(), selection, [rows[i] for i in todo])
        filled = list(rows)
        for i, got in zip(todo, found, strict=True):
            row = rows[i]
            unknown = [view for view, ok in got["found"].items() if not ok]
            if unknown:
                view = next(v for v, _ in selection if v.name == unknown[0])
                key = ", ".join(f"{k}={row[k]!r}" for k in view.join_keys)
                raise NotFoundError(
                    f"instances[{i}]: no online features for {key} in feature view {view.name!r} "
                    "(unknown entity, or not materialized)",
                    field=view.join_keys[0],
                )
            merged = {**got["features"], **row}
            # the model's columns, plus anything else the request sent (validation refuses extras as usual)
            filled[i] = {
                c: v for c, v in merged.items() if c in wanted or (c not in keys and c not in got["features"])
            }
        return filled
