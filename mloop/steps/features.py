"""The built-in ``historical_features`` step: point-in-time correct training data inside a pipeline.

The step's cache key includes each view's recorded version and the content digest of its source, so
a re-applied view or a changed source file recomputes; its params record the same, and each source is
recorded as an input of the step's execution (``file``/``directory``/``source`` artifacts, and one
``feature_view`` artifact per view version), so the lineage graph of training data, and of the model
trained on it, reaches the feature-view versions and the source bytes it was built from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from mloop.core.context import log_input, log_metrics, log_params
from mloop.core.serialize import file_artifact
from mloop.core.step import step
from mloop.features.sources import fsspec_protocol
from mloop.steps.context import workspace as step_workspace
from mloop.workspace import Workspace

__all__ = ["historical_features"]


def _manifest(ws: Workspace, features: list[str] | None, service: str | None) -> dict[str, dict[str, Any]]:
    """Per view used: its recorded version, source and the source's content digest and size."""
    store = ws.features
    selection = store.selection(features, service)
    versions = store.versions_of(selection)
    manifest: dict[str, dict[str, Any]] = {}
    for view, names in selection:
        local = isinstance(view.source, str) and fsspec_protocol(view.source) is None
        kind = "source"
        if local:
            path = Path(str(view.source).removeprefix("file://"))
            digest, size, uri = "", 0, str(view.source)
            if path.exists():
                art = file_artifact(path)
                digest, size, uri, kind = art.digest, art.size, art.uri, art.type
        else:
            digest, size, uri = store.source_identity(view)
        manifest[view.name] = {
            "version": versions[view.name],
            "features": list(names),
            "source": str(view.source),
            "uri": uri,
            "kind": kind,
            "digest": digest,
            "size": size,
        }
    return manifest


def _feature_state(ws: Workspace, params: dict[str, Any]) -> str:
    """What the output depends on beyond the inputs: view versions and source bytes."""
    return json.dumps(_manifest(ws, params.get("features"), params.get("service")), sort_keys=True)


@step(external=_feature_state)
def historical_features(
    entities: Path,
    features: list[str] | None = None,
    service: str | None = None,
    timestamp_col: str = "event_timestamp",
) -> pd.DataFrame:
    """Entity rows (a Parquet/CSV file) joined point-in-time with ``features`` or a feature ``service``:
    one row per entity row, in order, with one ``view:feature`` column per feature."""
    from mloop.stores.base import NewArtifact

    ws = step_workspace()
    manifest = _manifest(ws, features, service)
    for view_name, info in manifest.items():
        definition = ws.features.registry.get("view", view_name, info["version"])
        log_input(
            f"feature_view:{view_name}",
            NewArtifact(
                definition.digest, "feature_view", "mloop.features.FeatureView", 0,
                f"mloop:feature-view/{view_name}/v{info['version']}",
            ),
        )  # fmt: skip
        if info["digest"]:
            source = NewArtifact(info["digest"], info["kind"], "pathlib.Path", info["size"], info["uri"])
            log_input(f"source:{view_name}", source)
            info["artifact_id"] = ws.metadata.add_artifact(source).id
    log_params({"feature_views": manifest})
    frame = ws.features.historical(entities, features, service=service, timestamp_col=timestamp_col)
    refs = [c for c in frame.columns if ":" in str(c)]
    log_metrics(
        {"rows": float(len(frame)), "null_share": float(frame[refs].isna().mean().mean()) if refs else 0.0}
    )
    return frame
