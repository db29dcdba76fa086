"""The loop's default policy for a backtest, and a user's policy pointed at a backtest's windows."""

from __future__ import annotations

from mloop.errors import ParameterError
from mloop.orchestration import changepoint
from mloop.orchestration.config import LoopConfig, RolloutPolicy, TriggerSpec
from mloop.validation.model import LOWER_IS_BETTER

__all__ = ["MODEL", "RETRAIN", "adapt", "default_loop_config"]

MODEL = "backtest"
RETRAIN = "mloop.steps.retrain:retrain"


def default_loop_config(
    task: str,
    target: str,
    window_rows: int,
    initial_rows: int,
    model: str = MODEL,
    metric: str | None = None,
) -> LoopConfig:
    """The default policy (bench/RESULTS.md has the figures it was tuned to, and held out on):

    - **when**: the production version's live loss rises at a change point (ADWIN, river) that
      ``min_rows`` labelled rows have followed, or a window of half the replay's window falls below
      its own hold-out score beyond noise, or its live loss rises steadily (a least-squares trend
      beyond 3 standard errors, for drift too slow for one change point to stand out), or, once a
      version has degraded, when the version in production has served three quarters of the median
      life of the versions that degraded (``cadence``: drift that never stops is kept up with on
      schedule rather than waited for; a scheduled candidate that does not beat production ends it
      until the next version degrades), or a challenger (the version's own recipe refitted on the
      newest ``initial_rows`` logged rows before a window) beats it on that window beyond 3 standard
      errors, paired (drift that never stops makes a fresher model better before the version in
      production degrades enough for any test of it alone to see). The baseline
      belongs to the version in production, and that version was validated on the newest rows of the
      regime it was trained on;
    - **on what**: the rows since the change point (estimated where the loss rose most when no
      detector placed it; nothing fires until ``min_rows`` = half a window of rows followed it), or,
      when it scores better on the newest held-out rows, those plus the rows before them up to as many
      as the first model had; once validated, the model is fitted again with its held-out rows (the
      newest ones) before it is registered; a run that trained on few rows of a regime and was
      refused is retried once the regime has three times as many;
    - **rollout**: a validated candidate (checked against production on the newest rows) serves 80 %
      of the traffic; both versions re-predict every labelled row since (a paired comparison on all
      the traffic, so the share decides what callers get, not how fast evidence comes: the validated
      candidate is the better bet, and a clearly worse one is rolled back after 30 rows): a
      difference beyond 3 standard errors decides at once, otherwise half a window of rows does,
      promoting the candidate only if its metric is no worse than production's.
    Latencies are recorded but never decide in a replay (``enforce_latency=False``)."""
    metric = metric or ("accuracy" if task == "classification" else "mae")
    lower = metric in LOWER_IS_BETTER
    min_rows = max(50, min(initial_rows, window_rows) // 2)
    common = {
        "pipeline": RETRAIN,
        "model": model,
        "window": max(25, window_rows // 2),
        "params": {
            "model_name": model,
            "target": target,
            "max_rows": initial_rows,
            "enforce_latency": False,
            "compare_wider": True,
            "refit": True,
        },
    }
    return LoopConfig(
        triggers=[
            TriggerSpec(
                name="degradation",
                kind="degradation",
                metric=metric,
                margin=0.05 if lower else 0.02,
                z=2.5,
                min_labelled=min(100, max(1, window_rows // 4)),
                detector="adwin" if changepoint.available() else "none",
                min_rows=min_rows,
                trend_z=3.0,
                challenger_z=3.0,
                cadence=0.75,
                **common,
            ),
        ],
        rollout=[
            RolloutPolicy(
                model=model,
                canary_fraction=0.8,
                metric=metric,
                judge="paired",
                min_labelled=max(50, min(400, window_rows // 2)),
                min_labelled_at_budget=min(30, max(1, window_rows // 10)),
                z=3.0,
                budget="30d",
                max_degradation=0.0,
            )
        ],
    )


def adapt(
    config: LoopConfig,
    model: str,
    target: str,
    window_rows: int,
    initial_rows: int,
    *,
    task: str = "classification",
    metric: str | None = None,
    default_metric: str | None = None,
) -> LoopConfig:
    """A user's triggers and rollout policy, pointed at the backtest's model and windows. ``metric``
    (``--metric``) overrides theirs; a metric they left out is ``default_metric`` (the one chosen
    for the target)."""
    default = metric or default_metric or ("accuracy" if task == "classification" else "mae")
    triggers = []
    for spec in config.triggers:
        if spec.kind not in ("drift", "degradation"):
            continue  # schedules and new files have no meaning on a replayed history
        if metric is not None or "metric" not in spec.model_fields_set:
            spec = spec.model_copy(update={"metric": default})
        params = {
            **spec.params,
            "model_name": model,
            "target": target,
            "max_rows": initial_rows,
            "enforce_latency": False,  # a replay's decisions never depend on the machine's load
        }
        # the backtest's windows replace theirs: a window holds at most its rows' labels
        fitted = {"window": window_rows, "min_labelled": min(spec.min_labelled, window_rows)}
        triggers.append(spec.model_copy(update={"model": model, "params": params, **fitted}))
    rollout = [
        p.model_copy(
            update={"model": model, "mode": "auto"}
            | ({"metric": default} if metric is not None or "metric" not in p.model_fields_set else {})
        )
        for p in config.rollout[:1]
    ]
    if not triggers:
        raise ParameterError(
            "the configuration has no drift or degradation trigger to backtest", field="config"
        )
    return LoopConfig(
        triggers=triggers,
        rollout=rollout
        or default_loop_config(task, target, window_rows, initial_rows, model, metric=default).rollout,
    )
