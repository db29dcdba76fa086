"""The load-test gate of model CD: before a candidate takes canary traffic it is served on loopback
and replayed recent logged requests; a slow or failing candidate is refused (the numbers in the
alias history and on its run) while production keeps serving, a good one goes to canary."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from commands import mloop_command
from loop_helpers import MODEL, serve_rows, service, stream, train_first

import mloop
from mloop.cicd.gate import LoadTestGate
from mloop.entities import utcnow
from mloop.errors import NotFoundError
from mloop.orchestration.config import RolloutPolicy
from mloop.orchestration.retrain import default_model
from mloop.orchestration.rollout import advance
from tests.cicd.gate_models import SlowClassifier
from tests.serving.serving_helpers import fit, register, training_data

REPO = Path(__file__).resolve().parents[2]
GENEROUS = {"requests": 12, "concurrency": 2, "p99_ms": 60_000, "rounds": 1}  # latency never decides


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[mloop.Workspace]:
    """v1 in production, which has answered 40 logged requests."""
    with mloop.Workspace.open(tmp_path / ".mloop") as w:
        train_first(w, stream(600, seed=1), tmp_path)
        svc = service(w, w.prediction_log_dir)
        serve_rows(svc, stream(40, seed=3), batch=10, label=False)
        svc.stop()
        yield w


def candidate(ws: mloop.Workspace, *, extra_column: bool = False, delay_s: float = 0.0) -> tuple[int, str]:
    """A validated version trained in its own run; ``extra_column``: it needs a feature live traffic
    never sends; ``delay_s``: it answers that much later. Returns (version, run id)."""
    rows = stream(600, seed=2)
    features, y = rows.drop(columns=["y"]), rows["y"]
    signature = ws.model_version(f"{MODEL}:1").signature
    if extra_column:
        features = features.assign(x4=features["x1"] * 2)
        columns = signature["inputs"]["columns"]
        signature = {
            **signature,
            "inputs": {**signature["inputs"], "columns": {**columns, "x4": columns["x1"]}},
        }
    model = default_model(features, "classification").fit(features, y)
    if delay_s:
        model = SlowClassifier(model, delay_s)
        model.classes_ = model.model.classes_
    with ws.start_run("candidate") as run:
        version = ws.register_model(MODEL, model, signature=signature, run_id=run.id)
    return version.version, run.id


def policy(**load_test: object) -> RolloutPolicy:
    return RolloutPolicy(model=MODEL, canary_fraction=0.5, load_test={**GENEROUS, **load_test})


def test_without_logged_requests_it_waits_and_a_disabled_gate_is_skipped(
    ws: mloop.Workspace, tmp_path: Path
) -> None:
    version, _ = candidate(ws)
    waiting = advance(ws, policy(), utcnow(), log_dir=tmp_path / "no-log", gate=LoadTestGate())
    assert waiting.action == "wait" and "waits for logged requests" in waiting.reason
    assert [e.action for e in ws.registry.history(MODEL, "canary")] == []
    skipped = advance(ws, policy(enabled=False), utcnow(), log_dir=tmp_path / "no-log", gate=LoadTestGate())
    assert (skipped.action, skipped.version) == ("canary", version) and "load test" not in skipped.reason


def test_a_candidate_that_fails_the_recorded_requests_is_refused_with_the_numbers(
    ws: mloop.Workspace,
) -> None:
    version, run_id = candidate(ws, extra_column=True)
    decision = advance(ws, policy(), utcnow(), gate=LoadTestGate())
    assert (decision.action, decision.version) == ("refuse", version)
    assert "error rate 100.0% exceeds 1.0% (first: HTTP 4" in decision.reason
    # at most one request per client was in flight when the first failure spent the error budget
    assert "request(s) not sent once the error budget was spent" in decision.reason
    [event] = ws.registry.history(MODEL, "canary")
    assert (event.action, event.from_version, event.to_version) == ("refuse", None, version)
    assert event.reason == decision.reason
    numbers = event.evidence["load_test"]
    assert numbers["requests"] == 12 and numbers["concurrency"] == 2 and numbers["error_rate"] == 1.0
    assert numbers["passed"] is False and "x4" in numbers["errors"][0]
    with pytest.raises(NotFoundError):
        ws.model_version(f"{MODEL}@canary")
    metrics = {m.key: m.value for m in ws.metadata.get_metrics(run_id)}
    assert metrics["load_test.error_rate"] == 1.0 and metrics["load_test.passed"] == 0.0
    assert metrics["load_test.requests"] == 12.0
    # production keeps serving, alone; the refused version is never tried again
    svc = service(ws, ws.prediction_log_dir, canary_fraction=0.5)
    answers = serve_rows(svc, stream(20, seed=4), batch=5, label=False)
    svc.stop()
    assert {a["version"] for a in answers} == {1}
    assert advance(ws, policy(), utcnow(), gate=LoadTestGate()).action == "none"


def test_a_candidate_whose_service_cannot_start_fails_the_gate_naming_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the served process cannot import the model's class
    with mloop.Workspace.open(tmp_path / "ws") as w:
        df = training_data()
        inner = fit(df, ["a", "b"])
        model = SlowClassifier(inner, 0.0)
        model.classes_ = inner.classes_
        register(w, model, df, ["a", "b"])
        gate = LoadTestGate()
        report = gate(
            w, "clf:1", [{"a": 1.0, "b": 2.0}] * 3, concurrency=1, p99_ms=1e6, max_error_rate=0.0, rounds=1
        )
    assert not report.passed and report.rounds == 0 and report.error_rate == 1.0
    assert report.reasons[0].startswith("the candidate's service exited with code")
    assert "cannot read a joblib artifact: No module named 'tests'" in report.reasons[0]


@pytest.mark.slow  # two candidate services, one answering 0.3 s late
def test_a_slow_candidate_is_refused_after_re_measuring_and_a_good_one_goes_to_canary(
    ws: mloop.Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    slow, _ = candidate(ws, delay_s=0.3)
    decision = advance(ws, policy(p99_ms=100, requests=6, rounds=2), utcnow(), gate=LoadTestGate())
    assert (decision.action, decision.version) == ("refuse", slow)
    assert "p99 latency" in decision.reason and "exceeds the 100 ms budget" in decision.reason
    numbers = ws.registry.history(MODEL, "canary")[-1].evidence["load_test"]
    assert numbers["rounds"] == 2 and all(p99 >= 300 for p99 in numbers["p99_by_round_ms"])
    assert numbers["error_rate"] == 0.0  # it answered every request, validly: only too late
    good, run_id = candidate(ws)
    decision = advance(ws, policy(), utcnow(), gate=LoadTestGate())
    assert (decision.action, decision.version) == ("canary", good)
    assert "load test passed: p99" in decision.reason and decision.evidence["load_test"]["passed"]
    assert ws.model_version(f"{MODEL}@canary").version == good
    assert ws.registry.history(MODEL, "canary")[-1].reason == decision.reason
    metrics = {m.key: m.value for m in ws.metadata.get_metrics(run_id)}
    assert metrics["load_test.passed"] == 1.0 and metrics["load_test.error_rate"] == 0.0


@pytest.mark.slow  # the scheduler daemon's process starts the candidate's service twice
def test_the_scheduler_gates_candidates_end_to_end(ws: mloop.Workspace, tmp_path: Path) -> None:
    (tmp_path / "mloop.toml").write_text(
        f"""
[[rollout]]
model = "{MODEL}"
canary_fraction = 0.5

[rollout.load_test]
requests = 10
concurrency = 2
p99_ms = 60000
"""
    )

    def scheduler_pass() -> str:
        done = subprocess.run(
            [*mloop_command(), "scheduler", "run", "--once", "--workspace", str(tmp_path / ".mloop")],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stderr

    bad, _ = candidate(ws, extra_column=True)
    log = scheduler_pass()
    assert f"rollout {MODEL}: refuse v{bad}" in log and "error rate 100.0%" in log
    [refused] = ws.registry.history(MODEL, "canary")
    assert refused.action == "refuse" and refused.evidence["load_test"]["requests"] == 10
    good, _ = candidate(ws)
    log = scheduler_pass()
    assert f"rollout {MODEL}: canary v{good}" in log
    assert ws.model_version(f"{MODEL}@canary").version == good
    assert ws.model_version(f"{MODEL}@production").version == 1
    history = [(e.action, e.to_version) for e in ws.registry.history(MODEL, "canary")]
    assert history == [("refuse", bad), ("promote", good)]
