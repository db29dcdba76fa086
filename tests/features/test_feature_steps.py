"""The built-in ``historical_features`` step: training data that traces back to feature-view versions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from feature_helpers import stats_frame, utc
from feature_pipelines import training

import mloop
from mloop.entities import StepStatus


def test_training_data_and_model_trace_back_to_view_version_and_source(
    tmp_path: Path, feature_repo: Callable[..., Path]
) -> None:
    ws = mloop.Workspace.open(tmp_path / "ws")
    try:
        ws.features.apply(feature_repo())
        entities = tmp_path / "entities.parquet"
        pd.DataFrame(
            {
                "driver_id": [1, 2, 1, 2],
                "event_timestamp": [
                    utc("2024-01-02 06:00"),
                    utc("2024-01-01 06:00"),
                    utc("2024-01-01 06:00"),
                    utc("2024-01-03 06:00"),
                ],
                "label": [1, 0, 0, 1],
            }
        ).to_parquet(entities)
        first = ws.run(training, entities=entities)
        model_ref = first.outputs["fit"]["output"]
        graph = ws.lineage(model_ref.id).to_dict()
        names = {s["name"] for s in graph["steps"]}
        assert names == {"fit", "historical_features"}
        assert any(a["uri"] == entities.resolve().as_uri() for a in graph["artifacts"])
        # the view's version and its source are inputs of the join in the graph, not only params
        [hist] = [s for s in graph["steps"] if s["name"] == "historical_features"]
        by_id = {a["id"]: a for a in graph["artifacts"]}
        inputs = {e["name"]: by_id[e["from"]] for e in graph["edges"] if e["to"] == hist["id"]}
        assert inputs["feature_view:driver_stats"]["uri"] == "mloop:feature-view/driver_stats/v1"
        assert inputs["feature_view:driver_stats"]["type"] == "feature_view"
        assert inputs["source:driver_stats"]["uri"] == (tmp_path / "stats.parquet").resolve().as_uri()
        manifest = ws.metadata.get_params(first.run.id)["historical_features/feature_views"]["driver_stats"]
        assert manifest["version"] == 1
        assert manifest["features"] == ["conv_rate", "trips"]
        source = ws.metadata.get_artifact(manifest["artifact_id"])
        assert (
            source.uri == (tmp_path / "stats.parquet").resolve().as_uri()
            and source.digest == manifest["digest"]
        )
        frame = ws.load_artifact(first.outputs["historical_features"]["output"].id)
        assert frame["driver_stats:trips"].isna().tolist() == [False, False, False, False]

        again = ws.run(training, entities=entities)
        assert [s.status for s in ws.metadata.list_steps(again.run.id)] == [StepStatus.CACHED] * 2

        changed = stats_frame()
        changed["trips"] += 10  # the source changed: the join must be recomputed, not served from cache
        changed.to_parquet(tmp_path / "stats.parquet")
        third = ws.run(training, entities=entities)
        [hist3] = [s for s in ws.metadata.list_steps(third.run.id) if s.name == "historical_features"]
        assert hist3.status == StepStatus.SUCCEEDED
        params3 = ws.metadata.get_params(third.run.id)["historical_features/feature_views"]
        assert params3["driver_stats"]["digest"] != manifest["digest"]
    finally:
        ws.close()
