"""Feature definitions: entities, feature views and feature services, written once in Python.

A user's ``features.py`` builds these objects; ``mloop features apply features.py`` records them in the
metadata store as versions. Constructors only check and store their arguments (no I/O); a view's
source is read when it is resolved (:func:`resolve_view`), so a module of definitions imports fast.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from mloop.errors import DataError, NotFoundError, ParameterError, PipelineLoadError
from mloop.features.sources import SqlSource, source_from_spec

__all__ = [
    "Entity",
    "FeatureService",
    "FeatureView",
    "SqlSource",
    "load_definitions",
    "parse_ref",
    "parse_ttl",
]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TTL = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(w|d|h|m|s|ms)?\s*$")
_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, None: 1.0}


def _check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):  # fullmatch: "$" lets a trailing "\n" in
        raise ParameterError(
            f"{kind} name {name!r} must match {NAME.pattern} (letters, digits, '.', '_', '-')", field="name"
        )
    return name


def parse_ttl(ttl: timedelta | str | float | None) -> timedelta | None:
    """``timedelta``, seconds, or a string like ``"1d"``, ``"12h"``, ``"30m"``; ``None`` = no limit.

    A zero TTL keeps only rows exactly at the entity's timestamp; a negative one is an error.
    """
    if ttl is None:
        return None
    try:
        value = _ttl_value(ttl)
    except OverflowError as exc:
        limit = f"at most {timedelta.max.days} days"
        raise ParameterError(f"ttl {ttl!r} is too long ({limit})", field="ttl") from exc
    if value < timedelta(0):
        raise ParameterError(f"ttl {ttl!r} is negative; a view's TTL must be ≥ 0", field="ttl")
    return value


def _ttl_value(ttl: timedelta | str | float) -> timedelta:
    if isinstance(ttl, timedelta):
        value = ttl
    elif isinstance(ttl, int | float) and not isinstance(ttl, bool):
        if not math.isfinite(ttl):
            raise ParameterError(f"ttl {ttl!r} is not a finite number of seconds (None: no TTL)", field="ttl")
        value = timedelta(seconds=float(ttl))
    elif isinstance(ttl, str) and (m := _TTL.match(ttl)):
        value = timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    else:
        raise ParameterError(
            f"ttl {ttl!r}: expected a timedelta, seconds, or a string like '1d', '12h', '30m', '45s'",
            field="ttl",
        )
    return value


@dataclass(frozen=True)
class Entity:
    """What features describe (a driver, a customer), identified by one or more join-key columns."""

    name: str
    join_keys: tuple[str, ...]

    def __init__(self, name: str, join_keys: str | list[str] | tuple[str, ...]) -> None:
        keys = (join_keys,) if isinstance(join_keys, str) else tuple(join_keys)
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise ParameterError(
                f"entity {name!r}: join_keys must be non-empty column names", field="join_keys"
            )
        object.__setattr__(self, "name", _check_name("entity", name))
        object.__setattr__(self, "join_keys", keys)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "join_keys": list(self.join_keys)}


@dataclass(frozen=True)
class FeatureView:
    """Feature columns of a source table, keyed by its entities' join keys and stamped by event time.

    ``source``: a Parquet/CSV file, a folder of them or a glob, local or any fsspec URL
    (``s3://…``), or a :class:`SqlSource` (a query or table in any database SQLAlchemy reaches).
    ``timestamp``: the event-time column. ``ttl``: how old a value may be and still count (``None``:
    any age). ``features``: the feature columns (default: every column that is neither a join key nor
    a timestamp). ``created``: an optional created-timestamp column that breaks ties between rows with
    the same key and event time.
    """

    name: str
    entities: tuple[Entity, ...]
    source: str | SqlSource
    timestamp: str
    ttl: timedelta | None
    features: tuple[str, ...] | None = None
    created: str | None = None

    def __init__(
        self,
        name: str,
        entities: Entity | list[Entity] | tuple[Entity, ...],
        source: str | Path | SqlSource,
        timestamp: str,
        ttl: timedelta | str | float | None,
        features: list[str] | tuple[str, ...] | None = None,
        created: str | None = None,
    ) -> None:
        ents = (entities,) if isinstance(entities, Entity) else tuple(entities)
        if not ents or not all(isinstance(e, Entity) for e in ents):
            raise ParameterError(f"feature view {name!r}: entities must be Entity objects", field="entities")
        if not isinstance(timestamp, str) or not timestamp:
            raise ParameterError(f"feature view {name!r}: timestamp must name a column", field="timestamp")
        if features is not None and (
            not features or not all(isinstance(f, str) and f and ":" not in f for f in features)
        ):
            raise ParameterError(
                f"feature view {name!r}: features must be non-empty column names without ':'",
                field="features",
            )
        object.__setattr__(self, "name", _check_name("feature view", name))
        object.__setattr__(self, "entities", ents)
        if not isinstance(source, str | Path | SqlSource):
            raise ParameterError(
                f"feature view {name!r}: source must be a path, a URL or a SqlSource, not "
                f"{type(source).__name__}",
                field="source",
            )
        object.__setattr__(self, "source", source if isinstance(source, SqlSource) else str(source))
        object.__setattr__(self, "timestamp", timestamp)
        object.__setattr__(self, "ttl", parse_ttl(ttl))
        object.__setattr__(self, "features", tuple(features) if features is not None else None)
        object.__setattr__(self, "created", created)

    @property
    def join_keys(self) -> tuple[str, ...]:
        keys: list[str] = []
        for entity in self.entities:
            keys.extend(k for k in entity.join_keys if k not in keys)
        return tuple(keys)

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> FeatureView:
        """The view a stored spec (:meth:`to_dict`) describes."""
        ttl = spec.get("ttl_seconds")
        return cls(
            spec["name"],
            [Entity(e["name"], e["join_keys"]) for e in spec["entities"]],
            source_from_spec(spec["source"]),
            spec["timestamp"],
            timedelta(seconds=ttl) if ttl is not None else None,
            spec.get("features"),
            spec.get("created"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "entities": [e.to_dict() for e in self.entities],
            "source": self.source.to_dict() if isinstance(self.source, SqlSource) else self.source,
            "timestamp": self.timestamp,
            "ttl_seconds": self.ttl.total_seconds() if self.ttl is not None else None,
            "features": list(self.features) if self.features is not None else None,
            "created": self.created,
        }


@dataclass(frozen=True)
class FeatureService:
    """A named set of features a model uses: ``view:feature`` references, or whole views."""

    name: str
    features: tuple[str, ...]

    def __init__(self, name: str, features: list[str | FeatureView] | tuple[str | FeatureView, ...]) -> None:
        refs: list[str] = []
        for item in features:
            if isinstance(item, FeatureView):
                refs.append(f"{item.name}:*")
            else:
                parse_ref(item)
                refs.append(item)
        if not refs:
            raise ParameterError(f"feature service {name!r} lists no features", field="features")
        object.__setattr__(self, "name", _check_name("feature service", name))
        object.__setattr__(self, "features", tuple(refs))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "features": list(self.features)}


@dataclass(frozen=True)
class Definitions:
    """Everything one definitions module declares."""

    entities: dict[str, Entity] = field(default_factory=dict)
    views: dict[str, FeatureView] = field(default_factory=dict)
    services: dict[str, FeatureService] = field(default_factory=dict)


def parse_ref(ref: Any) -> tuple[str, str]:
    """``view:feature`` (or ``view:*`` for all of a view's features) → ``(view, feature)``."""
    if not isinstance(ref, str) or ref.count(":") != 1:
        raise ParameterError(f"feature reference {ref!r}: expected VIEW:FEATURE", field="features")
    view, feature = ref.split(":")
    if not view or not feature:
        raise ParameterError(f"feature reference {ref!r}: expected VIEW:FEATURE", field="features")
    return view, feature


def load_definitions(path: str | Path) -> Definitions:
    """Import a Python file and collect the Entity, FeatureView and FeatureService objects it defines."""
    file = Path(path)
    if not file.is_file():
        raise NotFoundError(f"definitions file {file} does not exist", field="path")
    module_name = f"_mloop_features_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise PipelineLoadError(f"{file} is not an importable Python file", field="path")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(file.parent.resolve()))
    try:
        spec.loader.exec_module(module)
    except ParameterError:
        raise
    except (Exception, SystemExit) as exc:  # sys.exit() at import: exit 0 with nothing applied
        raise PipelineLoadError(f"{file}: {type(exc).__name__}: {exc}", field="path") from exc
    finally:
        sys.path.pop(0)
    defs = Definitions()
    for value in vars(module).values():
        if isinstance(value, Entity):
            defs.entities[value.name] = value
        elif isinstance(value, FeatureView):
            if (
                isinstance(value.source, str)
                and "://" not in value.source
                and not Path(value.source).is_absolute()
            ):
                # a relative source is relative to the definitions file, wherever apply runs from
                value = dataclasses.replace(value, source=str((file.parent / value.source).resolve()))
            clash = next((n for n in defs.views if n.lower() == value.name.lower()), None)
            if clash is not None and defs.views[clash] is not value:
                raise DataError(
                    f"{file}: two feature views named {clash!r} and {value.name!r} (names differ by more "
                    "than case: output columns are matched without it)",
                    field=value.name,
                )
            defs.views[value.name] = value
            for entity in value.entities:
                defs.entities.setdefault(entity.name, entity)
        elif isinstance(value, FeatureService):
            defs.services[value.name] = value
    if not (defs.views or defs.services or defs.entities):
        raise DataError(f"{file} defines no Entity, FeatureView or FeatureService", field="path")
    return defs
