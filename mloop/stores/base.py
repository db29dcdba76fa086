"""The narrow interfaces the rest of mloop programs against.

One SQL implementation serves SQLite and PostgreSQL; one fsspec implementation serves every artifact
backend. The Protocols exist so callers depend on the few methods they use, and so the contract
tests in ``tests/contracts`` can hold every backend to the same behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from mloop.entities import (
    AliasEvent,
    ApiToken,
    ArtifactRef,
    AuditEntry,
    CiRecord,
    Event,
    FeatureDefinition,
    Materialization,
    Metric,
    Model,
    ModelStatus,
    ModelVersion,
    PipelineVersion,
    Run,
    RunStatus,
    StepRun,
    StepStatus,
    TriggerEvent,
    TriggerState,
)

if TYPE_CHECKING:  # the page types live with their one implementation
    from mloop.stores.sql.run_pages import RunPage, RunPageQuery

__all__ = [
    "ArtifactStore",
    "FeatureRegistry",
    "LineageStore",
    "MetadataStore",
    "MetricStore",
    "ModelRegistry",
    "NewArtifact",
    "OnlineStore",
    "PipelineStore",
    "RunPages",
    "RunQuery",
    "RunStore",
    "StepStore",
    "TokenStore",
    "TriggerStore",
]


@dataclass(frozen=True, slots=True)
class NewArtifact:
    """An artifact about to be recorded: what the artifact store returned plus its type."""

    digest: str
    type: str
    python_type: str
    size: int
    uri: str


@dataclass(frozen=True, slots=True)
class RunQuery:
    """A filtered run search. Params compare by JSON encoding; a metric filter uses its latest value."""

    pipeline: str | None = None
    status: RunStatus | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Sequence[tuple[str, str, float]] = ()
    limit: int = 100
    id_prefix: str | None = None  # runs whose id starts with this (what users type from a listing)


class RunStore(Protocol):
    """Pipeline and tracking runs."""

    def create_run(
        self,
        pipeline: str,
        *,
        params: Mapping[str, Any],
        trigger: str,
        code_commit: str | None,
        code_hash: str,
        resumed_from: str | None = None,
    ) -> Run: ...

    def finish_run(self, run_id: str, status: RunStatus, error: str | None = None) -> Run: ...

    def heartbeat(self, run_id: str) -> None: ...

    def get_run(self, run_id: str) -> Run: ...

    def search_runs(self, query: RunQuery) -> list[Run]: ...

    def fail_stale_runs(
        self, *, host: str, is_alive: Callable[[int], bool], stale_after_s: float
    ) -> list[str]: ...


class StepStore(Protocol):
    """Step executions and the cache index over them."""

    def start_step(
        self,
        run_id: str,
        name: str,
        *,
        cache_key: str,
        params: Mapping[str, Any],
        inputs: Mapping[str, str],
        input_uris: Mapping[str, str] | None = None,
    ) -> StepRun:
        """A step execution begins, reading ``inputs`` (artifact ids by name); ``input_uris`` names
        where it read the file inputs (a same-bytes copy is the same artifact, at another path)."""
        ...

    def finish_step(
        self,
        step_run_id: str,
        status: StepStatus,
        *,
        outputs: Mapping[str, NewArtifact] | None = None,
        metrics: Sequence[tuple[str, float, int]] = (),
        params: Mapping[str, Any] | None = None,
        inputs: Mapping[str, NewArtifact] | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
        error_traceback: str | None = None,
    ) -> dict[str, ArtifactRef]: ...

    def record_cached_step(
        self,
        run_id: str,
        name: str,
        *,
        cache_key: str,
        params: Mapping[str, Any],
        inputs: Mapping[str, str],
        cached_from: str,
        outputs: Mapping[str, str],
        input_uris: Mapping[str, str] | None = None,
    ) -> StepRun: ...

    def find_cached(self, cache_key: str) -> tuple[StepRun, dict[str, ArtifactRef]] | None: ...

    def list_steps(self, run_id: str) -> list[StepRun]: ...

    def get_step(self, step_run_id: str) -> StepRun: ...


class LineageStore(Protocol):
    """Artifacts and the input/output events that link them to step runs."""

    def add_artifact(self, artifact: NewArtifact) -> ArtifactRef: ...

    def get_artifact(self, artifact_id: str) -> ArtifactRef:
        """An artifact by id or by digest."""
        ...

    def get_artifacts(self, artifact_ids: Sequence[str]) -> dict[str, ArtifactRef]:
        """The artifacts of these ids that exist, by id: a run's page reads its dozens at once."""
        ...

    def find_artifacts(self, prefix: str, *, limit: int = 2) -> list[ArtifactRef]:
        """Artifacts whose id or digest starts with ``prefix`` (what users type from a listing)."""
        ...

    def events(
        self, *, step_run_ids: Sequence[str] = (), artifact_ids: Sequence[str] = (), kind: str | None = None
    ) -> list[Event]: ...


