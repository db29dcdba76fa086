"""Serializers: each supported family round-trips; anything else is a clear error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from mloop.core.serialize import deserialize, serialize
from mloop.errors import SerializationError


def roundtrip(value: object) -> tuple[str, object]:
    kind, data = serialize(value)
    return kind, deserialize(kind, data)


def test_dataframe_roundtrips_with_index_and_dtypes() -> None:
    df = pd.DataFrame(
        {
            "a": [1, 2],
            "b": [0.5, None],
            "c": ["x", "y"],
            "d": pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True),
        },
        index=pd.Index([10, 11], name="day"),
    )
    kind, back = roundtrip(df)
    assert kind == "parquet"
    pd.testing.assert_frame_equal(back, df)


def test_attrs_that_are_not_json_are_left_out_without_a_warning() -> None:
    """A frame read from the prediction log carries its LogHealth in attrs: storing it as an artifact
    keeps the JSON attrs (where it came from), drops the rest and warns nobody (the demo printed
    pyarrow's UserWarning on every retraining)."""
    import warnings

    df = pd.DataFrame({"a": [1.0, 2.0]})
    df.attrs.update(source="incoming/batch.csv", health=object())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kind, back = roundtrip(df)
    assert kind == "parquet" and back.attrs == {"source": "incoming/batch.csv"}  # type: ignore[attr-defined]
    assert set(df.attrs) == {"source", "health"}  # the caller's frame is untouched
    plain = df.copy()
    plain.attrs = {"source": "incoming/batch.csv"}
    assert serialize(plain) == serialize(df)  # the same content, the same bytes (and digest)


def test_series_roundtrips() -> None:
    kind, back = roundtrip(pd.Series([1.0, 2.0], name="y"))
    assert kind == "parquet-series"
    pd.testing.assert_series_equal(back, pd.Series([1.0, 2.0], name="y"))


def test_numpy_roundtrips_without_pickle() -> None:
    kind, back = roundtrip(np.arange(12, dtype=np.float32).reshape(3, 4))
    assert kind == "npy"
    np.testing.assert_array_equal(back, np.arange(12, dtype=np.float32).reshape(3, 4))
    with pytest.raises(SerializationError):
        serialize(np.array([object()], dtype=object))


def test_json_values_roundtrip_canonically() -> None:
    value = {"b": [1, 2.5, None, True], "a": {"nested": "x"}}
    kind, back = roundtrip(value)
    assert (kind, back) == ("json", value)
    assert serialize({"a": 1, "b": 2})[1] == serialize({"b": 2, "a": 1})[1]


def test_estimator_roundtrips() -> None:
    x, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
    model = LogisticRegression().fit(x, y)
    kind, back = roundtrip(model)
    assert kind == "joblib"
    np.testing.assert_array_equal(back.predict(x), model.predict(x))  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", [object(), {1: "int key"}, float("nan"), (1, 2), {"x": float("inf")}])
def test_unsupported_values_are_refused(value: object) -> None:
    with pytest.raises(SerializationError, match="no serializer"):
        serialize(value, what="step 'x' output 'output'")


def test_unreadable_bytes_are_a_clear_error() -> None:
    with pytest.raises(SerializationError, match="cannot read a parquet artifact"):
        deserialize("parquet", b"not parquet")
    with pytest.raises(SerializationError, match="unknown artifact type"):
        deserialize("pickle", b"")
