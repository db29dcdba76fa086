"""Frozen dataclasses the stores return. Never ORM rows, never mutable.

Ids are ULID strings: opaque, unique, and sortable by creation time. Times are timezone-aware UTC.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from ulid import ULID

__all__ = [
    "AliasEvent",
    "ApiToken",
    "ArtifactRef",
    "AuditEntry",
    "Event",
    "FeatureDefinition",
    "Materialization",
    "Metric",
    "Model",
    "ModelStatus",
    "ModelVersion",
    "Run",
    "RunStatus",
    "StepRun",
    "StepStatus",
    "TriggerEvent",
    "TriggerState",
    "id_floor",
    "jsonable",
    "new_id",
    "utcnow",
]


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # the alphabet ULIDs are written in
_PAIRS = [_CROCKFORD[i >> 5] + _CROCKFORD[i & 31] for i in range(1024)]  # 10 bits → two digits


class _UlidText:
    """ULIDs as text, ~2x faster than ``str(ULID())`` (a tenth of a one-row answer, which takes
    one): the 10 digits of the millisecond are kept while it lasts, and the 80 random bits are
    written two digits at a time. Monotonic, as python-ulid's are: within one millisecond (or if the
    clock steps back) the random part is incremented, so ids sort in creation order and audit
    trails, events and logs listed by id come out in the order they were written."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ms = -1
        self._digits = ""
        self._random = 0

    def __call__(self) -> str:
        ms = time.time_ns() // 1_000_000
        with self._lock:
            if ms > self._ms:
                self._ms = ms
                self._digits = "".join(_CROCKFORD[(ms >> s) & 31] for s in range(45, -1, -5))
                self._random = int.from_bytes(os.urandom(10), "big") >> 1  # room to count up
            else:
                self._random += 1
            r, stamp = self._random, self._digits
        p = _PAIRS
        return stamp + "".join(
            (p[r >> 70], p[(r >> 60) & 1023], p[(r >> 50) & 1023], p[(r >> 40) & 1023],
             p[(r >> 30) & 1023], p[(r >> 20) & 1023], p[(r >> 10) & 1023], p[r & 1023])
        )  # fmt: skip


_ulid_text = _UlidText()


def new_id() -> str:
    """A new opaque id, sortable by creation time: a ULID (48 bits of milliseconds, 80 random bits)."""
    return _ulid_text()


def id_floor(at: datetime) -> str:
    """The smallest id created at or after ``at``: compare ids with it to select by creation time."""
    return str(ULID.from_datetime(at))[:10] + "0" * 16


def utcnow() -> datetime:
    """Now, timezone-aware UTC (the only clock mloop stores)."""
    return datetime.now(UTC)


class RunStatus(enum.StrEnum):
    """Lifecycle of a pipeline run. ``stopped`` means a gate (e.g. schema skew) halted it on purpose."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"


class StepStatus(enum.StrEnum):
    """Outcome of one step execution; ``cached`` re-linked the outputs of an earlier execution,
    ``stopped`` means the step was a gate that refused its input (its report is still recorded)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    CACHED = "cached"
    FAILED = "failed"
    STOPPED = "stopped"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Run:
    """One execution of a pipeline."""

    id: str
    pipeline: str
    status: RunStatus
    trigger: str
    params: dict[str, Any]
    code_commit: str | None
    code_hash: str
    created_at: datetime
    ended_at: datetime | None = None
    error: str | None = None
    resumed_from: str | None = None
    host: str | None = None
    pid: int | None = None

    @property
    def duration_s(self) -> float | None:
        """Wall time of the run, or None while it runs."""
        if self.ended_at is None:
            return None
        return (self.ended_at - self.created_at).total_seconds()


@dataclass(frozen=True, slots=True)
class StepRun:
    """One execution (or cache hit) of one step inside a run."""

    id: str
    run_id: str
    name: str
    status: StepStatus
    cache_key: str
    started_at: datetime
    params: dict[str, Any] = field(default_factory=dict)
    ended_at: datetime | None = None
    cached_from: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None

    @property
    def duration_s(self) -> float | None:
        """Wall time of the step, or None while it runs."""
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """An immutable, content-addressed value in the artifact store.

    ``type`` names the serializer (``parquet``, ``npy``, ``json``, ``joblib``, ``file``), ``digest`` is the
    sha256 of the stored bytes and doubles as the key in the artifact store.
    """

    id: str
    digest: str
    type: str
    python_type: str
    size: int
    uri: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Event:
    """An edge of the lineage graph: a step run read (``input``) or wrote (``output``) an artifact."""

    step_run_id: str
    artifact_id: str
    kind: str
    name: str
    uri: str | None = None  # where a file input was read, when the step recorded it


@dataclass(frozen=True, slots=True)
class Metric:
    """A measured value; ``step_run_id`` is None for run-level metrics."""

    run_id: str
    key: str
    value: float
    step: int
    timestamp: datetime
    step_run_id: str | None = None