class MetricStore(Protocol):
    """Metrics and params logged by steps or by tracking runs."""

    def log_metrics(
        self, run_id: str, metrics: Sequence[tuple[str, float, int]], *, step_run_id: str | None = None
    ) -> None: ...

    def log_params(
        self, run_id: str, params: Mapping[str, Any], *, step_run_id: str | None = None
    ) -> None: ...

    def get_metrics(self, run_id: str, key: str | None = None) -> list[Metric]: ...

    def get_params(self, run_id: str) -> dict[str, Any]: ...


class MetadataStore(RunStore, StepStore, LineageStore, MetricStore, Protocol):
    """Everything the runner and the inspection commands need from the metadata store."""

    def close(self) -> None: ...


class ArtifactStore(Protocol):
    """Content-addressed bytes: the key is the sha256 of the value, so identical content is stored once."""

    url: str

    def put(self, data: bytes) -> tuple[str, str]:
        """Store bytes atomically; return ``(digest, uri)``."""
        ...

    def get(self, digest: str) -> bytes:
        """The bytes under ``digest``, verified against it."""
        ...

    def exists(self, digest: str) -> bool: ...

    def verify(self, digest: str, size: int) -> bool:
        """Whether the bytes under ``digest`` are present and intact (what the cache re-links)."""
        ...

    def uri(self, digest: str) -> str: ...


class OnlineStore(Protocol):
    """The latest feature values per entity key, per view: what serving reads.

    Values are opaque payload strings (the feature layer encodes them); each carries its event time in
    epoch seconds. A write keeps, per key, the row with the newest event time (an older row never
    overwrites a newer one), so materializing windows out of order is safe.
    """

    url: str

    def write(self, view: str, rows: Sequence[tuple[str, float, str]]) -> int:
        """Store ``(entity_key, event_time, payload)`` rows; returns how many were given."""
        ...

    def read(self, view: str, keys: Sequence[str]) -> list[tuple[float, str] | None]:
        """``(event_time, payload)`` per key, in order; None for a key never written."""
        ...

    def drop(self, view: str) -> None:
        """Forget every key of ``view``."""
        ...

    def newest(self, view: str) -> float | None:
        """The newest event time stored for ``view`` (None when it holds nothing): how fresh it is."""
        ...

    def close(self) -> None: ...


class TriggerStore(Protocol):
    """Trigger events (claimed once, held under a renewable lease) and each trigger's state.

    ``claim`` inserts ``(trigger, event_key)`` once ever; ``reclaim_expired`` hands an active event to
    a new owner only after its lease expired; ``evaluating`` lets one scheduler at a time evaluate a
    trigger, so its watermark moves once per batch. Database failures raise StoreUnavailableError
    (retry later) or MetadataStoreError, never a driver's exception.
    """

    def claim(
        self,
        trigger: str,
        event_key: str,
        *,
        kind: str,
        pipeline: str,
        evidence: Mapping[str, Any],
        status: str = "pending",
        owner: str | None = None,
        lease_s: float = 30.0,
    ) -> TriggerEvent | None: ...

    def update(self, event_id: str, *, status: str, run_id: str | None = None) -> None: ...

    def renew(
        self, owner: str, lease_s: float, *, events: Collection[str] = (), triggers: Collection[str] = ()
    ) -> set[str]: ...

    def reclaim_expired(
        self,
        owner: str,
        *,
        lease_s: float = 30.0,
        may_take: Callable[[TriggerEvent], bool] = ...,
        max_attempts: int = 2,
    ) -> list[TriggerEvent]: ...

    def retry(self, event_id: str, *, owner: str, lease_s: float = 30.0) -> TriggerEvent | None:
        """Hand an event that ended without success (``failed``, ``stopped``) to ``owner`` to run again,
        once (attempts + 1); None when it is not such an event (any more)."""
        ...

    def evaluating(self, trigger: str, owner: str, lease_s: float = 30.0) -> AbstractContextManager[bool]: ...

    def events(
        self, trigger: str | None = None, *, limit: int = 100, status: str | None = None
    ) -> list[TriggerEvent]: ...

    def event(self, event_id: str) -> TriggerEvent:
        """One event by id; NotFoundError naming it when there is none."""
        ...

    def event_of_run(self, run_id: str) -> TriggerEvent | None:
        """The event that started ``run_id`` (None for a run no trigger started)."""
        ...

    def state(self, trigger: str) -> TriggerState: ...

    def save_state(
        self,
        trigger: str,
        *,
        evaluated_at: datetime | None = None,
        fired_at: datetime | None = None,
        next_due_at: datetime | None = None,
        last_result: str | None = None,
        watermark: Mapping[str, Any] | None = None,
        last_error: str | None = None,
    ) -> None: ...


