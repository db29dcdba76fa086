"""The load-test gate of model CD: what ``mloop scheduler run`` hands the rollout policy
(:class:`mloop.orchestration.rollout.CandidateGate`), so that a candidate is served on loopback and
replayed recent logged requests before it takes canary traffic.

A candidate whose service cannot even start (an unloadable model, a missing dependency) fails the
gate with that as the reason, rather than failing the scheduler's pass: it is the candidate that is
broken, not the loop.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from mloop.cicd.loadtest import LoadTestReport, load_test
from mloop.errors import ConfigurationError
from mloop.workspace import Workspace

__all__ = ["LoadTestGate"]


class LoadTestGate:
    """Runs :func:`mloop.cicd.loadtest.load_test` for a rollout (``start_timeout_s``: how long the
    candidate's service may take to become ready)."""

    def __init__(self, *, start_timeout_s: float = 120.0) -> None:
        self.start_timeout_s = start_timeout_s

    def __call__(
        self,
        workspace: Workspace,
        candidate: str,
        requests: Sequence[Mapping[str, Any]],
        *,
        concurrency: int,
        p99_ms: float,
        max_error_rate: float,
        rounds: int,
    ) -> LoadTestReport:
        started = time.perf_counter()
        try:
            return load_test(
                workspace,
                candidate,
                requests,
                concurrency,
                p99_ms,
                max_error_rate,
                rounds=rounds,
                start_timeout_s=self.start_timeout_s,
            )
        except ConfigurationError as exc:  # the candidate's service did not come up
            return LoadTestReport(
                version=candidate,
                requests=len(requests),
                concurrency=concurrency,
                p50_ms=None,
                p99_ms=None,
                error_rate=1.0,
                p99_budget_ms=p99_ms,
                max_error_rate=max_error_rate,
                passed=False,
                seconds=time.perf_counter() - started,
                reasons=[exc.message],
                errors=[exc.message],
                rounds=0,
            )
