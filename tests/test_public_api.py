"""The public surface is pinned: changing it is a deliberate act."""

import mloop


def test_public_api_is_pinned() -> None:
    assert sorted(mloop.__all__) == sorted([
        "ArtifactRef", "Event", "LineageGraph", "Metric", "Pipeline", "Run", "RunQuery", "RunResult",
        "RunStatus", "Step", "StepRun", "StepStatus", "TrackingRun", "Workspace", "__version__",
        "log_metric", "log_metrics", "log_param", "log_params", "pipeline", "step",
    ])  # fmt: skip
    for name in mloop.__all__:
        assert hasattr(mloop, name), name


def test_every_error_maps_to_a_status_and_exit_code() -> None:
    import inspect

    from mloop import errors

    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.MloopError)]
    assert len(classes) == len(errors.__all__)
    for cls in classes:
        assert 400 <= cls.http_status < 600 and cls.exit_code in (1, 2) and cls.code
