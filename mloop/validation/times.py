"""Times as numbers: one reading of a date or time, whichever form it arrives in.

A time feature reaches mloop as a datetime column (Parquet), as date objects (a CSV's date column as
pyarrow reads it), or as ISO-8601 text (a JSON request, the prediction log). Models, the retraining
rows and the serving check all read it through :func:`seconds_since_epoch`, so the same day is the
same number everywhere. Naive times are UTC. Years 1–9999 are accepted (pandas' nanosecond
timestamps stop at 1677 and 2262: they are used only as a fast path).
"""

from __future__ import annotations

import datetime
import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["epoch_seconds", "seconds_since_epoch", "to_datetimes"]

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def seconds_since_epoch(value: Any) -> float | None:
    """``value`` (a datetime, a date, or ISO-8601 text) as seconds since 1970 UTC; None when it is
    none of those (a number, a bool, text that is not an ISO date or time)."""
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if value is pd.NaT:
        return None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return (value - _EPOCH).total_seconds()
    if isinstance(value, datetime.date):
        midnight = datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.UTC)
        return (midnight - _EPOCH).total_seconds()
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else float(value.astype("datetime64[us]").astype(np.int64)) / 1e6
    return None


def _column_seconds(column: pd.Series) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(column):
        if getattr(column.dt, "tz", None) is not None:
            column = column.dt.tz_convert("UTC").dt.tz_localize(None)
        values = column.to_numpy(dtype="datetime64[us]")
        out = values.astype(np.int64).astype(np.float64) / 1e6
        out[np.isnat(values)] = np.nan
        return out
    return np.array(
        [math.nan if (s := seconds_since_epoch(v)) is None else s for v in column.tolist()], dtype=np.float64
    )


def epoch_seconds(frame: pd.DataFrame) -> np.ndarray:
    """Time columns as seconds since 1970 UTC (missing, or not a time → NaN): the default model's
    reading of a time feature, the same number whether a date arrives as a datetime, a date object or
    a request's ISO text."""
    out = np.empty(frame.shape, dtype=np.float64)
    for i, name in enumerate(frame.columns):
        out[:, i] = _column_seconds(frame[name])
    return out


def to_datetimes(column: pd.Series) -> pd.Series | None:
    """``column``'s values as UTC datetimes (microseconds), or None when a present value is not a time."""
    seconds = _column_seconds(column)
    if bool((np.isnan(seconds) & column.notna().to_numpy()).any()):
        return None
    micros = np.full(len(seconds), np.datetime64("NaT"), dtype="datetime64[us]")
    present = ~np.isnan(seconds)
    micros[present] = np.round(seconds[present] * 1e6).astype(np.int64).astype("datetime64[us]")
    return pd.Series(micros, index=column.index, name=column.name)
