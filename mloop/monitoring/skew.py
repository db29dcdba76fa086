"""Training–serving skew: what the service was asked vs what the model was trained on."""

from __future__ import annotations

from pathlib import Path

from mloop.errors import DataError
from mloop.monitoring.log import read_log
from mloop.validation.drift import DriftReport, training_serving_skew
from mloop.validation.stats import Statistics, compute_statistics
from mloop.workspace import Workspace

__all__ = ["logged_input_statistics", "serving_skew"]


def logged_input_statistics(log_root: Path, model: str, version: int | None = None) -> Statistics:
    """Statistics of the inputs the service logged (optionally for one version)."""
    table = read_log(log_root, model)
    if table.num_rows == 0:
        raise DataError(f"the prediction log of {model!r} under {log_root} is empty", field="model")
    frame = table.to_pandas()
    frame = frame[frame["role"] != "shadow"]  # shadow rows repeat live inputs
    if version is not None:
        frame = frame[frame["version"] == version]
    inputs = frame[[c for c in frame.columns if c.startswith("input.")]]
    return compute_statistics(inputs.rename(columns=lambda c: c.removeprefix("input."))).with_source(
        f"prediction log of {model}" + (f" v{version}" if version is not None else "")
    )


def serving_skew(workspace: Workspace, ref: str, log_root: Path | None = None) -> DriftReport:
    """Compare the training statistics recorded with a model version to its logged serving inputs."""
    version = workspace.model_version(ref)
    artifact = version.signature.get("training_statistics")
    if not artifact:
        raise DataError(
            f"{version.name} v{version.version} has no training statistics in its signature", field="model"
        )
    training: Statistics = workspace.load_artifact(artifact)
    # both sides say what they are, whatever the training data was read from (a file, a frame, or the
    # prediction log itself for a retrained version: "prediction log vs prediction log" told nothing)
    label = f"{version.name} v{version.version}"
    origin = "" if training.source.startswith("<") or not training.source else f", from {training.source}"
    training = training.with_source(f"training data of {label}{origin}")
    root = log_root or workspace.prediction_log_dir
    serving = logged_input_statistics(root, version.name, version.version)
    return training_serving_skew(training, serving.with_source(f"inputs served to {label}"))
