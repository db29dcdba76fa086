"""The runner: cache lookup → Executor → record lineage.

The driver (this module, in the caller's process) owns every metadata write; the work submitted to
the ``concurrent.futures.Executor`` is :func:`execute_step`, a top-level function that loads inputs,
calls the step and writes its outputs to the artifact store. Any Executor works: a thread pool in
process, or ``dask.distributed.Client.get_executor()`` on a cluster sharing the artifact store.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mloop.core import fingerprint
from mloop.core.context import step_context
from mloop.core.graph import Node, OutputRef, ParamRef
from mloop.core.pipeline import Pipeline
from mloop.core.serialize import deserialize, file_artifact, python_type_name, serialize, store_value
from mloop.entities import ArtifactRef, Run, RunStatus, StepRun, StepStatus
from mloop.errors import ConflictError, MloopError, ParameterError, StepFailedError
from mloop.stores.base import ArtifactStore, MetadataStore, NewArtifact

__all__ = ["RunResult", "Runner", "StepListener", "Stores", "execute_step"]

log = logging.getLogger("mloop.runner")

TIMEOUT_ERROR = "StepTimeoutError"  # the error type a step past its timeout is recorded with

StepListener = Callable[[str, StepStatus], None]


class Stores(Protocol):
    """What the runner needs from a workspace."""

    @property
    def metadata(self) -> MetadataStore: ...

    @property
    def artifacts(self) -> ArtifactStore: ...

    heartbeat_s: float
    step_timeout_s: float  # for a step without a timeout of its own (0: none)

    def executor(self) -> AbstractContextManager[Executor]: ...


@dataclass(frozen=True)
class StepTask:
    """Everything a worker needs to execute one step; picklable for remote executors."""

    run_id: str
    node: str
    fn: Callable[..., Any]
    outputs: tuple[str, ...]
    params: dict[str, Any]
    artifact_inputs: dict[str, ArtifactRef]
    preloaded: dict[str, Any]
    artifacts: ArtifactStore
    keep_values: bool
    workspace: object = None  # opaque: typed again by mloop.steps.workspace()
    abandoned: threading.Event | None = None  # in process: set once the step ran past its timeout


@dataclass
class StepOutcome:
    """What came back from a worker: new artifacts, logged values, or the error."""

    outputs: dict[str, NewArtifact] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    metrics: list[tuple[str, float, int]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, NewArtifact] = field(default_factory=dict)  # read by the step besides its inputs
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    stops_run: bool = False


def execute_step(task: StepTask) -> StepOutcome:
    """Load inputs, call the step function, store its outputs. Never raises: errors are returned."""
    outcome = StepOutcome()
    try:
        kwargs = dict(task.params)
        for arg, ref in task.artifact_inputs.items():
            if arg in task.preloaded:
                kwargs[arg] = task.preloaded[arg]
            else:
                kwargs[arg] = deserialize(ref.type, task.artifacts.get(ref.digest), ref.python_type)
        with step_context(
            task.run_id, task.node, task.workspace, task.artifact_inputs, task.abandoned
        ) as ctx:
            result = task.fn(**kwargs)
        outcome.metrics, outcome.params, outcome.inputs = ctx.metrics, ctx.params, ctx.used
        for name, value in _split_outputs(task, result).items():
            outcome.outputs[name] = store_value(
                task.artifacts, value, what=f"step {task.node!r} output {name!r}"
            )
            if task.keep_values:
                outcome.values[name] = value
    except BaseException as exc:
        outcome.error_type = type(exc).__name__
        outcome.error_message = str(exc) or repr(exc)
        outcome.error_traceback = traceback.format_exc()
        outcome.stops_run = bool(getattr(exc, "stops_run", False))
        outcome.outputs = _store_attached(task, getattr(exc, "artifacts", None))
    return outcome


def _store_attached(task: StepTask, attached: Any) -> dict[str, NewArtifact]:
    """Artifacts an exception carries (e.g. the anomalies of a refused batch), kept with the failure."""
    stored: dict[str, NewArtifact] = {}
    if not isinstance(attached, dict):
        return stored
    for name, value in attached.items():
        try:
            stored[str(name)] = store_value(task.artifacts, value, what=f"step {task.node!r} report {name!r}")
        except MloopError as exc:
            log.warning("could not keep %s of failed step %s: %s", name, task.node, exc)
    return stored


def _split_outputs(task: StepTask, result: Any) -> dict[str, Any]:
    if not task.outputs:
        return {}
    if len(task.outputs) == 1 and task.outputs == ("output",):
        return {"output": result}
    if not isinstance(result, tuple | list) or len(result) != len(task.outputs):
        raise MloopError(
            f"step {task.node!r} declares outputs {list(task.outputs)} but returned "
            f"{type(result).__name__}{'' if not isinstance(result, tuple | list) else f' of {len(result)}'}",
            field=task.node,
        )
    return dict(zip(task.outputs, result, strict=True))


@dataclass(frozen=True)
class RunResult:
    """A finished run: its record, its step runs and its outputs by node and output name."""

    run: Run
    steps: list[StepRun]
    outputs: dict[str, dict[str, ArtifactRef]]
    artifacts: ArtifactStore
    # node → the (node, output) pairs it read: which artifacts each step's outputs were made from
    upstream: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def step(self, name: str) -> StepRun:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def load(self, node: str, output: str = "output") -> Any:
        """The value a node produced, read back (and verified) from the artifact store."""
        ref = self.outputs[node][output]
        return deserialize(ref.type, self.artifacts.get(ref.digest), ref.python_type)


@dataclass
class _Prepared:
    params: dict[str, Any]
    key_params: dict[str, Any]
    inputs: dict[str, ArtifactRef]
    uris: dict[str, str]  # where the file inputs were read


class Runner:
    """Runs a pipeline against a workspace's stores and executor."""

    def __init__(
        self,
        stores: Stores,
        *,
        listener: StepListener | None = None,
        on_start: Callable[[Run], None] | None = None,
    ) -> None:
        self.stores = stores
        self.metadata = stores.metadata
        self.artifacts = stores.artifacts
        self.listener = listener
        self.on_start = on_start  # told the run's id before any step runs (e.g. to link a trigger event)

    def run(
        self,
        pipeline: Pipeline,
        params: Mapping[str, Any],
        *,
        cache: bool = True,
        trigger: str = "manual",
        resume: str | None = None,
    ) -> RunResult:
        """Execute ``pipeline``; raises StepFailedError (after recording) when a step fails."""
        resumed_from = None
        if resume is not None:
            prior = self.metadata.get_run(resume)
            if prior.pipeline != pipeline.name:
                raise ParameterError(
                    f"run {resume!r} is of pipeline {prior.pipeline!r}, not {pipeline.name!r}", field="resume"
                )
            if prior.status == RunStatus.RUNNING:  # a dead one was marked failed when the store opened
                raise ConflictError(
                    f"run {prior.id} is still running (started {prior.created_at:%Y-%m-%d %H:%M:%S} UTC): "
                    "resume it once it has ended, or it runs twice",
                    field="resume",
                )
            params = {**prior.params, **params}
            resumed_from = prior.id
        bound = pipeline.bind({**pipeline.version_params, **params})
        graph = pipeline.graph
        files = self._hash_files(pipeline, bound)
        source = pipeline.source_path()
        run = self.metadata.create_run(
            pipeline.name,
            params=bound,
            trigger=trigger,
            # a deployed version runs from a cache folder: its commit is the one recorded at deploy
            code_commit=pipeline.version_commit
            if pipeline.version_ref is not None
            else (fingerprint.git_commit(source) if source else None),
            code_hash=pipeline.code_hash(),
            resumed_from=resumed_from,
        )
        if pipeline.version_ref is not None:  # lineage: run → deployed pipeline version → commit
            self.metadata.log_params(run.id, {"pipeline.version": pipeline.version_ref})
        if self.on_start is not None:
            self.on_start(run)
        stop_beat = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(run.id, stop_beat), daemon=True)
        beat.start()
        try:
            outputs, failure = self._execute(run, graph.order, graph.nodes, bound, files, cache)
        except BaseException as exc:
            why = f"run aborted: {type(exc).__name__}: {exc}"
            for step in self.metadata.list_steps(run.id):  # Ctrl-C mid-step: it never finished either
                if step.status == StepStatus.RUNNING:
                    self.metadata.finish_step(
                        step.id, StepStatus.FAILED, error_type=type(exc).__name__, error_message=why
                    )
            self.metadata.finish_run(run.id, RunStatus.FAILED, error=why)
            raise
        finally:
            stop_beat.set()
        if failure is None:
            final = self.metadata.finish_run(run.id, RunStatus.SUCCEEDED)
            upstream = {
                name: [(src.node, src.output) for src in node.inputs.values() if isinstance(src, OutputRef)]
                for name, node in graph.nodes.items()
            }
            return RunResult(final, self.metadata.list_steps(run.id), outputs, self.artifacts, upstream)
        node, outcome = failure
        status = RunStatus.STOPPED if outcome.stops_run else RunStatus.FAILED
        message = f"step {node!r} {'stopped the run' if outcome.stops_run else 'failed'}: " + (
            f"{outcome.error_type}: {outcome.error_message}"
        )
        self.metadata.finish_run(run.id, status, error=message)
        raise StepFailedError(
            f"run {run.id} {status.value}: {message}",
            run_id=run.id,
            step=node,
            error_type=outcome.error_type or "Error",
            error_message=outcome.error_message or "",
        )

    def _heartbeat(self, run_id: str, stop: threading.Event) -> None:
        while not stop.wait(self.stores.heartbeat_s):
            try:
                self.metadata.heartbeat(run_id)
            except MloopError as exc:  # a missed beat is not worth failing the run
                log.warning("heartbeat for run %s failed: %s", run_id, exc)

    def _hash_files(self, pipeline: Pipeline, bound: Mapping[str, Any]) -> dict[tuple[str, str], ArtifactRef]:
        """Record every file input as an artifact (content digest) before the run starts."""
        files: dict[tuple[str, str], ArtifactRef] = {}
        for node in pipeline.graph.nodes.values():
            for arg, src in node.inputs.items():
                if isinstance(src, OutputRef):
                    continue
                many = node.step.is_paths_input(arg)
                if not (many or node.step.is_path_input(arg)):
                    continue
                value = bound[src.name] if isinstance(src, ParamRef) else src.value
                if value is None:
                    continue
                field = src.name if isinstance(src, ParamRef) else arg
                if not many:
                    files[(node.name, arg)] = self._file_input(node.name, arg, value, field)
                    continue
                if isinstance(value, str | Path) or not isinstance(value, Sequence):
                    raise ParameterError(
                        f"step {node.name!r} input {arg!r} takes a list of files, got {type(value).__name__}",
                        field=field,
                    )
                for i, item in enumerate(value):  # each file an input of its own: data[0], data[1], …
                    name = f"{arg}[{i}]"
                    files[(node.name, name)] = self._file_input(node.name, name, item, field)
        return files

    def _file_input(self, node: str, arg: str, value: Any, field: str) -> ArtifactRef:
        path = Path(value).expanduser().resolve()
        if not path.exists():
            raise ParameterError(f"step {node!r} input {arg!r}: file {path} does not exist", field=field)
        read = file_artifact(path)
        # the same bytes are one artifact, recorded at the first path they were read at: this step
        # read them here (its events record the path; lineage shows it)
        return dataclasses.replace(self.metadata.add_artifact(read), uri=read.uri)

    def _prepare(
        self,
        node: Node,
        bound: Mapping[str, Any],
        files: Mapping[tuple[str, str], ArtifactRef],
        results: Mapping[str, Mapping[str, ArtifactRef]],
    ) -> _Prepared:
        params: dict[str, Any] = {}
        key_params: dict[str, Any] = {}
        inputs: dict[str, ArtifactRef] = {}
        uris: dict[str, str] = {}
        for arg, src in node.inputs.items():
            if isinstance(src, OutputRef):
                inputs[arg] = results[src.node][src.output]
                continue
            value = bound[src.name] if isinstance(src, ParamRef) else src.value
            if (node.name, arg) in files:
                inputs[arg] = files[(node.name, arg)]
                uris[arg] = inputs[arg].uri
                params[arg] = Path(value)
            elif value is not None and node.step.is_paths_input(arg):
                for i in range(len(value)):  # the files' digests key the cache, in order
                    inputs[f"{arg}[{i}]"] = files[(node.name, f"{arg}[{i}]")]
                    uris[f"{arg}[{i}]"] = inputs[f"{arg}[{i}]"].uri
                params[arg] = [Path(v) for v in value]
                key_params[arg] = len(value)  # [] and no list differ; the rest is in the digests
            else:
                params[arg] = key_params[arg] = value
        return _Prepared(params, key_params, inputs, uris)

    def _execute(
        self,
        run: Run,
        order: list[str],
        nodes: Mapping[str, Node],
        bound: Mapping[str, Any],
        files: Mapping[tuple[str, str], ArtifactRef],
        use_cache: bool,
    ) -> tuple[dict[str, dict[str, ArtifactRef]], tuple[str, StepOutcome] | None]:
        waiting = {name: set(nodes[name].upstream) for name in order}
        consumers = {name: sum(name in nodes[c].upstream for c in order) for name in order}
        handouts: Counter[tuple[str, str]] = Counter(
            (src.node, src.output)
            for n in order
            for src in nodes[n].inputs.values()
            if isinstance(src, OutputRef)
        )
        ready = deque(name for name in order if not waiting[name])
        results: dict[str, dict[str, ArtifactRef]] = {}
        values: dict[str, dict[str, Any]] = {}
        running: dict[Future[StepOutcome], tuple[str, StepRun]] = {}
        # a step's timeout and, once it started, its monotonic deadline (a queued step's clock waits:
        # on a thread pool a future says when it starts; a remote executor's counts from submission)
        deadlines: dict[Future[StepOutcome], tuple[float | None, float, threading.Event]] = {}
        abandoned: list[str] = []  # steps that timed out: their threads are left to run on
        failure: tuple[str, StepOutcome] | None = None

        def done(name: str) -> None:
            for child in order:
                if name in waiting[child]:
                    waiting[child].discard(name)
                    if not waiting[child]:
                        ready.append(child)
            for parent in nodes[name].upstream:  # free in-memory values nobody will read again
                consumers[parent] -= 1
                if consumers[parent] == 0:
                    values.pop(parent, None)

        with _interruptible(self.stores.executor(), lambda: bool(abandoned)) as executor:
            keep_values = isinstance(executor, ThreadPoolExecutor)
            while ready or running:
                while ready and failure is None:
                    name = ready.popleft()
                    node = nodes[name]
                    prep = self._prepare(node, bound, files, results)
                    digests = {arg: ref.digest for arg, ref in prep.inputs.items()}
                    key_params = prep.key_params
                    if node.step.external is not None:
                        key_params = {
                            **key_params,
                            "__external__": node.step.external(self.stores, prep.params),
                        }
                    key = fingerprint.cache_key(node.step.code_hash, key_params, digests)
                    input_ids = {arg: ref.id for arg, ref in prep.inputs.items()}
                    record_params = {k: _recorded(v) for k, v in prep.params.items()}
                    hit = self._cache_hit(key, node) if use_cache and node.step.cache else None
                    if hit is not None:
                        source, outs = hit
                        self.metadata.record_cached_step(
                            run.id,
                            name,
                            cache_key=key,
                            params=record_params,
                            inputs=input_ids,
                            cached_from=source.cached_from or source.id,
                            outputs={o: ref.id for o, ref in outs.items()},
                            input_uris=prep.uris,
                        )
                        results[name] = outs
                        self._notify(name, StepStatus.CACHED)
                        done(name)
                        continue
                    step_run = self.metadata.start_step(
                        run.id,
                        name,
                        cache_key=key,
                        params=record_params,
                        inputs=input_ids,
                        input_uris=prep.uris,
                    )
                    self._notify(name, StepStatus.RUNNING)
                    preloaded = {}
                    for arg, src in node.inputs.items():
                        if isinstance(src, OutputRef) and src.output in values.get(src.node, {}):
                            handouts[(src.node, src.output)] -= 1
                            value = values[src.node][src.output]
                            # the last reader may have the object itself; earlier ones get private copies
                            last = handouts[(src.node, src.output)] == 0
                            preloaded[arg] = value if last else _private_copy(value)
                    # artifacts to load as values: not the files, which the step reads itself
                    loads = {arg: ref for arg, ref in prep.inputs.items() if arg not in prep.uris}
                    limit = self._timeout(node)
                    flag = threading.Event() if keep_values and limit else None
                    task = StepTask(
                        run.id, name, node.step.fn, node.step.outputs, prep.params, loads,
                        preloaded, self.artifacts, keep_values, self.stores if keep_values else None,
                        flag,
                    )  # fmt: skip
                    future = executor.submit(execute_step, task)
                    running[future] = (name, step_run)
                    if limit:
                        due = None if keep_values else time.monotonic() + limit  # queued: not yet
                        deadlines[future] = (due, limit, flag or threading.Event())
                if not running:
                    break
                finished, _ = wait(
                    running, timeout=_next_wake(running, deadlines), return_when=FIRST_COMPLETED
                )
                if not finished:  # a step may be past its timeout
                    late = [f for f in running if _past(f, deadlines)]
                    for future in late:
                        name, step_run = running.pop(future)
                        deadlines[future][2].set()  # the step may no longer use the workspace
                        timed_out = self._time_out(future, name, step_run, deadlines[future][1])
                        abandoned.append(name)
                        failure = failure or (name, timed_out)
                    if failure is not None:  # the run has failed: steps still queued never start
                        for future in [f for f in running if f.cancel()]:
                            name, step_run = running.pop(future)
                            self.metadata.finish_step(
                                step_run.id, StepStatus.SKIPPED,
                                error_message=f"not started: step {failure[0]!r} failed the run first",
                            )  # fmt: skip
                            self._notify(name, StepStatus.SKIPPED)
                    continue
                for future in finished:
                    name, step_run = running.pop(future)
                    outcome = _outcome_of(future)
                    if outcome.error_type is not None:
                        self.metadata.finish_step(
                            step_run.id,
                            StepStatus.STOPPED if outcome.stops_run else StepStatus.FAILED,
                            outputs=outcome.outputs,
                            metrics=outcome.metrics,
                            error_type=outcome.error_type,
                            error_message=outcome.error_message,
                            error_traceback=outcome.error_traceback,
                        )
                        # the traceback is in the step record (`mloop runs show --json`); logs stay short
                        log.info("step %s: %s: %s", name, outcome.error_type, outcome.error_message)
                        self._notify(name, StepStatus.STOPPED if outcome.stops_run else StepStatus.FAILED)
                        failure = failure or (name, outcome)
                        continue
                    results[name] = self.metadata.finish_step(
                        step_run.id,
                        StepStatus.SUCCEEDED,
                        outputs=outcome.outputs,
                        metrics=outcome.metrics,
                        params=outcome.params,
                        inputs=outcome.inputs,
                    )
                    if outcome.values:
                        values[name] = outcome.values
                    self._notify(name, StepStatus.SUCCEEDED)
                    done(name)
        return results, failure

    def _timeout(self, node: Node) -> float:
        """Seconds ``node``'s step may run (0: no limit): its own timeout, else the workspace's."""
        own = node.step.timeout_s
        limit = own if own is not None else getattr(self.stores, "step_timeout_s", 0.0)
        return limit if 0 < limit < math.inf else 0.0

    def _time_out(
        self, future: Future[StepOutcome], name: str, step_run: StepRun, limit: float
    ) -> StepOutcome:
        """Fail a step still running after ``limit`` seconds. A thread cannot be stopped from outside:
        the executor is left without waiting for it (a remote executor's task is cancelled), and its
        late result, if one ever comes, is ignored."""
        future.cancel()
        outcome = StepOutcome(
            error_type=TIMEOUT_ERROR,
            error_message=f"still running after its timeout of {limit:g} s (its result is not used)",
        )
        self.metadata.finish_step(
            step_run.id, StepStatus.FAILED, error_type=outcome.error_type, error_message=outcome.error_message
        )
        log.warning("step %s: %s: %s", name, outcome.error_type, outcome.error_message)
        self._notify(name, StepStatus.FAILED)
        return outcome

    def _cache_hit(self, key: str, node: Node) -> tuple[StepRun, dict[str, ArtifactRef]] | None:
        hit = self.metadata.find_cached(key)
        if hit is None:
            return None
        source, outs = hit
        if set(outs) != set(node.step.outputs):
            return None
        if not all(self.artifacts.verify(ref.digest, ref.size) for ref in outs.values()):
            return None  # bytes were removed or corrupted: execute again (its put() rewrites them)
        return source, outs

    def _notify(self, name: str, status: StepStatus) -> None:
        if self.listener is not None:
            self.listener(name, status)