class ModelStatus(enum.StrEnum):
    """``rejected`` versions failed model validation: kept for audit, never given an alias automatically."""

    REGISTERED = "registered"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """A registered model: its artifact, signature (input schema, output, training statistics),
    metrics, tags and lineage (the run that produced it)."""

    name: str
    version: int
    id: str
    status: ModelStatus
    artifact_id: str
    run_id: str | None
    signature: dict[str, Any]
    metrics: dict[str, Any]
    tags: dict[str, Any]
    created_at: datetime
    created_by: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AliasEvent:
    """One move of an alias: ``promote`` (set), ``rollback`` or ``remove``; who, when and why.

    ``refuse`` records a version kept off the alias (``to_version``, e.g. a canary candidate that
    failed the load test) without moving it; ``evidence`` holds the numbers behind it.
    """

    name: str
    alias: str
    action: str
    from_version: int | None
    to_version: int | None
    at: datetime
    who: str
    reason: str
    evidence: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Model:
    """A registered model name, its newest version and where its aliases point."""

    name: str
    created_at: datetime
    last_version: int
    aliases: dict[str, int] = field(default_factory=dict)


EventStatus = Literal["pending", "running", "succeeded", "failed", "stopped", "suppressed"]
EVENT_STATUSES: tuple[str, ...] = get_args(EventStatus)
ACTIVE_EVENT_STATUSES = ("pending", "running")  # held by a scheduler under a lease
RETRYABLE_EVENT_STATUSES = ("failed", "stopped")  # ended without success: `mloop scheduler retry`


@dataclass(frozen=True, slots=True)
class TriggerEvent:
    """One firing of a trigger: the evidence, the run it started and how that ended.

    ``status``: ``pending`` (claimed, no run yet), ``running``, ``succeeded``, ``failed``, ``stopped``
    (a gate refused the data), ``suppressed`` (recorded, not run: held by the cool-down, whose end
    fires the same data again, or served by an identical run of the same pass).
    """

    id: str
    trigger: str
    event_key: str
    kind: str
    pipeline: str
    fired_at: datetime
    evidence: dict[str, Any]
    status: str
    attempts: int
    run_id: str | None
    updated_at: datetime
    owner: str | None = None  # host:pid:random of the scheduler holding it while pending/running
    lease_until: datetime | None = None  # another scheduler may reclaim it only after this


@dataclass(frozen=True, slots=True)
class TriggerState:
    """A trigger's last evaluation, last firing, next due time and watermark (what it already saw)."""

    trigger: str
    evaluated_at: datetime | None
    fired_at: datetime | None
    next_due_at: datetime | None
    last_result: str
    watermark: dict[str, Any]
    last_error: str | None = None  # the latest failure, cleared by the next clean evaluation


@dataclass(frozen=True, slots=True)
class FeatureDefinition:
    """One recorded version of a feature-store definition (``kind``: entity, view or service)."""

    kind: str
    name: str
    version: int
    spec: dict[str, Any]
    digest: str
    created_at: datetime
    who: str


@dataclass(frozen=True, slots=True)
class Materialization:
    """One copy of a view's latest values into the online store: the event-time window and row count."""

    id: str
    view: str
    version: int
    start: datetime | None
    end: datetime
    rows: int
    at: datetime


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A team-server token as stored: its secret is never kept, only the sha256 of it."""

    id: str
    name: str
    role: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One write made through the team server: who, when, what, on which target, and why."""

    id: str
    at: datetime
    who: str
    action: str
    target: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PipelineVersion:
    """A frozen, immutable pipeline version: the packed source snapshot (an artifact), where the
    pipeline sits in it (``entry`` = ``path/in/snapshot.py:function``), its parameters, and where and
    with what it was built (git commit, dirty tree, Python, exact package versions, the CI verdict)."""

    id: str
    name: str
    version: int
    entry: str
    snapshot_artifact_id: str
    snapshot_digest: str
    code_hash: str
    params: dict[str, Any]
    git_commit: str | None
    git_dirty: bool | None
    python_version: str
    packages: dict[str, str]
    ci: dict[str, Any] | None
    forced_reason: str | None
    created_at: datetime
    created_by: str

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True, slots=True)
class CiRecord:
    """The recorded verdict of ``mloop ci run`` for one code hash (of a pipeline's source snapshot)."""

    code_hash: str
    pipeline: str
    passed: bool
    report: dict[str, Any]
    recorded_at: datetime


def jsonable(value: Any) -> Any:
    """Entities (frozen dataclasses), enums and datetimes as JSON values: what the CLI's ``--json`` and
    the team server's API print."""
    kind = type(value)
    if kind in _PLAIN:  # most values: decided by one set lookup (a page of runs has ~1,000 of them)
        return value
    names = _FIELD_NAMES[kind] if kind in _FIELD_NAMES else _field_names(kind)
    if names is not None:
        out = {}
        for name in names:  # a plain field is copied without a call (most of an entity's fields)
            field_value = getattr(value, name)
            out[name] = field_value if type(field_value) in _PLAIN else jsonable(field_value)
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): v if type(v) in _PLAIN else jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [v if type(v) in _PLAIN else jsonable(v) for v in value]
    return value


_PLAIN = frozenset({str, int, float, bool, type(None)})  # exactly these types: an enum is not plain
# A memo, not state: the field names of each class jsonable met (bounded by the program's classes)
_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}


def _field_names(kind: type) -> tuple[str, ...] | None:
    """The field names of a dataclass type, in declaration order; None for any other type."""
    names = tuple(f.name for f in dataclasses.fields(kind)) if dataclasses.is_dataclass(kind) else None
    _FIELD_NAMES[kind] = names
    return names
