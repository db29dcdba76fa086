"""The workspace: where a team's state lives, and the one place that turns settings into stores.

``Workspace.open()`` builds the metadata store, the artifact store and the executor factory from
settings, and marks runs whose process died as failed. It holds no other state.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

from mloop.core.lineage import Direction, LineageGraph, lineage
from mloop.core.pipeline import Pipeline
from mloop.core.runner import Runner, RunResult, StepListener
from mloop.core.serialize import deserialize, store_value
from mloop.deprecations import warn_renamed
from mloop.entities import AliasEvent, ArtifactRef, ModelStatus, ModelVersion, Run, RunStatus, StepStatus
from mloop.errors import (
    ArtifactCorruptedError,
    ConfigurationError,
    DataError,
    MloopError,
    NotFoundError,
    ParameterError,
    StoreUnavailableError,
    WorkspaceGoneError,
)
from mloop.names import check_name, decimal
from mloop.settings import Settings, load_settings
from mloop.stores.artifacts import FsspecArtifactStore
from mloop.stores.base import (
    ArtifactStore,
    FeatureRegistry,
    MetadataStore,
    MetricStore,
    ModelRegistry,
    NewArtifact,
    OnlineStore,
    PipelineStore,
    RunPages,
    RunQuery,
    RunStore,
    TokenStore,
    TriggerStore,
)
from mloop.stores.online_sqlite import SqliteOnlineStore
from mloop.stores.sql.features import SqlFeatureRegistry
from mloop.stores.sql.metadata import SqlMetadataStore
from mloop.stores.sql.pipelines import SqlPipelineStore
from mloop.stores.sql.registry import SqlModelRegistry
from mloop.stores.sql.run_pages import RunPage, RunPageQuery, SqlRunPages
from mloop.stores.sql.tokens import SqlTokenStore
from mloop.stores.sql.triggers import SqlTriggerStore

if TYPE_CHECKING:
    from mloop.features.store import FeatureStore

__all__ = ["TrackingRun", "Workspace", "current_user", "find_workspace_dir", "parse_model_ref"]

_T = TypeVar("_T")

log = logging.getLogger("mloop.registry")

WORKSPACE_DIRNAME = ".mloop"


def find_workspace_dir(path: str | os.PathLike[str] | None = None, *, start: Path | None = None) -> Path:
    """``path`` if given, else ``$MLOOP_WORKSPACE``, else ``.mloop`` found upward from ``start`` (or cwd),
    else ``./.mloop`` (to be created)."""
    if path is not None:
        return Path(path).expanduser().resolve()
    env = os.environ.get("MLOOP_WORKSPACE")
    if env:
        return Path(env).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / WORKSPACE_DIRNAME
        if candidate.is_dir():
            return candidate
    return here / WORKSPACE_DIRNAME


def _config_dir(root: Path | None) -> Path:
    """The one rule for where ``mloop.toml`` lives: beside the workspace folder (in the project that
    holds it), or the current directory for a workspace given only by URLs."""
    return root.parent if root is not None else Path.cwd()


def current_user() -> str:
    """Who is acting, for the registry's history: ``$MLOOP_USER``, else the login name."""
    import getpass

    try:
        return os.environ.get("MLOOP_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def parse_model_ref(ref: str) -> tuple[str, int | None, str | None]:
    """``NAME``, ``NAME@ALIAS`` or ``NAME:VERSION`` → (name, version, alias)."""
    if "@" in ref:
        name, _, alias = ref.partition("@")
        if not name or not alias:
            raise ParameterError(f"model reference {ref!r}: expected NAME@ALIAS", field="model")
        return name, None, alias
    if ":" in ref:
        name, _, version = ref.rpartition(":")
        number = decimal(version)
        if not name or number is None or number < 1:
            raise ParameterError(
                f"model reference {ref[:80]!r}: expected NAME:VERSION with VERSION from 1 to 999999999",
                field="model",
            )
        return name, number, None
    if not ref:
        raise ParameterError("model reference is empty", field="model")
    return ref, None, None


def _sqlite_file(url: Any) -> str | None:
    """The file a SQLite URL names (None for another database, or an in-memory or URI one)."""
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return None
    return str(database)


def _identity(path: Path) -> tuple[Path, tuple[int, int]] | None:
    """``path`` and the (device, inode) it names now; None when nothing is there."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return path, (found.st_dev, found.st_ino)


def _check_not_truncated(database: Path, artifacts: Path | None) -> None:
    """Refuse an empty ``mloop.db`` beside artifacts it would have recorded: SQLite reads an empty
    file as a new database, so a truncated one was silently made again (``runs list``: 0 runs, and
    the next run started over beside the old artifacts)."""
    try:
        empty = database.stat().st_size == 0
    except OSError:
        return
    if empty and artifacts is not None and artifacts.is_dir() and any(artifacts.iterdir()):
        raise StoreUnavailableError(
            f"metadata database {database} is empty while the workspace holds artifacts: it was "
            "truncated or replaced; restore it from a backup (or move the artifacts away to start over)",
            field="metadata_url",
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Workspace:
    """Stores and executor of one workspace. Use :meth:`open`; close it (or use ``with``) when done."""

    def __init__(
        self,
        root: Path | None,
        settings: Settings,
        metadata: MetadataStore,
        artifacts: ArtifactStore,
        registry: ModelRegistry,
        triggers: TriggerStore,
        feature_registry: FeatureRegistry,
        tokens: TokenStore,
        pipelines: PipelineStore,
        *,
        metadata_url: str,
        run_pages: RunPages | None = None,
        database: tuple[Path, tuple[int, int]] | None = None,
    ):
        self._root = root
        self._database = database  # the embedded database file as opened: (path, (device, inode))
        self._settings = settings
        self._metadata = metadata
        self._artifacts = artifacts
        self._registry = registry
        self._triggers = triggers
        self._feature_registry = feature_registry
        self._tokens = tokens
        self._pipelines = pipelines
        self._metadata_url = metadata_url
        self._run_pages = run_pages
        # live runs (pipelines and tracking runs) beat at least 4 times per stale_after_s, so two missed
        # beats on a busy machine still leave a live run well inside the staleness limit
        self.heartbeat_s = min(settings.heartbeat_s, settings.stale_after_s / 4)
        self.step_timeout_s = settings.step_timeout_s  # for a step without a timeout of its own
        self._shared: OrderedDict[str, Any] = OrderedDict()

    # what a workspace is made of: fixed when it opens, so read-only ----------------------------------

    @property
    def root(self) -> Path | None:
        """The workspace folder; None for a workspace given only by URLs."""
        return self._root

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def metadata(self) -> MetadataStore:
        """Runs, step runs, parameters, metrics and lineage events."""
        return self._metadata

    @property
    def artifacts(self) -> ArtifactStore:
        """Content-addressed artifact bytes."""
        return self._artifacts

    @property
    def registry(self) -> ModelRegistry:
        """Model versions and aliases (every workspace has one)."""
        return self._registry

    @property
    def triggers(self) -> TriggerStore:
        """Trigger events (claims, leases) and trigger state."""
        return self._triggers

    @property
    def feature_registry(self) -> FeatureRegistry:
        """Versions of feature definitions and their materializations."""
        return self._feature_registry

    @property
    def tokens(self) -> TokenStore:
        """Team-server tokens and the audit trail."""
        return self._tokens

    @property
    def pipelines(self) -> PipelineStore:
        """Frozen pipeline versions, their aliases and CI verdicts."""
        return self._pipelines

    @classmethod
    def open(
        cls, path: str | os.PathLike[str] | None = None, *, create: bool = True, **overrides: Any
    ) -> Workspace:
        """Open the workspace at ``path`` (see :func:`find_workspace_dir`), creating it if needed.

        With ``create=False`` a workspace that does not exist yet raises :class:`NotFoundError`
        naming where it was looked for (read-only callers never leave an empty workspace behind).
        ``overrides`` are settings fields (``metadata_url=…``, ``artifact_url=…``, ``max_workers=…``).
        """
        root = find_workspace_dir(path)
        settings = load_settings(_config_dir(root), **overrides)
        local = not settings.metadata_url or not settings.artifact_url
        if not create and local and not (root / "mloop.db").exists() and not settings.metadata_url:
            raise NotFoundError(
                f"no workspace at {root} (give --workspace DIR or set MLOOP_WORKSPACE)", field="workspace"
            )
        if local:
            if root.exists() and not root.is_dir():
                raise ConfigurationError(f"workspace {root} is a file, not a folder", field="workspace")
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot create workspace {root}: {exc.strerror}", field="workspace"
                ) from exc
        metadata_url = settings.metadata_url or f"sqlite:///{root / 'mloop.db'}"
        artifact_url = settings.artifact_url or str(root / "artifacts")
        if not settings.metadata_url:
            _check_not_truncated(root / "mloop.db", None if settings.artifact_url else root / "artifacts")
        metadata = SqlMetadataStore.from_url(metadata_url)
        database = _identity(Path(file)) if (file := _sqlite_file(metadata.engine.url)) else None
        try:
            artifacts = FsspecArtifactStore(artifact_url)
            metadata.fail_stale_runs(
                host=socket.gethostname(), is_alive=_pid_alive, stale_after_s=settings.stale_after_s
            )
        except BaseException:
            metadata.close()
            raise
        # one database holds them all: the registry and the trigger store share the metadata engine
        return cls(
            root,
            settings,
            metadata,
            artifacts,
            SqlModelRegistry(metadata.engine),
            SqlTriggerStore(metadata.engine),
            SqlFeatureRegistry(metadata.engine),
            SqlTokenStore(metadata.engine),
            SqlPipelineStore(metadata.engine),
            metadata_url=metadata.engine.url.render_as_string(),  # password hidden: it names, never connects
            run_pages=SqlRunPages(metadata.engine),
            database=database,
        )

    def check_intact(self) -> None:
        """Raise WorkspaceGoneError when the embedded database file this workspace opened was
        deleted or replaced since (``rm -rf`` of the workspace, a restore copied over it): SQLite
        keeps writing to the deleted file, where no other process sees anything. One ``stat``; a
        daemon checks it every pass."""
        if self._database is None:
            return
        path, opened = self._database
        now = _identity(path)
        if now is None or now[1] != opened:
            what = "deleted or moved" if now is None else "replaced"
            raise WorkspaceGoneError(
                f"the workspace database {path} was {what} while this process had it open: what it "
                "wrote since is in a file other processes do not open; start again on the workspace "
                "as it is",
                field="workspace",
            )

    def close(self) -> None:
        """Close the stores and drop the values this workspace kept in memory for its steps.

        A daemon thread that outlives the workspace (a scheduler's lease heartbeat) may still hold it:
        the cached values must not live on with it, or the native sketches inside statistics are still
        alive at interpreter exit and nanobind prints a page of "leaked instance" lines."""
        self._shared.clear()
        if "features" in self.__dict__:
            self.features.close()
        self.metadata.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @functools.cached_property
    def features(self) -> FeatureStore:
        """The feature store: definitions, point-in-time joins, materialization, online lookups."""
        return _feature_store(self)

    # running ------------------------------------------------------------------------------------

    def executor(self) -> AbstractContextManager[Executor]:
        """A fresh executor for one run, shut down when the run ends."""
        spec = self.settings.executor
        if spec == "threads":
            return ThreadPoolExecutor(max_workers=self.settings.max_workers, thread_name_prefix="mloop-step")
        if spec.startswith(("dask://", "tcp://")):
            return _dask_executor(spec)
        raise ConfigurationError(
            f"executor {spec!r} is not one of 'threads', 'dask://host:port'", field="executor"
        )

    def run(
        self,
        pipeline: Pipeline,
        *,
        cache: bool = True,
        trigger: str = "manual",
        resume: str | None = None,
        listener: StepListener | None = None,
        on_start: Callable[[Run], None] | None = None,
        **params: Any,
    ) -> RunResult:
        """Run ``pipeline`` here. Raises StepFailedError after recording a failed step."""
        runner = Runner(self, listener=listener, on_start=on_start)
        return runner.run(pipeline, params, cache=cache, trigger=trigger, resume=resume)

    # inspection ---------------------------------------------------------------------------------

    def runs(self, query: RunQuery | None = None) -> list[Run]:
        return self.metadata.search_runs(query or RunQuery())

    def run_page(self, query: RunPageQuery) -> RunPage:
        """One page of runs filtered by params and metrics, sorted by time or by a metric (the team
        server's runs page); ``page.next_after`` is the cursor of the next one."""
        if self._run_pages is None:
            raise ConfigurationError("this workspace was built without a runs-page store", field="workspace")
        return self._run_pages.page(query)

    def resolve_run(self, ref: str) -> Run:
        """A run by id or by a unique prefix of its id (as printed by ``mloop runs list``)."""
        try:
            return self.metadata.get_run(ref)
        except NotFoundError:
            pass
        matches = self.metadata.search_runs(RunQuery(id_prefix=ref, limit=2)) if len(ref) >= 4 else []
        return self._one(matches, ref, "run", "run_id", shortest=4)

    def resolve_artifact(self, ref: str) -> ArtifactRef:
        """An artifact by id, digest (``sha256:`` optional) or a unique prefix of either (as printed)."""
        ref = ref.strip().removeprefix("sha256:")
        try:
            return self.metadata.get_artifact(ref)
        except NotFoundError:
            pass
        matches = self.metadata.find_artifacts(ref, limit=2) if len(ref) >= 6 else []
        return self._one(matches, ref, "artifact", "artifact_id", shortest=6)

    def _one(self, matches: Sequence[_T], ref: str, what: str, field: str, *, shortest: int) -> _T:
        """The one match of a typed prefix; an error naming the workspace, or the first two candidates."""
        if len(matches) > 1:
            first, second = (getattr(m, "id", m) for m in matches[:2])
            raise ParameterError(f"{what} id prefix {ref!r} is ambiguous: {first}, {second}, …", field=field)
        if not matches and 0 < len(ref) < shortest:  # not looked up: "no artifact '01M98'" misled
            raise NotFoundError(
                f"{what} id prefix {ref!r} is too short: give at least {shortest} characters", field=field
            )
        if not matches:
            raise NotFoundError(f"no {what} {ref!r} in workspace {self.location}", field=field)
        return matches[0]

    @property
    def config_dir(self) -> Path:
        """Where this workspace's ``mloop.toml`` lives: the folder holding the workspace folder (the
        project), or the current directory for a workspace given only by URLs."""
        return _config_dir(self.root)

    @property
    def prediction_log_dir(self) -> Path:
        """Where prediction services of this workspace write their logs, and monitoring reads them."""
        return (self.root or Path.cwd()) / "prediction-log"

    @property
    def location(self) -> str:
        """Where this workspace lives, for messages: its folder, else its metadata URL without secrets."""
        if self.root is not None and not self.settings.metadata_url:
            return str(self.root)
        from sqlalchemy.engine import make_url

        return make_url(self.settings.metadata_url).render_as_string(hide_password=True)

    def lineage(self, ref: str, direction: Direction = "upstream") -> LineageGraph:
        """Lineage of an artifact (id, digest, ``sha256:digest``), a step run, a run (id or unique prefix)
        or a model version (``NAME:VERSION`` / ``NAME@ALIAS``: its model artifact)."""
        ref = ref.strip()
        if not ref.startswith("sha256:") and ("@" in ref or ":" in ref):
            ref = self.model_version(ref).artifact_id
        try:
            return lineage(self.metadata, ref, direction)
        except NotFoundError:
            pass
        try:
            return lineage(self.metadata, self.resolve_run(ref).id, direction)
        except NotFoundError:
            try:
                artifact = self.resolve_artifact(ref)
            except NotFoundError:
                raise NotFoundError(
                    f"no run, step run or artifact {ref!r} in workspace {self.location}", field="ref"
                ) from None
            return lineage(self.metadata, artifact.id, direction)

    # models -------------------------------------------------------------------------------------

    # the method forms of the store properties: deprecated, one public way (``ws.registry``, …) stays
    def model_registry(self) -> ModelRegistry:
        """Deprecated: use ``ws.registry``."""
        warn_renamed("mloop.Workspace", "model_registry()", "registry")
        return self.registry

    def trigger_store(self) -> TriggerStore:
        """Deprecated: use ``ws.triggers``."""
        warn_renamed("mloop.Workspace", "trigger_store()", "triggers")
        return self.triggers

    def token_store(self) -> TokenStore:
        """Deprecated: use ``ws.tokens``."""
        warn_renamed("mloop.Workspace", "token_store()", "tokens")
        return self.tokens

    def pipeline_store(self) -> PipelineStore:
        """Deprecated: use ``ws.pipelines``."""
        warn_renamed("mloop.Workspace", "pipeline_store()", "pipelines")
        return self.pipelines

    def store_artifact(self, value: Any, *, what: str = "value") -> ArtifactRef:
        """Store a value as a content-addressed artifact (the same bytes are stored once)."""
        if isinstance(value, ArtifactRef):
            return value
        return self.metadata.add_artifact(store_value(self.artifacts, value, what=what))

    def store_bytes(self, data: bytes, *, type: str, python_type: str) -> ArtifactRef:
        """Store bytes already serialized (``type`` names their serializer) as an artifact: the one way
        bytes from elsewhere (another workspace's artifact, a source snapshot) are recorded here."""
        digest, uri = self.artifacts.put(data)
        return self.metadata.add_artifact(NewArtifact(digest, type, python_type, len(data), uri))

    def load_artifact(self, artifact_id: str, *, shared: bool = False) -> Any:
        """An artifact's value, read back and verified against its digest.

        ``shared=True`` may return the same object as an earlier shared load (artifacts never change,
        so this is safe for callers that only read it, e.g. monitoring's reference statistics).
        """
        if shared and artifact_id in self._shared:
            self._shared.move_to_end(artifact_id)
            return self._shared[artifact_id]
        art = self.metadata.get_artifact(artifact_id)
        value = deserialize(art.type, self.artifacts.get(art.digest), art.python_type)
        if shared:
            self._shared[artifact_id] = value
            while len(self._shared) > 32:
                self._shared.popitem(last=False)
        return value

    def register_model(
        self,
        name: str,
        model: Any,
        *,
        signature: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        status: ModelStatus = ModelStatus.REGISTERED,
        compile: bool = False,
    ) -> ModelVersion:
        """Register ``model`` (a value or an already stored artifact) as the next version of ``name``.

        ``compile=True`` also stores the model's compiled serving form when it proves equal to the
        model (see ``mloop.core.compiled``); the signature's ``serving_form`` records it, or why not.
        """
        check_name(name)
        artifact = self.store_artifact(model, what=f"model {name!r}")
        existing = self._version_with(name, artifact.id)
        if existing is not None:  # identical bytes: registering is idempotent (no compile, no new version)
            return existing
        signature = dict(signature or {})
        if "inputs" in signature:  # refused now, not when a service first loads the version
            from mloop.validation.schema import Schema

            try:
                Schema.from_dict(signature["inputs"])
            except DataError as exc:
                raise ParameterError(
                    f"signature 'inputs' must be a schema document (mloop.infer_schema(...).to_dict()): "
                    f"{exc.message}",
                    field="signature",
                ) from exc
        if "feature_service" in signature:
            self._check_feature_service(signature)
        if compile:
            value = self.load_artifact(artifact.id) if isinstance(model, ArtifactRef) else model
            signature["serving_form"] = self._serving_form(value, signature)
        return self.registry.register(
            name,
            artifact_id=artifact.id,
            run_id=run_id,
            signature=signature,
            metrics=metrics or {},
            tags=tags or {},
            status=status,
            who=current_user(),
        )

    def _check_feature_service(self, signature: Mapping[str, Any]) -> None:
        """A signature's ``feature_service`` must name an applied service whose every feature is one of
        the signature's inputs, or each key-only request would fail once served."""
        service = signature["feature_service"]
        if not isinstance(service, str) or not service:
            raise ParameterError(
                f"signature feature_service {service!r} must be a feature service's name",
                field="feature_service",
            )
        selection = self.features.selection(service=service)  # NotFoundError names an unknown service
        inputs = signature.get("inputs")
        declared = inputs.get("columns") if isinstance(inputs, Mapping) else None
        columns = {str(c) for c in declared} if isinstance(declared, Mapping) else None  # name → spec
        if columns:
            refs = [f"{view.name}:{f}" for view, names in selection for f in names]
            absent = [r for r in refs if r not in columns]
            if absent:
                raise ParameterError(
                    f"signature inputs lack {absent[0]!r} of feature service {service!r}; the served model "
                    "would be handed columns it does not take",
                    field="feature_service",
                )

    def _version_with(self, name: str, artifact_id: str) -> ModelVersion | None:
        try:
            versions = self.registry.versions(name)
        except NotFoundError:
            return None
        return next((v for v in versions if v.artifact_id == artifact_id), None)

    def _serving_form(self, model: Any, signature: Mapping[str, Any]) -> dict[str, Any]:
        from mloop.core.compiled import compile_model

        compiled, why_not = compile_model(model, signature)
        if compiled is None:
            log.info("serving the Python model: %s", why_not)
            return {"format": None, "reason": why_not}
        return {"format": "onnx", "artifact_id": self.store_artifact(compiled).id}

    def model_version(self, ref: str) -> ModelVersion:
        """The version a reference names: ``NAME`` (newest registered), ``NAME@ALIAS`` or ``NAME:VERSION``."""
        name, version, alias = parse_model_ref(ref)
        return self.registry.get(name, version=version, alias=alias)

    def load_model(self, ref: str) -> Any:
        """The model a reference names, loaded from its digest-verified artifact.

        A corrupted artifact raises ArtifactCorruptedError naming the version (``churn v3``), so a
        broken production model is reported as broken, not as missing.
        """
        return self.load_version(self.model_version(ref), ref=ref)

    def load_version(self, version: ModelVersion, *, ref: str | None = None) -> Any:
        """A version's model; ArtifactCorruptedError names the version (and the reference used)."""
        try:
            return self.load_artifact(version.artifact_id)
        except ArtifactCorruptedError as exc:
            via = f" ({ref})" if ref else ""
            raise ArtifactCorruptedError(
                f"model {version.name} v{version.version}{via}: {exc}", field="model"
            ) from exc

    def promote(
        self, name: str, version: int, alias: str = "production", *, reason: str = "", force: bool = False
    ) -> AliasEvent:
        """Move ``alias`` to ``version``; recorded with who, when and why."""
        return self.registry.set_alias(name, alias, version, who=current_user(), reason=reason, force=force)

    def rollback(self, name: str, alias: str = "production", *, reason: str = "") -> AliasEvent:
        """Give ``alias`` back to its previous holder."""
        return self.registry.rollback(name, alias, who=current_user(), reason=reason)

    def remove_alias(self, name: str, alias: str, *, reason: str = "") -> AliasEvent:
        return self.registry.remove_alias(name, alias, who=current_user(), reason=reason)

    # tracking -----------------------------------------------------------------------------------

    def start_run(
        self, name: str, params: Mapping[str, Any] | None = None, *, trigger: str = "manual"
    ) -> TrackingRun:
        """An experiment-tracking run outside any pipeline (level 0 notebooks and scripts)."""
        run = self.metadata.create_run(
            name, params=dict(params or {}), trigger=trigger, code_commit=None, code_hash=""
        )
        return TrackingRun(self.metadata, run, heartbeat_s=self.heartbeat_s)

    def record_step_run(
        self,
        name: str,
        step: str,
        *,
        params: Mapping[str, Any],
        step_params: Mapping[str, Any] | None = None,
        inputs: Mapping[str, str],
        outputs: Mapping[str, Any],
        metrics: Sequence[tuple[str, float, int]] = (),
        trigger: str = "manual",
    ) -> Run:
        """Record work done outside any pipeline (``monitor()``'s measurement) as a run of one step, as
        the runner would: ``inputs`` are artifact ids, ``outputs`` values stored as artifacts, ``metrics``
        ``(key, value, step)``. The run ends succeeded, or failed when recording fails half-way."""
        meta = self.metadata
        run = meta.create_run(name, params=dict(params), trigger=trigger, code_commit=None, code_hash="")
        try:
            step_run = meta.start_step(
                run.id, step, cache_key="", params=dict(step_params or params), inputs=dict(inputs)
            )
            stored = {
                k: store_value(self.artifacts, v, what=f"{step} output {k!r}") for k, v in outputs.items()
            }
            meta.finish_step(step_run.id, StepStatus.SUCCEEDED, outputs=stored, metrics=metrics)
        except BaseException as exc:
            meta.finish_run(run.id, RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
            raise
        return meta.finish_run(run.id, RunStatus.SUCCEEDED)


class RunLog(RunStore, MetricStore, Protocol):
    """What a tracking run writes: its heartbeat, metrics, parameters and end."""


class TrackingRun:
    """A run you log to directly; a context manager that ends it succeeded, or failed on exception.

    While it is open, a daemon thread refreshes the run's heartbeat every ``heartbeat_s`` seconds, so
    other processes opening the workspace judge it alive however rarely it logs; the thread stops
    when the run ends (or with the process, which is what makes a killed run go stale).
    """

    def __init__(self, metadata: RunLog, run: Run, *, heartbeat_s: float | None = None) -> None:
        self.metadata = metadata
        self.run = run
        self.id = run.id
        self._stop_beat = threading.Event()
        self._beat: threading.Thread | None = None
        if heartbeat_s is not None:
            self._beat = threading.Thread(
                target=self._heartbeat, args=(heartbeat_s,), name="mloop-run-heartbeat", daemon=True
            )
            self._beat.start()

    def _heartbeat(self, interval_s: float) -> None:
        while not self._stop_beat.wait(interval_s):
            try:
                self.metadata.heartbeat(self.id)
            except MloopError as exc:  # a missed beat is not worth failing the run
                log.warning("heartbeat for run %s failed: %s", self.id, exc)

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        self.metadata.log_metrics(self.id, [(key, value, step)])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        self.metadata.log_metrics(self.id, [(k, v, step) for k, v in metrics.items()])

    def log_batch(self, metrics: Sequence[tuple[str, float, int]]) -> None:
        """Many ``(key, value, step)`` points in one transaction (e.g. a whole training curve)."""
        self.metadata.log_metrics(self.id, metrics)

    def log_param(self, key: str, value: Any) -> None:
        self.metadata.log_params(self.id, {key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.metadata.log_params(self.id, params)

    def end(self, status: RunStatus = RunStatus.SUCCEEDED, error: str | None = None) -> Run:
        self._stop_beat.set()
        if self._beat is not None and self._beat is not threading.current_thread():
            self._beat.join(timeout=5)
        self.run = self.metadata.finish_run(self.id, status, error)
        return self.run

    def __enter__(self) -> TrackingRun:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.end()
        else:
            self.end(RunStatus.FAILED, f"{exc_type.__name__ if exc_type else 'Error'}: {exc}")


# feature store ------------------------------------------------------------------------------------


def _feature_store(ws: Workspace) -> FeatureStore:
    """The workspace's feature store; its online store is built on first use (no connection before)."""
    from mloop.features.store import FeatureStore

    return FeatureStore(
        ws.feature_registry,
        lambda: _online_store(ws.settings.online_url, ws.root, ws._metadata_url),
        who=current_user,
        temp_dir=ws.root / "tmp" if ws.root is not None else None,
        services_in_use=lambda: _services_in_use(ws),
    )


def _services_in_use(ws: Workspace) -> dict[str, list[str]]:
    """Feature service → the aliased model versions (``name@alias``) that read their features by it."""
    registry = ws.registry
    users: dict[str, list[str]] = {}
    for model in registry.models():
        for alias, version in model.aliases.items():
            service = registry.get(model.name, version=version).signature.get("feature_service")
            if isinstance(service, str):
                users.setdefault(service, []).append(f"{model.name}@{alias}")
    return users


def _online_store(url: str, root: Path | None, metadata_url: str) -> OnlineStore:
    """The scheme → class table for online stores: SQLite (embedded default) or Redis."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        from mloop.stores.online_redis import RedisOnlineStore

        prefix = "mloop:" + hashlib.sha256(metadata_url.encode()).hexdigest()[:12] + ":"
        return RedisOnlineStore(url, prefix)
    if url.startswith("sqlite:///"):
        return SqliteOnlineStore(url[len("sqlite:///") :])
    if not url and root is not None:
        return SqliteOnlineStore(root / "online.db")
    raise ConfigurationError(
        f"online_url {url!r} is not one of '' (SQLite in the workspace), 'sqlite:///path', 'redis://…'",
        field="online_url",
    )


@contextmanager
def _dask_executor(spec: str) -> Iterator[Executor]:
    try:
        from distributed import Client
    except ImportError as exc:
        raise ConfigurationError(
            "executor 'dask://…' needs dask.distributed: pip install 'mloop[dask]'", field="executor"
        ) from exc
    parts = urlsplit(spec)
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        port = None
    if not parts.hostname or port is None:
        raise ConfigurationError(
            f"executor {spec[:200]!r} needs a scheduler's host and port (dask://host:8786)", field="executor"
        )
    address = f"tcp://{parts.netloc}"
    given = parse_qs(parts.query).get("timeout", ["10"])[-1]
    try:  # seconds to wait for the scheduler before giving up (dask retries a refused connection)
        timeout = float(given)
    except ValueError:
        timeout = math.nan
    if not 0 < timeout <= 3600:
        raise ConfigurationError(
            f"executor {spec!r}: timeout must be a number of seconds in (0, 3600], got {given!r}",
            field="executor",
        )
    try:
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise MloopError(
            f"cannot connect to the Dask scheduler at {address}: {exc}", field="executor"
        ) from exc
    try:
        yield client.get_executor()
    finally:
        client.close()
