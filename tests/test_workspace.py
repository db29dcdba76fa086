"""What a workspace is made of is fixed when it opens: every store is there, and none can be swapped."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import mloop
from mloop.stores import base

MEMBERS = {  # member → the Protocol callers type it as (its methods must all be there)
    "metadata": base.MetadataStore,
    "artifacts": base.ArtifactStore,
    "registry": base.ModelRegistry,
    "triggers": base.TriggerStore,
    "feature_registry": base.FeatureRegistry,
    "tokens": base.TokenStore,
    "pipelines": base.PipelineStore,
}


def _protocol_methods(protocol: type) -> set[str]:
    return {
        name
        for cls in protocol.__mro__
        if cls not in (object,) and getattr(cls, "_is_protocol", False)
        for name, value in vars(cls).items()
        if callable(value) and not name.startswith("_")
    }


@pytest.mark.parametrize("member", sorted(MEMBERS))
def test_every_store_is_there_and_read_only(workspace: mloop.Workspace, member: str) -> None:
    store = getattr(workspace, member)
    missing = {m for m in _protocol_methods(MEMBERS[member]) if not callable(getattr(store, m, None))}
    assert missing == set(), f"ws.{member} lacks {missing}"
    with pytest.raises(AttributeError):
        setattr(workspace, member, None)
    assert getattr(workspace, member) is store


def test_root_and_settings_are_read_only_too(workspace: mloop.Workspace) -> None:
    for member in ("root", "settings"):
        with pytest.raises(AttributeError):
            setattr(workspace, member, None)
    assert workspace.root is not None and workspace.root.is_dir()


def test_a_step_run_recorded_outside_a_pipeline(workspace: mloop.Workspace) -> None:
    source = workspace.store_artifact({"rows": 3})
    run = workspace.record_step_run(
        "measure/x",
        "measure",
        params={"window": 10},
        inputs={"data": source.id},
        outputs={"report": {"drift_share": 0.25}},
        metrics=[("drift_share", 0.25, 0)],
        trigger="monitor",
    )
    assert run.status == mloop.RunStatus.SUCCEEDED and run.trigger == "monitor"
    [step] = workspace.metadata.list_steps(run.id)
    assert step.name == "measure" and step.status == mloop.StepStatus.SUCCEEDED
    graph = workspace.lineage(run.id)
    assert {a.id for a in graph.artifacts.values()} >= {source.id}
    [out] = workspace.metadata.events(step_run_ids=[step.id], kind="output")
    assert workspace.load_artifact(out.artifact_id) == {"drift_share": 0.25}
    assert [m.value for m in workspace.metadata.get_metrics(run.id, "drift_share")] == [0.25]


def test_a_step_run_that_cannot_be_recorded_ends_failed(workspace: mloop.Workspace) -> None:
    with pytest.raises(mloop.SerializationError):
        workspace.record_step_run("measure/x", "measure", params={}, inputs={}, outputs={"report": object()})
    [run] = workspace.runs()
    assert run.status == mloop.RunStatus.FAILED and "SerializationError" in (run.error or "")


def test_bytes_from_another_workspace_are_stored_as_the_same_artifact(
    workspace: mloop.Workspace, tmp_path: Path
) -> None:
    """store_bytes is the one way serialized bytes (a model copied into a load test's or a build's
    workspace, a source snapshot) become an artifact: same digest, type and Python type."""
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    original = workspace.store_artifact(frame)
    with mloop.Workspace.open(tmp_path / "other" / ".mloop") as other:
        copy = other.store_bytes(
            workspace.artifacts.get(original.digest), type=original.type, python_type=original.python_type
        )
        assert (copy.digest, copy.type, copy.python_type, copy.size) == (
            original.digest, original.type, original.python_type, original.size,
        )  # fmt: skip
        assert other.load_artifact(copy.id).equals(frame)


def test_a_file_given_as_the_workspace_is_named_as_such(tmp_path: Path) -> None:
    """`--workspace data.csv` by mistake: one clear message, not "cannot create …: File exists"."""
    data = tmp_path / "data.csv"
    data.write_text("x\n1\n")
    with pytest.raises(mloop.ConfigurationError, match=r"data\.csv is a file, not a folder"):
        mloop.Workspace.open(data)
    assert data.read_text() == "x\n1\n"


def test_a_truncated_database_beside_artifacts_is_refused_not_made_anew(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # SQLite reads an empty file as a new database: `runs list` said "0 runs" and rewrote the schema
    from mloop.cli import main

    root = tmp_path / "ws"
    with mloop.Workspace.open(root) as ws:
        ws.artifacts.put(b"model bytes")
    (root / "mloop.db").write_bytes(b"")
    for wal in root.glob("mloop.db-*"):
        wal.unlink()
    with pytest.raises(mloop.errors.StoreUnavailableError, match="is empty while the workspace holds"):
        mloop.Workspace.open(root)
    assert main(["runs", "list", "--workspace", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: metadata database") and err.count("\n") == 1, err
    assert (root / "mloop.db").stat().st_size == 0  # left for the user to restore, not rewritten
    fresh = tmp_path / "fresh"  # an empty file with nothing beside it is a new workspace, as before
    fresh.mkdir()
    (fresh / "mloop.db").write_bytes(b"")
    mloop.Workspace.open(fresh).close()
