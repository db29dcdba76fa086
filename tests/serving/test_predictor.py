"""Input validation gives one verdict whatever the batch size (small batches take a pure-Python path)."""

from __future__ import annotations

from typing import Any

import pytest

from mloop.entities import ModelStatus, ModelVersion, utcnow
from mloop.serving.predictor import InputError, LoadedModel, Predictor


class Doubler:
    """A stand-in model: predicting is not what these tests check."""

    feature_names_in_ = None

    def predict(self, x: Any) -> list[float]:
        return [2.0] * len(x)


def predictor(out_of_domain: str = "count") -> Predictor:
    inputs = {
        "columns": {
            "x": {"type": "float", "min": 0.0, "max": 10.0},
            "n": {"type": "int", "min": 0, "max": 5},
        }
    }
    version = ModelVersion(
        id="v", name="m", version=1, artifact_id="a", run_id=None, status=ModelStatus.REGISTERED,
        signature={"inputs": inputs}, metrics={}, tags={}, created_at=utcnow(), created_by="t", aliases=(),
    )  # fmt: skip
    return Predictor(LoadedModel.from_version(version, Doubler()), out_of_domain=out_of_domain)


def verdict(p: Predictor, rows: list[dict[str, Any]]) -> tuple[str, ...]:
    try:
        checked = p.validate(rows)
    except InputError as exc:
        return ("refused", str(exc.field))
    return ("accepted", str(dict(checked.out_of_domain)), str(sorted(checked.finite)))


@pytest.mark.parametrize(
    "value",
    [1.5, 11.0, -0.5, float("nan"), float("inf"), -float("inf"), True, "3", None, 10**400, 3],
)
@pytest.mark.parametrize("out_of_domain", ["count", "reject"])
def test_a_value_gets_the_same_verdict_alone_or_in_a_large_batch(value: Any, out_of_domain: str) -> None:
    p = predictor(out_of_domain)
    alone = verdict(p, [{"x": value, "n": 1}])
    many = verdict(p, [{"x": 1.0, "n": 1}] * 39 + [{"x": value, "n": 1}])
    assert alone[0] == many[0] and alone[1] == many[1], (alone, many)


@pytest.mark.parametrize("value", [2.5, 2.0, 7, -1, True])
def test_integer_columns_take_whole_numbers_in_both_paths(value: Any) -> None:
    p = predictor("reject")
    assert verdict(p, [{"x": 1.0, "n": value}])[:2] == verdict(p, [{"x": 1.0, "n": value}] * 40)[:2]


def test_each_predicting_thread_runs_openmp_on_one_thread() -> None:
    """Served one-row predictions do not start a spinning OpenMP team (HGB's p99 on a busy machine)."""
    import threading

    import numpy as np
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_info

    x = pd.DataFrame({"x": np.linspace(0, 10, 200), "n": np.arange(200) % 6})
    model = HistGradientBoostingClassifier(max_iter=5).fit(x, (x["x"] > 5).astype(int))
    version = ModelVersion(
        id="v", name="m", version=1, artifact_id="a", run_id=None, status=ModelStatus.REGISTERED,
        signature={"inputs": predictor().loaded.version.signature["inputs"]}, metrics={}, tags={},
        created_at=utcnow(), created_by="t", aliases=(),
    )  # fmt: skip
    served = Predictor(LoadedModel.from_version(version, model))
    seen: list[int] = []

    def worker() -> None:  # a fresh thread, like a server's worker thread
        served.predict_rows([{"x": 1.0, "n": 2}])
        seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen and set(seen) == {1}


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 1e19, 2**63 - 1])
def test_an_integer_column_takes_64_bit_integers_in_both_paths(value: Any) -> None:
    """2**63 was answered, then refused by the prediction log as a data error (code data_error, a
    422 blaming no input)."""
    p = predictor("count")
    alone = verdict(p, [{"x": 1.0, "n": value}])
    many = verdict(p, [{"x": 1.0, "n": 1}] * 39 + [{"x": 1.0, "n": value}])
    assert alone[:2] == many[:2]
    assert alone[0] == ("accepted" if value == 2**63 - 1 else "refused"), alone
    if alone[0] == "refused":
        with pytest.raises(InputError, match=r"column 'n': .* is beyond a 64-bit integer"):
            p.validate([{"x": 1.0, "n": value}])
