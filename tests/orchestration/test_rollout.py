"""Rollout: validated versions go to canary; live metrics promote or roll them back, with reasons."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from loop_helpers import MODEL, serve_rows, service, stream, train_first

import mloop
from mloop.entities import ModelStatus, utcnow
from mloop.errors import NotFoundError
from mloop.orchestration.config import RolloutPolicy
from mloop.orchestration.rollout import advance
from mloop.steps.retrain import default_model

AUTO = RolloutPolicy(model=MODEL, canary_fraction=0.5, min_labelled=60, budget="1h")


def register(
    ws: mloop.Workspace, rows, *, flip: bool = False, status: ModelStatus = ModelStatus.REGISTERED
) -> int:
    """A version trained outside the pipeline (e.g. validated on data unlike live traffic)."""
    features, y = rows.drop(columns=["y"]), rows["y"]
    model = default_model(features, "classification").fit(features, 1 - y if flip else y)
    v1 = ws.model_version(f"{MODEL}:1")
    return ws.register_model(MODEL, model, signature=v1.signature, metrics=v1.metrics, status=status).version


@pytest.fixture
def ws(tmp_path: Path):
    with mloop.Workspace.open(tmp_path / ".mloop") as w:
        train_first(w, stream(600, seed=1), tmp_path)
        yield w


def test_an_underperforming_canary_is_rolled_back_with_the_numbers(
    ws: mloop.Workspace, tmp_path: Path
) -> None:
    bad = register(ws, stream(600, seed=2), flip=True)
    decision = advance(ws, AUTO, utcnow(), log_dir=tmp_path / "log")
    assert (decision.action, decision.version) == ("canary", bad)
    svc = service(ws, tmp_path / "log", canary_fraction=0.5)
    assert advance(ws, AUTO, utcnow(), log_dir=tmp_path / "log").action == "wait"  # no evidence yet
    serve_rows(svc, stream(400, seed=3), batch=10)
    svc.stop()
    decision = advance(ws, AUTO, utcnow(), log_dir=tmp_path / "log")
    assert decision.action == "rollback" and "rolled back: accuracy" in decision.reason
    assert decision.evidence["canary"]["rows"] >= 60 and decision.evidence["production"]["rows"] >= 60
    with pytest.raises(NotFoundError):
        ws.model_version(f"{MODEL}@canary")
    last = ws.registry.history(MODEL, "canary")[-1]
    assert last.action == "remove" and last.reason == decision.reason
    assert ws.model_version(f"{MODEL}@production").version == 1
    assert advance(ws, AUTO, utcnow(), log_dir=tmp_path / "log").action == "none"  # never retried


def test_a_better_canary_is_promoted_and_the_old_one_kept_for_rollback(
    ws: mloop.Workspace, tmp_path: Path
) -> None:
    good = register(ws, stream(3000, drift_at=0, seed=4))  # trained on the concept live traffic follows
    assert advance(ws, AUTO, utcnow(), log_dir=tmp_path / "log").action == "canary"
    svc = service(ws, tmp_path / "log", canary_fraction=0.5)
    answers = serve_rows(svc, stream(400, drift_at=0, seed=5), batch=10)
    svc.stop()
    assert {a["version"] for a in answers} == {1, good}  # both served
    decision = advance(ws, AUTO, utcnow(), log_dir=tmp_path / "log")
    assert decision.action == "promote", decision.reason
    assert ws.model_version(f"{MODEL}@production").version == good
    assert "promoted" in ws.registry.history(MODEL, "production")[-1].reason
    ws.rollback(MODEL, reason="second thoughts")
    assert ws.model_version(f"{MODEL}@production").version == 1


def test_rejected_versions_never_get_traffic_and_manual_mode_waits(
    ws: mloop.Workspace, tmp_path: Path
) -> None:
    register(ws, stream(600, seed=6), status=ModelStatus.REJECTED)
    assert advance(ws, AUTO, utcnow(), log_dir=tmp_path / "log").action == "none"
    good = register(ws, stream(600, seed=7))
    manual = AUTO.model_copy(update={"mode": "manual"})
    decision = advance(ws, manual, utcnow(), log_dir=tmp_path / "log")
    assert (decision.action, decision.version) == ("wait", good) and "manual" in decision.reason
    with pytest.raises(NotFoundError):
        ws.model_version(f"{MODEL}@canary")


def test_a_canary_without_evidence_is_rolled_back_when_the_budget_runs_out(
    ws: mloop.Workspace, tmp_path: Path
) -> None:
    register(ws, stream(600, seed=8))
    short = AUTO.model_copy(update={"budget": "10m"})
    assert advance(ws, short, utcnow(), log_dir=tmp_path / "log").action == "canary"
    assert advance(ws, short, utcnow(), log_dir=tmp_path / "log").action == "wait"
    decision = advance(ws, short, utcnow() + timedelta(minutes=11), log_dir=tmp_path / "log")
    assert decision.action == "rollback" and "no evidence" in decision.reason


def test_a_known_worse_canary_is_rolled_back_early_and_a_slightly_worse_one_is_not_promoted(
    ws: mloop.Workspace, tmp_path: Path
) -> None:
    """A canary far worse is rolled back once ``min_labelled_at_budget`` labels show it, long before
    ``min_labelled``; at ``min_labelled`` the estimates decide: trailing production is no promotion."""
    policy = AUTO.model_copy(update={"min_labelled": 10_000, "min_labelled_at_budget": 30, "z": 3.0})
    bad = register(ws, stream(600, seed=2), flip=True)
    assert advance(ws, policy, utcnow(), log_dir=tmp_path / "log").action == "canary"
    svc = service(ws, tmp_path / "log", canary_fraction=0.5)
    serve_rows(svc, stream(200, seed=3), batch=10)
    svc.stop()
    decision = advance(ws, policy, utcnow(), log_dir=tmp_path / "log")
    assert (decision.action, decision.version) == ("rollback", bad), decision.reason
    assert decision.evidence["canary"]["rows"] < 10_000
    # same-concept model trained on a tenth of the rows: worse on the estimate, not significantly
    weaker = register(ws, stream(60, seed=9))
    even = AUTO.model_copy(update={"min_labelled": 150, "max_degradation": 0.0})
    assert advance(ws, even, utcnow(), log_dir=tmp_path / "log").action == "canary"
    svc = service(ws, tmp_path / "log", canary_fraction=0.5)
    serve_rows(svc, stream(600, seed=10), batch=10)
    svc.stop()
    decision = advance(ws, even, utcnow(), log_dir=tmp_path / "log")
    c, p = decision.evidence["canary"]["accuracy"], decision.evidence["production"]["accuracy"]
    assert decision.version == weaker and decision.action == ("promote" if c >= p else "rollback")


def test_a_paired_judgement_uses_every_labelled_row_and_decides_clear_cases_early(
    ws: mloop.Workspace, tmp_path: Path
) -> None:
    """``judge = "paired"``: both versions re-predict every labelled row since the canary started
    (whichever version answered it), so a canary on a fifth of the traffic is judged on all of it; a
    difference beyond ``z`` standard errors decides before ``min_labelled``."""
    paired = AUTO.model_copy(
        update={
            "judge": "paired",
            "canary_fraction": 0.2,
            "min_labelled": 10_000,
            "min_labelled_at_budget": 30,
        }
    )
    bad = register(ws, stream(600, seed=2), flip=True)
    assert advance(ws, paired, utcnow(), log_dir=tmp_path / "log").action == "canary"
    svc = service(ws, tmp_path / "log", canary_fraction=0.2)
    answers = serve_rows(svc, stream(200, seed=3), batch=10)
    svc.stop()
    served_by_canary = sum(len(a["predictions"]) for a in answers if a["version"] == bad)
    decision = advance(ws, paired, utcnow(), log_dir=tmp_path / "log")
    assert (decision.action, decision.version) == ("rollback", bad), decision.reason
    assert decision.evidence["paired"]["rows"] == 200 > served_by_canary
    assert decision.evidence["paired"]["loss_difference"] > 0 and "standard errors" in decision.reason
    # a version trained on the concept live traffic now follows: clearly better on the same rows
    good = register(ws, stream(3000, drift_at=0, seed=4))
    assert advance(ws, paired, utcnow(), log_dir=tmp_path / "log").action == "canary"
    svc = service(ws, tmp_path / "log", canary_fraction=0.2)
    serve_rows(svc, stream(200, drift_at=0, seed=5), batch=10)
    svc.stop()
    decision = advance(ws, paired, utcnow(), log_dir=tmp_path / "log")
    assert (decision.action, decision.version) == ("promote", good), decision.reason
    c, p = decision.evidence["canary"]["accuracy"], decision.evidence["production"]["accuracy"]
    assert c > p and decision.evidence["canary"]["rows"] == decision.evidence["production"]["rows"] == 200
    assert ws.model_version(f"{MODEL}@production").version == good
