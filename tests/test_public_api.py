"""The public surface is pinned: changing it is a deliberate act."""

import mloop


def test_public_api_is_pinned() -> None:
    expected = [
        "AliasEvent",
        "BacktestReport",
        "backtest",
        "LoopConfig",
        "RolloutPolicy",
        "TriggerSpec",
        "MonitorReport",
        "monitor",
        "Scheduler",
        "Anomalies",
        "Anomaly",
        "ArtifactRef",
        "DriftReport",
        "Evaluation",
        "Event",
        "FeatureDrift",
        "InfraReport",
        "LineageGraph",
        "Metric",
        "Model",
        "ModelStatus",
        "ModelVersion",
        "Pipeline",
        "Run",
        "RunQuery",
        "RunResult",
        "RunStatus",
        "Schema",
        "Statistics",
        "Step",
        "StepRun",
        "StepStatus",
        "Thresholds",
        "TrackingRun",
        "Verdict",
        "Workspace",
        "__version__",
        "compute_statistics",
        "detect_drift",
        "evaluate_model",
        "infer_schema",
        "log_metric",
        "log_metrics",
        "log_param",
        "log_params",
        "pipeline",
        "retrain",  # the built-in retraining pipeline
        "step",
        "steps",
        "training_serving_skew",
        "validate_evaluation",
        "validate_schema",
        # the exception tree, so users can catch what mloop raises
        "MloopError",
        "BodyTooLargeError",
        "NotFiniteError",
        "ReadTimeoutError",
        "UnsupportedEncodingError",
        "UnsupportedMediaTypeError",
        "BusyError",
        "ArtifactCorruptedError",
        "ArtifactNotFoundError",
        "ConfigurationError",
        "ConflictError",
        "DataError",
        "InputError",
        "MetadataStoreError",
        "NotFoundError",
        "ParameterError",
        "PipelineDefinitionError",
        "PipelineLoadError",
        "SchemaSkewError",
        "SchemaVersionError",
        "SerializationError",
        "StepFailedError",
        "StoreUnavailableError",
        "StoreUnreachableError",
        "WorkspaceGoneError",
        "UnauthorizedError",
        "ForbiddenError",
        # the team server's client
        "Client",
    ]
    assert sorted(mloop.__all__) == sorted(expected)
    for name in mloop.__all__:  # every public name resolves (the lazy ones from the TYPE_CHECKING block)
        assert getattr(mloop, name) is not None, name
    assert set(mloop.errors.__all__) <= set(mloop.__all__)
    for name in mloop.__all__:
        assert hasattr(mloop, name), name


def test_validation_names_load_lazily() -> None:
    import subprocess
    import sys

    code = (  # and scipy only when a drift test actually runs (~0.4 s of every service start-up)
        "import sys, mloop; assert 'mloop.validation.drift' not in sys.modules; "
        "mloop.detect_drift; assert 'mloop.validation.drift' in sys.modules; "
        "assert 'scipy.stats' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_error_maps_to_a_status_and_exit_code() -> None:
    import inspect

    from mloop import errors

    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.MloopError)]
    assert len(classes) == len(errors.__all__)
    for cls in classes:
        assert 400 <= cls.http_status < 600 and cls.exit_code in (1, 2) and cls.code
