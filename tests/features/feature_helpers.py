"""Hand-built feature data and definitions the feature-store tests share."""

from __future__ import annotations

import pandas as pd

T = pd.Timestamp


def utc(text: str) -> pd.Timestamp:
    return T(text, tz="UTC")


DEFINITIONS = """
from mloop.features import Entity, FeatureService, FeatureView

driver = Entity("driver", join_keys=["driver_id"])
stats = FeatureView(
    "driver_stats", entities=[driver], source="stats.parquet", timestamp="event_timestamp",
    ttl="{ttl}", created="created",
)
model_features = FeatureService("driver_model", ["driver_stats:conv_rate", "driver_stats:trips"])
"""


def stats_frame() -> pd.DataFrame:
    """Hand-built history: a tie on event time broken by created, gaps, and a second driver."""
    rows = [
        (1, "2024-01-01 00:00", "2024-01-01 00:00", 0.1, 1),
        (1, "2024-01-02 00:00", "2024-01-02 01:00", 0.2, 2),
        (1, "2024-01-02 00:00", "2024-01-02 02:00", 0.3, 3),  # same event time, created later: wins
        (2, "2024-01-01 00:00", "2024-01-01 00:00", 0.5, 5),
        (2, "2024-01-03 00:00", "2024-01-03 00:00", 0.6, 6),
    ]
    return pd.DataFrame(
        {
            "driver_id": [r[0] for r in rows],
            "event_timestamp": [utc(r[1]) for r in rows],
            "created": [utc(r[2]) for r in rows],
            "conv_rate": [r[3] for r in rows],
            "trips": [r[4] for r in rows],
        }
    )