class FeatureRegistry(Protocol):
    """Versions of feature-store definitions (entities, views, services) and each view's materializations."""

    def record(self, kind: str, name: str, spec: Mapping[str, Any], *, who: str) -> FeatureDefinition | None:
        """Store ``spec`` as the next version of ``kind``/``name``; None when it equals the latest."""
        ...

    def get(self, kind: str, name: str, version: int | None = None) -> FeatureDefinition:
        """A definition's given version, or its latest; NotFoundError when there is none."""
        ...

    def latest(self, kind: str | None = None) -> list[FeatureDefinition]: ...

    def versions(self, kind: str, name: str) -> list[FeatureDefinition]: ...

    def record_materialization(
        self, view: str, version: int, start: datetime | None, end: datetime, rows: int
    ) -> Materialization: ...

    def last_materialization(self, view: str) -> Materialization | None: ...


class ModelRegistry(Protocol):
    """Model names, gap-free versions, movable aliases and every alias move (what rollback undoes)."""

    def register(
        self,
        name: str,
        *,
        artifact_id: str,
        run_id: str | None,
        signature: Mapping[str, Any],
        metrics: Mapping[str, Any],
        tags: Mapping[str, Any],
        status: ModelStatus,
        who: str,
    ) -> ModelVersion:
        """The next version of ``name``; the existing one when ``artifact_id`` already is a version."""
        ...

    def get(self, name: str, *, version: int | None = None, alias: str | None = None) -> ModelVersion: ...

    def versions(self, name: str) -> list[ModelVersion]: ...

    def versions_of_run(self, run_id: str) -> list[ModelVersion]:
        """The versions (of any model) that run ``run_id`` registered, with their aliases."""
        ...

    def aliases(self, name: str) -> dict[str, int]:
        """Which version holds each alias of ``name`` now (empty for an unknown model): one small
        read, for callers that only need to know whether an alias moved."""
        ...

    def models(self) -> list[Model]: ...

    def set_alias(
        self, name: str, alias: str, version: int, *, who: str, reason: str, force: bool = False
    ) -> AliasEvent: ...

    def remove_alias(self, name: str, alias: str, *, who: str, reason: str) -> AliasEvent: ...

    def rollback(self, name: str, alias: str, *, who: str, reason: str) -> AliasEvent: ...

    def refuse(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        who: str,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
    ) -> AliasEvent:
        """Record that ``version`` was kept off ``alias`` (which does not move), with the evidence."""
        ...

    def history(self, name: str, alias: str | None = None) -> list[AliasEvent]: ...


class TokenStore(Protocol):
    """Team-server tokens (by the sha256 of their secret) and the audit trail of writes."""

    def add_token(self, name: str, role: str, token_hash: str, *, created_by: str) -> ApiToken: ...

    def token_by_hash(self, token_hash: str) -> ApiToken | None: ...

    def list_tokens(self) -> list[ApiToken]: ...

    def revoke_token(self, token_id: str) -> ApiToken: ...

    def record_audit(
        self,
        who: str,
        action: str,
        target: str,
        *,
        reason: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry: ...

    def audit_entries(
        self,
        *,
        target: str | None = None,
        action: str | None = None,
        before: str | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]: ...


class PipelineStore(Protocol):
    """Deployed pipeline versions (numbered per name, immutable), their aliases with history, and the
    CI verdicts keyed by code hash that a deploy consults."""

    def create_version(self, version: PipelineVersion) -> PipelineVersion:
        """Store ``version`` under the next number of its name (its ``version``/``id`` are assigned)."""
        ...

    def create_or_reuse(
        self, version: PipelineVersion, same: Callable[[PipelineVersion], bool] | None = None
    ) -> tuple[PipelineVersion, bool]:
        """``(stored, True)`` as :meth:`create_version`, or ``(existing, False)`` when a version of
        the name already satisfies ``same`` (the newest such), decided atomically: concurrent
        identical deploys make one version."""
        ...

    def get_version(
        self, name: str, version: int | None = None, *, alias: str | None = None
    ) -> PipelineVersion:
        """A version by number, by alias, or (neither given) the newest; NotFoundError otherwise."""
        ...

    def list_versions(self, name: str | None = None) -> list[PipelineVersion]: ...

    def aliases(self, name: str) -> dict[str, int]: ...

    def move_alias(
        self, name: str, alias: str, version: int | None, *, action: str, who: str, reason: str
    ) -> AliasEvent:
        """Point ``alias`` at ``version`` (None removes it) and record the move, in one transaction;
        a promotion to the version it already holds records nothing (the event's action: unchanged)."""
        ...

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]: ...

    def record_ci(self, record: CiRecord) -> None: ...

    def get_ci(self, code_hash: str) -> CiRecord | None:
        """The newest CI verdict recorded for ``code_hash``, or None."""
        ...


class RunPages(Protocol):
    """Pages of runs filtered by params and metrics and sorted by a metric, with a keyset cursor (the
    team server's runs page); the query plan is chosen by the implementation."""

    def page(self, query: RunPageQuery) -> RunPage: ...