def _next_wake(
    running: Mapping[Future[StepOutcome], Any],
    deadlines: dict[Future[StepOutcome], tuple[float | None, float, threading.Event]],
) -> float | None:
    """How long the runner may wait for a step to finish before a timeout is due (None: no limit).
    A step with a timeout that is still queued has no deadline yet: look again shortly, and start
    its clock once its future says it runs."""
    now, soonest = time.monotonic(), math.inf
    for future in running:
        if future not in deadlines:
            continue
        deadline, limit, flag = deadlines[future]
        if deadline is None and (future.running() or future.done()):
            deadline = now + limit
            deadlines[future] = (deadline, limit, flag)
        soonest = min(soonest, deadline - now if deadline is not None else _QUEUED_POLL_S)
    return max(0.0, soonest) if soonest < math.inf else None


def _past(future: Future[StepOutcome], deadlines: dict[Future[StepOutcome], Any]) -> bool:
    deadline = deadlines[future][0] if future in deadlines else None
    return deadline is not None and deadline <= time.monotonic()


_QUEUED_POLL_S = 0.05  # how often a queued step with a timeout is looked at, to start its clock


@contextmanager
def _interruptible(
    manager: AbstractContextManager[Executor], abandoned: Callable[[], bool]
) -> Iterator[Executor]:
    """``manager``'s executor; after Ctrl-C, or once a step ran past its timeout (``abandoned()``), a
    thread pool is left without waiting for the step that runs in it (leaving the pool would wait
    for it: a minute, or forever)."""
    executor = manager.__enter__()
    try:
        yield executor
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) and isinstance(executor, ThreadPoolExecutor):
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        if not manager.__exit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        if abandoned() and isinstance(executor, ThreadPoolExecutor):
            executor.shutdown(wait=False, cancel_futures=True)
        else:
            manager.__exit__(None, None, None)


def _recorded(value: Any) -> Any:
    """A parameter as the metadata store records it: paths (alone or in a list) as text."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
        return [str(v) for v in value]
    return value


def _private_copy(value: Any) -> Any:
    """A copy a step may mutate without other steps seeing it (cheap ``.copy()`` where one exists)."""
    method = getattr(value, "copy", None)
    if callable(method) and type(value).__module__.split(".")[0] in ("pandas", "numpy"):
        return method()
    if hasattr(type(value), "__mloop_artifact__"):
        return type(value).from_bytes(value.to_bytes())
    try:
        return copy.deepcopy(value)
    except (TypeError, copy.Error):
        kind, data = serialize(value, what="step input")
        return deserialize(kind, data, python_type_name(value))


def _outcome_of(future: Future[StepOutcome]) -> StepOutcome:
    try:
        return future.result()
    except BaseException as exc:  # the executor itself failed (e.g. a remote worker died)
        return StepOutcome(error_type=type(exc).__name__, error_message=str(exc) or repr(exc))
