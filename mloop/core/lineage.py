"""Lineage: walk the artifact ⇄ step-run graph upstream (what made this) or downstream (what used this)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from mloop.entities import ArtifactRef, Run, StepRun, StepStatus
from mloop.errors import NotFoundError
from mloop.stores.base import LineageStore, RunStore, StepStore

__all__ = ["LineageGraph", "lineage"]

Direction = Literal["upstream", "downstream"]


class LineageSource(LineageStore, StepStore, RunStore, Protocol):
    """What a lineage walk reads: artifacts and their events, step runs, runs."""


@dataclass
class LineageGraph:
    """Artifacts, step runs (with their runs) and ``(from, to, name)`` edges in data-flow direction."""

    root: str
    direction: Direction
    artifacts: dict[str, ArtifactRef] = field(default_factory=dict)
    steps: dict[str, StepRun] = field(default_factory=dict)
    runs: dict[str, Run] = field(default_factory=dict)
    edges: list[tuple[str, str, str]] = field(default_factory=list)
    # where a step read a file input, by input edge ``(artifact, step, name)``: the same bytes at
    # another path are one artifact, recorded with the first path they were read at
    read_at: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def add_edge(self, edge: tuple[str, str, str], uri: str | None = None) -> None:
        if edge not in self.edges:
            self.edges.append(edge)
        if uri is not None:
            self.read_at[edge] = uri

    def read_path(self, edge: tuple[str, str, str]) -> str | None:
        """Where the step of input ``edge`` read its file, when that differs from the artifact's URI."""
        uri = self.read_at.get(edge)
        artifact = self.artifacts.get(edge[0])
        return uri if uri is not None and (artifact is None or uri != artifact.uri) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "direction": self.direction,
            "artifacts": [
                {
                    "id": a.id,
                    "type": a.type,
                    "python_type": a.python_type,
                    "digest": a.digest,
                    "size": a.size,
                    "uri": a.uri,
                    "created_at": a.created_at.isoformat(),
                }
                for a in self.artifacts.values()
            ],
            "steps": [
                {
                    "id": s.id,
                    "name": s.name,
                    "run_id": s.run_id,
                    "status": s.status.value,
                    "cached_from": s.cached_from,
                    "cache_key": s.cache_key,
                    "started_at": s.started_at.isoformat(),
                    "ended_at": s.ended_at.isoformat() if s.ended_at else None,
                }
                for s in self.steps.values()
            ],
            "runs": [
                {
                    "id": r.id,
                    "pipeline": r.pipeline,
                    "code_commit": r.code_commit,
                    "code_hash": r.code_hash,
                    "trigger": r.trigger,
                    "params": r.params,
                    "status": r.status.value,
                    "created_at": r.created_at.isoformat(),
                }
                for r in self.runs.values()
            ],
            "edges": [
                {
                    "from": a,
                    "to": b,
                    "name": n,
                    **({"uri": uri} if (uri := self.read_path((a, b, n))) else {}),
                }
                for a, b, n in self.edges
            ],
        }


def lineage(
    store: LineageSource, ref: str, direction: Direction = "upstream", max_depth: int = 100
) -> LineageGraph:
    """The lineage of an artifact (id or digest), a step run, or every output of a run.

    Upstream follows each artifact to the execution that produced it (the original one, not cache
    re-links) and on to its inputs; downstream follows artifacts to the step runs that read them.
    """
    ref = ref.removeprefix("sha256:")
    frontier_artifacts: list[str] = []
    frontier_steps: list[str] = []
    try:
        root = store.get_artifact(ref).id  # an id or a digest: the graph is rooted at the artifact's id
        frontier_artifacts.append(root)
    except NotFoundError:
        try:
            root = store.get_step(ref).id
            frontier_steps.append(root)
        except NotFoundError:
            try:
                root = store.get_run(ref).id
            except NotFoundError:
                raise NotFoundError(
                    f"{ref!r} is no artifact id or digest, step run id or run id", field="ref"
                ) from None
            frontier_steps.extend(s.id for s in store.list_steps(root))
    graph = LineageGraph(root=root, direction=direction)
    seen_a: set[str] = set()
    seen_s: set[str] = set()
    for _ in range(max_depth):
        if not frontier_artifacts and not frontier_steps:
            break
        next_a: list[str] = []
        next_s: list[str] = []
        for aid in frontier_artifacts:
            if aid in seen_a:
                continue
            seen_a.add(aid)
            graph.artifacts[aid] = store.get_artifact(aid)
            kind = "output" if direction == "upstream" else "input"
            events = store.events(artifact_ids=[aid], kind=kind)
            if direction == "upstream":
                events = _original_producers(store, events, graph)
            for ev in events:
                next_s.append(ev.step_run_id)
                edge = (
                    (ev.step_run_id, aid, ev.name)
                    if direction == "upstream"
                    else (aid, ev.step_run_id, ev.name)
                )
                graph.edges.append(edge)
                if ev.kind == "input" and ev.uri is not None:
                    graph.read_at[edge] = ev.uri
        for sid in frontier_steps:
            if sid in seen_s:
                continue
            seen_s.add(sid)
            step = graph.steps.get(sid) or store.get_step(sid)
            graph.steps[sid] = step
            if step.run_id not in graph.runs:
                graph.runs[step.run_id] = store.get_run(step.run_id)
            kind = "input" if direction == "upstream" else "output"
            for ev in store.events(step_run_ids=[sid], kind=kind):
                next_a.append(ev.artifact_id)
                edge = (
                    (ev.artifact_id, sid, ev.name)
                    if direction == "upstream"
                    else (sid, ev.artifact_id, ev.name)
                )
                graph.add_edge(edge, ev.uri if ev.kind == "input" else None)
        frontier_artifacts, frontier_steps = next_a, next_s
    return graph


def _original_producers(store: LineageSource, events: list[Any], graph: LineageGraph) -> list[Any]:
    """Keep the executions that really computed an artifact; cache re-links point back to them."""
    original = []
    for ev in events:
        step = store.get_step(ev.step_run_id)
        graph.steps.setdefault(step.id, step)
        if step.status != StepStatus.CACHED:
            original.append(ev)
    return original[:1] or events[:1]
