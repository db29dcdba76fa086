"""``ws.features``: the feature store of one workspace, one method per thing a user (or a shell) does.

Definitions live in the metadata store as versions; offline joins read the views' sources through
DuckDB; online reads go to the workspace's online store (SQLite by default, Redis when configured).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from mloop.entities import FeatureDefinition, Materialization, utcnow
from mloop.errors import ConflictError, NotFoundError, ParameterError
from mloop.features import offline, online
from mloop.features.definitions import Definitions, FeatureService, FeatureView, load_definitions, parse_ref
from mloop.features.sources import SqlSource, remote_digest, sql_digest, sql_table
from mloop.stores.base import FeatureRegistry, OnlineStore

__all__ = ["Change", "FeatureStore", "Selection"]

Selection = list[tuple[FeatureView, list[str]]]


@dataclass(frozen=True)
class Change:
    """What ``apply`` did to one definition: ``created``, ``updated`` or ``unchanged``."""

    kind: str
    name: str
    action: str
    version: int
    diff: dict[str, list[Any]] = field(default_factory=dict)
    breaking: list[str] = field(default_factory=list)


class FeatureStore:
    """Apply, inspect, join offline, materialize and read online: the feature store of a workspace."""

    def __init__(
        self,
        registry: FeatureRegistry,
        online_store: Callable[[], OnlineStore],
        *,
        who: Callable[[], str],
        temp_dir: Path | None = None,
        services_in_use: Callable[[], Mapping[str, list[str]]] | None = None,
    ) -> None:
        self.registry = registry
        self._services_in_use = services_in_use or dict
        self._online_factory = online_store
        self._online: OnlineStore | None = None
        self._who = who
        self._temp_dir = temp_dir
        self._views: dict[str, FeatureView] = {}
        self._selections: dict[tuple[tuple[str, ...] | None, str | None], Selection] = {}

    # definitions ---------------------------------------------------------------------------------

    def _connect(self) -> duckdb.DuckDBPyConnection:
        return offline.connect(self._temp_dir)

    def apply(self, definitions: str | Path | Definitions, *, force: bool = False) -> list[Change]:
        """Record every definition whose spec changed as a new version; returns the diff.

        A breaking change (join keys, timestamp column, a removed feature) to a view that is in use
        (materialized, or named by a feature service), or a feature removed from a service that a
        registered model version reads by key, needs ``force=True``. A view whose keys or timestamp
        changed loses its online rows (they were stored under the old keys): materialize it again.
        """
        defs = definitions if isinstance(definitions, Definitions) else load_definitions(definitions)
        con = self._connect()
        try:
            specs: list[tuple[str, str, dict[str, Any]]] = [
                ("entity", e.name, e.to_dict()) for e in defs.entities.values()
            ]
            for view in defs.views.values():
                resolved, _ = offline.resolve_view(con, view)
                specs.append(("view", view.name, resolved.to_dict()))
        finally:
            con.close()
        view_features = {d.name: d.spec.get("features") or [] for d in self.registry.latest("view")}
        view_features.update({n: spec.get("features") or [] for k, n, spec in specs if k == "view"})
        for svc in defs.services.values():
            if len(set(svc.features)) != len(svc.features):
                raise ParameterError(f"feature service {svc.name!r} names a feature twice", field="features")
            for ref in svc.features:
                vname, feature = parse_ref(ref)
                if vname not in view_features:
                    raise NotFoundError(
                        f"feature service {svc.name!r}: unknown feature view in {ref!r}", field="features"
                    )
                if feature != "*" and feature not in view_features[vname]:
                    raise NotFoundError(
                        f"feature service {svc.name!r}: feature view {vname!r} has no feature {feature!r}",
                        field="features",
                    )
            specs.append(("service", svc.name, svc.to_dict()))
        plans = [self._plan(kind, name, spec, defs) for kind, name, spec in specs]
        blocked = [p for p in plans if p[3] and not force]
        if blocked:
            kind, name, _, why, _ = blocked[0]
            raise ConflictError(
                f"breaking change to {kind} {name!r} which is in use ({'; '.join(why)}); "
                "apply with --force to record it anyway",
                field=name,
            )
        changes = []
        for kind, name, spec, breaking, old in plans:
            recorded = self.registry.record(kind, name, spec, who=self._who())
            if recorded is None:
                changes.append(Change(kind, name, "unchanged", old.version if old else 0))
                continue
            rekeyed = kind == "view" and old is not None and _rekeyed(old.spec, spec)
            if rekeyed and self.registry.last_materialization(name) is not None:
                self.online_store().drop(name)
            diff = {
                k: [old.spec.get(k) if old else None, v]
                for k, v in spec.items()
                if old is None or old.spec.get(k) != v
            }
            changes.append(
                Change(kind, name, "updated" if old else "created", recorded.version, diff, breaking)
            )
        self._views.clear()
        self._selections.clear()
        return changes

    def _plan(
        self, kind: str, name: str, spec: dict[str, Any], defs: Definitions
    ) -> tuple[str, str, dict[str, Any], list[str], FeatureDefinition | None]:
        """The change to ``kind``/``name`` with why it breaks a view in use (empty: it does not)."""
        try:
            old: FeatureDefinition | None = self.registry.get(kind, name)
        except NotFoundError:
            old = None
        if kind == "service" and old is not None:
            removed = sorted(set(old.spec.get("features") or ()) - set(spec.get("features") or ()))
            users = self._services_in_use().get(name, [])
            if removed and users:
                why = [f"feature(s) removed: {', '.join(removed)}; read by {', '.join(users)}"]
                return kind, name, spec, why, old
            return kind, name, spec, [], old
        if kind != "view" or old is None:
            return kind, name, spec, [], old
        why = []
        for key in ("entities", "timestamp"):
            if old.spec.get(key) != spec.get(key):
                why.append(f"{key} changed")
        removed = sorted(set(old.spec.get("features") or ()) - set(spec.get("features") or ()))
        if removed:
            why.append(f"feature(s) removed: {', '.join(removed)}")
        if not why or not self._in_use(name, defs):
            return kind, name, spec, [], old
        return kind, name, spec, why, old

    def _keyed_since(self, view: str) -> int:
        """The first version of ``view`` with its current keys and timestamp (what online rows follow)."""
        versions = self.registry.versions("view", view)
        since = versions[0].version if versions else 0
        for before, after in itertools.pairwise(versions):
            if _rekeyed(before.spec, after.spec):
                since = after.version
        return since

    def _in_use(self, view: str, defs: Definitions) -> bool:
        if self.registry.last_materialization(view) is not None:
            return True
        services = [d.spec for d in self.registry.latest("service")]
        services += [s.to_dict() for s in defs.services.values()]
        return any(parse_ref(r)[0] == view for s in services for r in s["features"])

    def definitions(self, kind: str | None = None) -> list[FeatureDefinition]:
        """The latest version of every definition."""
        return self.registry.latest(kind)

    def show(self, name: str) -> dict[str, Any]:
        """A definition by name (view, service or entity): its latest spec, versions and materialization."""
        for kind in ("view", "service", "entity"):
            try:
                latest = self.registry.get(kind, name)
            except NotFoundError:
                continue
            result: dict[str, Any] = {
                "kind": kind,
                "name": name,
                "version": latest.version,
                "spec": latest.spec,
                "versions": [
                    {"version": d.version, "created_at": d.created_at, "who": d.who, "digest": d.digest}
                    for d in self.registry.versions(kind, name)
                ],
            }
            if kind == "view":
                result["last_materialization"] = self.registry.last_materialization(name)
            return result
        raise NotFoundError(f"no feature view, service or entity named {name!r}", field="name")

    def view(self, name: str, version: int | None = None) -> FeatureView:
        """A recorded view (its latest version unless ``version`` is given)."""
        if version is None and name in self._views:
            return self._views[name]
        try:
            spec = self.registry.get("view", name, version).spec
        except NotFoundError:
            raise NotFoundError(f"unknown feature view {name!r}", field="features") from None
        view = FeatureView.from_dict(spec)
        if version is None:
            self._views[name] = view
        return view

    def selection(self, features: Sequence[str] | None = None, service: str | None = None) -> Selection:
        """Views and feature names for ``view:feature`` references or a feature service's name.

        Resolved once per store (the online path must not query the registry per lookup); definitions
        applied by another process are seen by a newly opened workspace.
        """
        key = (tuple(features) if features is not None else None, service)
        if key not in self._selections:
            self._selections[key] = self._resolve(features, service)
        return self._selections[key]

    def _resolve(self, features: Sequence[str] | None, service: str | None) -> Selection:
        if (features is None) == (service is None):
            raise ParameterError(
                "give either features (VIEW:FEATURE, …) or a feature service", field="features"
            )
        if service is not None:
            features = FeatureService(
                service, self.registry.get("service", service).spec["features"]
            ).features
        wanted: dict[str, list[str]] = {}
        for ref in features or ():
            view_name, feature = parse_ref(ref)
            view = self.view(view_name)
            names = list(view.features or ()) if feature == "*" else [feature]
            for f in names:
                if f not in (view.features or ()):
                    raise NotFoundError(
                        f"feature view {view_name!r} has no feature {f!r} "
                        f"(it has: {', '.join(view.features or ())})",
                        field="features",
                    )
                if f not in wanted.setdefault(view_name, []):
                    wanted[view_name].append(f)
        if not wanted:
            raise ParameterError("no features selected", field="features")
        return [(self.view(v), fs) for v, fs in wanted.items()]

    def source_identity(self, view: FeatureView) -> tuple[str, int, str]:
        """Digest, size and URI of a remote (fsspec) or SQL source, for cache keys and lineage.

        SQL rows are read to be fingerprinted (order-independent); remote files by their checksums.
        """
        if isinstance(view.source, SqlSource):
            con = self._connect()
            try:
                times = (view.timestamp,) + ((view.created,) if view.created else ())
                table = sql_table(con, view.source, view.name, times)
                digest, count = sql_digest(con, view.source, table)
            finally:
                con.close()
            return digest, count, str(view.source)
        digest, size = remote_digest(view.source)
        return digest, size, view.source

    def versions_of(self, selection: Selection) -> dict[str, int]:
        return {v.name: self.registry.get("view", v.name).version for v, _ in selection}

    # offline -------------------------------------------------------------------------------------

    def historical(
        self,
        entities: pd.DataFrame | str | Path,
        features: Sequence[str] | None = None,
        *,
        service: str | None = None,
        timestamp_col: str = "event_timestamp",
        out: str | Path | None = None,
    ) -> Any:
        """Point-in-time correct training data (see :func:`mloop.features.offline.historical`)."""
        selection = self.selection(features, service)
        con = self._connect()
        try:
            return offline.historical(entities, selection, timestamp_col=timestamp_col, out=out, con=con)
        finally:
            con.close()

    # online --------------------------------------------------------------------------------------

    def online_store(self) -> OnlineStore:
        if self._online is None:
            self._online = self._online_factory()
        return self._online

    def materialize(
        self,
        views: Sequence[str] | None = None,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        incremental: bool = False,
    ) -> list[Materialization]:
        """Copy each view's latest values with event time in ``[start, end]`` into the online store.

        ``incremental``: start where the view's last materialization ended. ``end`` defaults to now.
        """
        for name, when in (("start", start), ("end", end)):
            if when is not None and when.tzinfo is None:
                raise ParameterError(f"{name} {when} has no timezone; give UTC (e.g. …Z)", field=name)
        end = end or utcnow()
        if start is not None and start > end:
            raise ParameterError(f"start {start} is after end {end}", field="start")
        names = list(views) if views else [d.name for d in self.registry.latest("view")]
        done = []
        con = self._connect()
        try:
            for name in names:
                view = self.view(name)
                since = start
                if incremental:
                    last = self.registry.last_materialization(name)
                    since = last.end if last and last.version >= self._keyed_since(name) else None
                rows = online.materialize(con, self.online_store(), view, start=since, end=end)
                version = self.registry.get("view", name).version
                done.append(self.registry.record_materialization(name, version, since, end, rows))
        finally:
            con.close()
        return done

    def online(
        self,
        entity_rows: Sequence[Mapping[str, Any]],
        features: Sequence[str] | None = None,
        *,
        service: str | None = None,
    ) -> list[dict[str, Any]]:
        """The latest values by entity key; stale values (older than the TTL) are null, with their age."""
        return online.lookup(self.online_store(), self.selection(features, service), entity_rows)

    def freshness(
        self, features: Sequence[str] | None = None, *, service: str | None = None
    ) -> dict[str, Any]:
        """Per view: when it was last materialized, up to which event time, the newest event time the
        online store holds, and how old that newest value is now (a source that stopped updating grows
        old here however often it is materialized)."""
        result: dict[str, Any] = {}
        now = utcnow()
        for view, _ in self.selection(features, service):
            last = self.registry.last_materialization(view.name)
            newest = self.online_store().newest(view.name) if last else None
            newest_at = datetime.fromtimestamp(newest, UTC) if newest is not None else None
            result[view.name] = {
                "materialized_at": last.at.isoformat() if last else None,
                "end": last.end.isoformat() if last else None,
                "newest_event": newest_at.isoformat() if newest_at else None,
                "age_seconds": round((now - newest_at).total_seconds(), 3) if newest_at else None,
                "ttl_seconds": view.ttl.total_seconds() if view.ttl is not None else None,
            }
        return result

    def skew(
        self,
        features: Sequence[str] | None = None,
        *,
        service: str | None = None,
        sample: int = 100,
        seed: int = 0,
    ) -> dict[str, Any]:
        """Online values vs the offline join for a sample of entities, as of the online row's event time.

        A mismatch means the online store does not hold what the source says (a backfilled or rewritten
        source, a failed or partial materialization). Per feature: compared, mismatches, examples.

        Only entities that materialization can have written are sampled: a row with a key (not null or
        NaN) and an event time up to the view's last materialization end. Entities with no such row
        can never be online; per view they are counted apart as ``not_materialized`` (not skew).
        """
        if sample < 1:
            raise ParameterError(f"sample {sample} must be ≥ 1", field="sample")
        selection = self.selection(features, service)
        report: dict[str, Any] = {"sample": sample, "features": {}}
        missing_online = 0
        not_materialized: dict[str, int] = {}
        con = self._connect()
        try:
            for view, names in selection:
                keys = ", ".join(f'"{k}"' for k in view.join_keys)
                rel = offline.relation(con, view)
                eligible = _materializable(
                    view, offline.describe(con, rel, view.name), self.registry.last_materialization(view.name)
                )
                frame = con.execute(
                    f"SELECT DISTINCT {keys} FROM {rel} WHERE {eligible} "
                    f"USING SAMPLE reservoir({int(sample)} ROWS) REPEATABLE ({int(seed)})"
                ).df()
                ((never,),) = con.execute(
                    f"SELECT count(*) FROM (SELECT bool_or(coalesce({eligible}, false)) AS ok "
                    f"FROM {rel} GROUP BY {keys} HAVING NOT ok)"
                ).fetchall()
                not_materialized[view.name] = int(never)
                rows = frame.to_dict("records")
                stored = self.online_store().read(
                    view.name, [online.entity_key([r[k] for k in view.join_keys]) for r in rows]
                )
                present = [(r, s) for r, s in zip(rows, stored, strict=True) if s is not None]
                missing_online += len(rows) - len(present)
                entity = pd.DataFrame([r for r, _ in present], columns=list(view.join_keys))
                entity["event_timestamp"] = pd.to_datetime([s[0] for _, s in present], unit="s", utc=True)
                zone = offline.describe(con, offline.relation(con, view), view.name)[view.timestamp]
                if zone != "TIMESTAMP WITH TIME ZONE":
                    entity["event_timestamp"] = entity["event_timestamp"].dt.tz_localize(None)
                untimed = FeatureView(
                    view.name, view.entities, view.source, view.timestamp, None, names, view.created
                )
                joined = offline.historical(entity, [(untimed, names)], con=con) if present else None
                assert joined is None or isinstance(joined, pd.DataFrame)
                for f in names:
                    compared = mismatches = 0
                    examples: list[dict[str, Any]] = []
                    for i, (row, (_, payload)) in enumerate(present):
                        got = json.loads(payload).get(f)
                        want = (
                            online.plain(joined.iloc[i][f"{view.name}:{f}"]) if joined is not None else None
                        )
                        compared += 1
                        if not _same(got, want):
                            mismatches += 1
                            if len(examples) < 5:
                                examples.append({"entity": row, "online": got, "offline": want})
                    report["features"][f"{view.name}:{f}"] = {
                        "compared": compared,
                        "missing_online": len(rows) - len(present),
                        "mismatches": mismatches,
                        "examples": examples,
                    }
        finally:
            con.close()
        report["mismatches"] = sum(v["mismatches"] for v in report["features"].values())
        report["missing_online"] = missing_online
        report["not_materialized"] = not_materialized
        report["checked_at"] = datetime.fromtimestamp(time.time(), UTC).isoformat()
        return report

    def close(self) -> None:
        if self._online is not None:
            self._online.close()
            self._online = None


def _rekeyed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether online rows written under ``old`` are keyed or timed differently under ``new``."""
    return any(old.get(k) != new.get(k) for k in ("entities", "join_keys", "timestamp"))


def _materializable(view: FeatureView, columns: Mapping[str, str], last: Materialization | None) -> str:
    """SQL: whether a source row is one materialization writes (keys present, an event time up to the
    last materialization's end; with no end when the view was never materialized: all are missing)."""
    conditions = [f'"{view.timestamp}" IS NOT NULL']
    for k in view.join_keys:
        conditions.append(f'"{k}" IS NOT NULL')
        if columns.get(k) in ("FLOAT", "DOUBLE"):
            conditions.append(offline.not_nan(f'"{k}"'))
    if last is not None:
        # compared as materialize compares its end (a zoned instant; naive source times read as UTC)
        end = last.end if last.end.tzinfo is not None else last.end.replace(tzinfo=UTC)
        conditions.append(f"\"{view.timestamp}\" <= TIMESTAMPTZ '{end.isoformat()}'")
    return " AND ".join(conditions)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)
