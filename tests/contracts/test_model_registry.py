"""The model registry contract, run against SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mloop.entities import ModelStatus
from mloop.errors import ConflictError, NotFoundError, ParameterError
from mloop.stores.base import NewArtifact
from mloop.stores.sql.metadata import SqlMetadataStore
from mloop.stores.sql.registry import SqlModelRegistry


@pytest.fixture
def stores(metadata_url: str) -> Iterator[tuple[SqlMetadataStore, SqlModelRegistry]]:
    meta = SqlMetadataStore.from_url(metadata_url)
    yield meta, SqlModelRegistry(meta.engine)
    meta.close()


def register(
    stores: tuple[SqlMetadataStore, SqlModelRegistry], name: str = "churn", n: int = 1, **kw: object
):
    meta, reg = stores
    art = meta.add_artifact(NewArtifact(f"{n:064x}", "joblib", "sklearn.X", 10, f"/a/{n}"))
    options = {
        "artifact_id": art.id,
        "run_id": None,
        "signature": {"inputs": {}},
        "metrics": {"acc": 0.9},
        "tags": {"team": "x"},
        "status": ModelStatus.REGISTERED,
        "who": "alice",
    } | kw
    return reg.register(name, **options)


def test_versions_are_numbered_per_model(stores) -> None:
    a1, a2, b1 = register(stores, "a", 1), register(stores, "a", 2), register(stores, "b", 3)
    assert (a1.version, a2.version, b1.version) == (1, 2, 1)
    _, reg = stores
    got = reg.get("a", version=2)
    assert (
        got.id == a2.id
        and got.metrics == {"acc": 0.9}
        and got.tags == {"team": "x"}
        and got.created_by == "alice"
    )
    assert reg.get("a").version == 2  # newest
    assert [m.name for m in reg.models()] == ["a", "b"]
    assert [v.version for v in reg.versions("a")] == [1, 2]


def test_alias_moves_are_recorded_and_roll_back_in_order(stores) -> None:
    for n in (1, 2, 3):
        register(stores, n=n)
    _, reg = stores
    reg.set_alias("churn", "production", 1, who="alice", reason="first")
    reg.set_alias("churn", "production", 2, who="bob", reason="better")
    reg.set_alias("churn", "production", 3, who="bob", reason="even better")
    assert reg.get("churn", alias="production").version == 3
    assert reg.get("churn", version=3).aliases == ("production",)
    back = reg.rollback("churn", "production", who="carol", reason="v3 broke")
    assert (back.action, back.from_version, back.to_version) == ("rollback", 3, 2)
    assert reg.rollback("churn", "production", who="carol", reason="again").to_version == 1
    with pytest.raises(ConflictError, match="no earlier holder"):
        reg.rollback("churn", "production", who="carol", reason="again")
    history = reg.history("churn", "production")
    assert [(e.action, e.from_version, e.to_version, e.who) for e in history] == [
        ("promote", None, 1, "alice"),
        ("promote", 1, 2, "bob"),
        ("promote", 2, 3, "bob"),
        ("rollback", 3, 2, "carol"),
        ("rollback", 2, 1, "carol"),
    ]
    assert all(e.at.tzinfo is not None for e in history)


def test_a_repeated_promotion_records_nothing_and_rollback_still_goes_back(stores) -> None:
    """An automated promote run twice recorded v2 → v2, and the next rollback then 'went back' to v2."""
    for n in (1, 2):
        register(stores, n=n)
    _, reg = stores
    reg.set_alias("churn", "production", 1, who="a", reason="first")
    reg.set_alias("churn", "production", 2, who="a", reason="better")
    again = reg.set_alias("churn", "production", 2, who="a", reason="the same job, run twice")
    assert (again.from_version, again.to_version) == (2, 2)
    assert len(reg.history("churn", "production")) == 2
    back = reg.rollback("churn", "production", who="a", reason="incident")
    assert (back.from_version, back.to_version) == (2, 1)
    assert reg.get("churn", alias="production").version == 1


def test_remove_alias_and_roll_it_back(stores) -> None:
    register(stores, n=1)
    _, reg = stores
    reg.set_alias("churn", "canary", 1, who="a", reason="try")
    reg.remove_alias("churn", "canary", who="a", reason="bad canary")
    with pytest.raises(NotFoundError, match="no alias 'canary'"):
        reg.get("churn", alias="canary")
    assert reg.rollback("churn", "canary", who="a", reason="undo").to_version == 1


def test_aliases_say_which_version_holds_each_alias_as_versions_do(stores) -> None:
    for n in (1, 2, 3):
        register(stores, n=n)
    _, reg = stores
    assert reg.aliases("churn") == {} and reg.aliases("unknown") == {}
    reg.set_alias("churn", "production", 1, who="a", reason="first")
    reg.set_alias("churn", "canary", 3, who="a", reason="try")
    reg.set_alias("churn", "staging", 3, who="a", reason="try")
    assert reg.aliases("churn") == {"production": 1, "canary": 3, "staging": 3}
    held = {v.version: v.aliases for v in reg.versions("churn")}
    assert held == {1: ("production",), 2: (), 3: ("canary", "staging")}
    reg.remove_alias("churn", "canary", who="a", reason="done")
    assert reg.aliases("churn") == {"production": 1, "staging": 3}


def test_a_refusal_is_recorded_with_its_evidence_and_moves_nothing(stores) -> None:
    for n in (1, 2, 3):
        register(stores, n=n)
    _, reg = stores
    reg.set_alias("churn", "production", 1, who="a", reason="first")
    reg.set_alias("churn", "canary", 2, who="a", reason="try v2")
    evidence = {"load_test": {"p99_ms": 812.5, "error_rate": 0.0, "requests": 200, "passed": False}}
    refused = reg.refuse("churn", "canary", 3, who="rollout", reason="p99 over budget", evidence=evidence)
    assert (refused.action, refused.from_version, refused.to_version) == ("refuse", 2, 3)
    assert refused.evidence == evidence
    assert reg.get("churn", alias="canary").version == 2  # the alias did not move
    assert reg.get("churn", alias="production").version == 1
    last = reg.history("churn", "canary")[-1]
    assert (last.action, last.to_version, last.who, last.reason) == (
        "refuse",
        3,
        "rollout",
        "p99 over budget",
    )
    assert last.evidence == evidence and last.at.tzinfo is not None
    assert reg.history("churn", "production")[0].evidence is None  # moves carry no evidence by default
    # a refusal is no holder: rolling v1 back gives the canary to v2, not to the refused v3
    reg.set_alias("churn", "canary", 1, who="a", reason="try v1")
    assert reg.rollback("churn", "canary", who="a", reason="undo").to_version == 2
    with pytest.raises(NotFoundError, match=r"has no version 9"):
        reg.refuse("churn", "canary", 9, who="a", reason="x")
    with pytest.raises(NotFoundError, match="model 'nope' not found"):
        reg.refuse("nope", "canary", 1, who="a", reason="x")
    with pytest.raises(ParameterError, match="needs a reason"):
        reg.refuse("churn", "canary", 3, who="a", reason=" ")


def test_rejected_versions_need_force_and_a_reason(stores) -> None:
    register(stores, n=1, status=ModelStatus.REJECTED)
    _, reg = stores
    with pytest.raises(ConflictError, match="rejected by model validation"):
        reg.set_alias("churn", "production", 1, who="a", reason="")
    with pytest.raises(ParameterError, match="needs a reason"):
        reg.set_alias("churn", "production", 1, who="a", reason=" ", force=True)
    assert (
        reg.set_alias("churn", "production", 1, who="a", reason="audited by hand", force=True).to_version == 1
    )
    with pytest.raises(NotFoundError, match="no registered"):
        reg.get("churn")


def test_unknown_names(stores) -> None:
    register(stores, n=1)
    _, reg = stores
    with pytest.raises(NotFoundError, match="model 'nope' not found"):
        reg.get("nope")
    with pytest.raises(NotFoundError, match=r"has no version 9 \(versions 1-1\)"):
        reg.get("churn", version=9)
    with pytest.raises(NotFoundError, match=r"no alias 'staging' \(aliases: none\)"):
        reg.get("churn", alias="staging")
    with pytest.raises(NotFoundError):
        reg.set_alias("churn", "production", 9, who="a", reason="")
    with pytest.raises(NotFoundError):
        reg.set_alias("nope", "production", 1, who="a", reason="")
    with pytest.raises(NotFoundError, match="no alias"):
        reg.rollback("churn", "production", who="a", reason="")
    with pytest.raises(ParameterError, match="alias 'bad alias!'"):
        reg.set_alias("churn", "bad alias!", 1, who="a", reason="")
    with pytest.raises(NotFoundError, match="model 'nope' not found"):
        reg.history("nope")
    with pytest.raises(NotFoundError, match="model 'nope' not found"):
        reg.versions("nope")
    assert reg.history("churn") == []  # known, never moved: empty, not "not found"


def test_the_versions_a_run_registered_with_their_aliases(stores) -> None:
    meta, reg = stores
    run = meta.create_run("train", params={}, trigger="manual", code_commit="c", code_hash="h").id
    other = meta.create_run("train", params={}, trigger="manual", code_commit="c", code_hash="h").id
    a1 = register(stores, "a", 1, run_id=run)
    register(stores, "a", 2, run_id=other)
    b1 = register(stores, "b", 3, run_id=run)
    reg.set_alias("b", "production", 1, who="alice", reason="first")
    reg.set_alias("b", "canary", 1, who="alice", reason="also")
    found = reg.versions_of_run(run)
    assert [(v.name, v.version, v.id) for v in found] == [("a", 1, a1.id), ("b", 1, b1.id)]
    assert found[0].aliases == () and found[1].aliases == ("canary", "production")
    assert reg.versions_of_run("nope") == []


def test_names_that_differ_only_by_case_are_refused(stores) -> None:
    """``clf@Production`` beside ``clf@production`` (a typo that serves nothing) and a model ``CHURN``
    beside ``churn`` (two models a reader takes for one) were both accepted."""
    register(stores, n=1)
    _, reg = stores
    reg.set_alias("churn", "production", 1, who="a", reason="first")
    with pytest.raises(ParameterError, match="only by case: use 'production'") as info:
        reg.set_alias("churn", "Production", 1, who="a", reason="typo")
    assert info.value.field == "alias"
    with pytest.raises(ParameterError, match="model 'CHURN' differs from model 'churn' only by case"):
        register(stores, "CHURN", n=2)
    assert register(stores, n=1).version == 1  # the name itself is still fine
