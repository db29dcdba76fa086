"""Registry + model validation through real pipelines and the workspace API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import mloop
from mloop import steps
from mloop.errors import ArtifactCorruptedError, ConflictError, NotFoundError, ParameterError


@mloop.step(outputs=["train", "test"])
def make_data(seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    n = 1500
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "group": rng.choice(["u", "v"], n)})
    x["y"] = ((x["a"] + 0.7 * x["b"] + rng.normal(scale=0.6, size=n)) > 0).astype(int)
    return x.iloc[:1000], x.iloc[1000:]


@mloop.step
def fit(train: pd.DataFrame, use_b: bool = True) -> LogisticRegression:
    cols = ["a", "b"] if use_b else ["a"]
    model = LogisticRegression().fit(train[cols], train["y"])
    return model


@mloop.step
def features(df: pd.DataFrame, use_b: bool = True) -> pd.DataFrame:
    return df[["a", "b", "y"] if use_b else ["a", "y"]]


@mloop.pipeline
def training(use_b: bool = True, name: str = "clf"):
    train, test = make_data()
    model = fit(train, use_b=use_b)
    # both candidate and production are scored on the same full data; each takes its own inputs
    evaluation = steps.evaluate_model(model, test, "y", ["group"])
    verdict = steps.validate_model(evaluation, test, name, {"minimum": {"accuracy": 0.6}}, ["group"])
    infra = steps.infra_check(model, test, "y")
    steps.register_model(
        model,
        name,
        evaluation,
        verdict,
        infra,
        steps.statistics(features.named("train_x")(train, use_b=use_b)),
    )


def test_blessed_model_is_registered_and_promoted(workspace: mloop.Workspace) -> None:
    result = workspace.run(training)
    registered = result.load("register_model")
    assert (
        registered["version"] == 1
        and registered["status"] == "registered"
        and registered["alias"] == "production"
    )
    version = workspace.model_version("clf@production")
    assert version.run_id == result.run.id and version.metrics["accuracy"] > 0.8
    assert list(version.signature["inputs"]["columns"]) == ["a", "b"]  # model order, label excluded
    assert version.signature["output"] == {"task": "classification", "label": "y", "classes": [0, 1]}
    stats = workspace.load_artifact(version.signature["training_statistics"])
    assert isinstance(stats, mloop.Statistics) and stats.rows == 1000
    # the version points at the artifact the training step wrote: lineage runs back to it
    assert version.artifact_id == result.outputs["fit"]["output"].id
    model = workspace.load_model("clf:1")
    assert isinstance(model, LogisticRegression)


def test_worse_candidate_is_rejected_and_never_aliased(workspace: mloop.Workspace) -> None:
    workspace.run(training)
    result = workspace.run(training, use_b=False)  # drops a useful feature: worse than production
    registered = result.load("register_model")
    assert registered["status"] == "rejected" and registered["alias"] is None
    assert any("vs production" in reason for reason in registered["reasons"])
    verdict = result.load("validate_model")
    assert not verdict.blessed and verdict.baseline_version == 1
    assert workspace.model_version("clf@production").version == 1
    rejected = workspace.model_version("clf:2")
    assert rejected.status == mloop.ModelStatus.REJECTED
    with pytest.raises(ConflictError, match="rejected by model validation"):
        workspace.promote("clf", 2)
    with pytest.raises(ParameterError, match="needs a reason"):
        workspace.promote("clf", 2, force=True)
    event = workspace.promote("clf", 2, force=True, reason="audited by hand")
    assert (event.from_version, event.to_version, event.reason) == (1, 2, "audited by hand")
    assert workspace.rollback("clf", reason="back").to_version == 1


def test_validate_model_reruns_when_production_moves(workspace: mloop.Workspace) -> None:
    workspace.run(training)
    again = workspace.run(training)
    assert again.step("validate_model").status == mloop.StepStatus.SUCCEEDED  # production changed: v1
    third = workspace.run(training)
    assert third.step("validate_model").status == mloop.StepStatus.CACHED
    assert third.load("register_model")["version"] == 1  # idempotent: the same bytes, the same version


def test_tampered_model_is_refused(workspace: mloop.Workspace) -> None:
    workspace.run(training)
    version = workspace.model_version("clf@production")
    art = workspace.metadata.get_artifact(version.artifact_id)
    Path(art.uri).write_bytes(Path(art.uri).read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ArtifactCorruptedError, match="corrupted"):
        workspace.load_model("clf@production")


def test_register_directly_and_bad_references(workspace: mloop.Workspace) -> None:
    model = LogisticRegression().fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    v1 = workspace.register_model("direct", model, metrics={"accuracy": 1.0}, tags={"owner": "me"})
    assert v1.version == 1 and workspace.load_model("direct").coef_.shape == (1, 1)
    for ref, error in [
        ("direct@production", NotFoundError),
        ("direct:3", NotFoundError),
        ("nope", NotFoundError),
        ("direct:0", ParameterError),
        ("@x", ParameterError),
    ]:
        with pytest.raises(error):
            workspace.model_version(ref)


def test_register_model_is_idempotent_on_identical_bytes(workspace: mloop.Workspace) -> None:
    model = LogisticRegression().fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    v1 = workspace.register_model("same", model, metrics={"accuracy": 1.0})
    again = workspace.register_model("same", model, metrics={"accuracy": 0.5})
    assert (again.version, again.id, again.metrics) == (1, v1.id, {"accuracy": 1.0})
    other = LogisticRegression(C=0.5).fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    assert workspace.register_model("same", other).version == 2
    assert [v.version for v in workspace.registry.versions("same")] == [1, 2]
    assert workspace.register_model("same-too", model).version == 1  # per model name


def test_corrupted_production_model_is_named_as_corrupted(workspace: mloop.Workspace) -> None:
    model = LogisticRegression().fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    v1 = workspace.register_model("churn", model)
    workspace.promote("churn", v1.version)
    art = workspace.metadata.get_artifact(v1.artifact_id)
    Path(art.uri).write_bytes(b"x" * art.size)
    with pytest.raises(ArtifactCorruptedError, match=r"model churn v1 \(churn@production\).*corrupted"):
        workspace.load_model("churn@production")


@pytest.mark.parametrize("name", [".", "..", "../up", "a/b", "-x", "_x", ".hidden", "x" * 129, "", "é"])
def test_model_names_follow_the_one_grammar(workspace: mloop.Workspace, name: str) -> None:
    model = LogisticRegression().fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    with pytest.raises(ParameterError, match="letters, digits"):
        workspace.register_model(name, model)
    with pytest.raises(ParameterError, match="letters, digits"):
        workspace.registry.register(
            name, artifact_id="x", run_id=None, signature={}, metrics={}, tags={},
            status=mloop.ModelStatus.REGISTERED, who="me",
        )  # fmt: skip
    assert workspace.registry.models() == []


def test_valid_names_are_accepted(workspace: mloop.Workspace) -> None:
    model = LogisticRegression().fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    for name in ("a", "churn-model_v2.1", "9lives", "x" * 128):
        assert workspace.register_model(name, model).version == 1


@pytest.mark.parametrize("inputs", [{"a": "float64", "b": "float64"}, {"columns": {}}, "a,b"])
def test_a_signature_whose_inputs_are_no_schema_is_refused_at_registration(
    workspace: mloop.Workspace, inputs: object
) -> None:
    """It was accepted, and every service that loaded the version crashed on it."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit([[0.0, 1.0], [1.0, 0.0]], [0, 1])
    with pytest.raises(mloop.ParameterError, match="signature 'inputs' must be a schema document") as info:
        workspace.register_model("sig", model, signature={"inputs": inputs})
    assert info.value.field == "signature"
