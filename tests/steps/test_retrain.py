"""The built-in retraining pipeline: one public name, the old config path still loads, and it runs."""

from __future__ import annotations

from pathlib import Path

from loop_helpers import MODEL, stream

import mloop
from mloop.core.loader import load_pipeline


def test_one_pipeline_behind_the_public_name_and_both_config_paths() -> None:
    assert isinstance(mloop.retrain, mloop.Pipeline)
    assert load_pipeline("mloop.steps.retrain:retrain") is mloop.retrain
    # configs written before the move keep working
    assert load_pipeline("mloop.orchestration.retrain:retrain") is mloop.retrain


def test_the_public_pipeline_trains_validates_and_registers(
    workspace: mloop.Workspace, tmp_path: Path
) -> None:
    path = tmp_path / "rows.parquet"
    stream(600).to_parquet(path)
    result = workspace.run(mloop.retrain, model_name=MODEL, target="y", data=str(path), enforce_latency=False)
    registered = result.load("register_model")
    assert registered["alias"] == "production", registered["reasons"]
    version = workspace.model_version(f"{MODEL}@production")
    assert version.version == 1 and version.run_id == result.run.id


def test_a_validated_model_is_refitted_with_its_held_out_rows_only_when_asked() -> None:
    """refit_on_holdout: the registered model has seen the newest (held-out) rows when ``refit``."""
    from mloop.steps.retrain import default_model, refit_on_holdout

    rows = stream(300, seed=3)
    fitted, test = rows.iloc[:240], rows.iloc[240:]
    model = default_model(fitted.drop(columns=["y"]), "classification").fit(
        fitted.drop(columns=["y"]), fitted["y"]
    )
    same, same_rows = refit_on_holdout(model, fitted, test, "y")
    assert same is model and same_rows is fitted
    refitted, all_rows = refit_on_holdout(model, fitted, test, "y", refit=True)
    assert refitted is not model and len(all_rows) == 300
    assert all_rows.iloc[-60:].reset_index(drop=True).equals(test.reset_index(drop=True))
    assert refitted.predict(test.drop(columns=["y"])).shape == (60,)


def test_a_date_column_means_the_same_time_as_a_datetime_or_as_a_requests_iso_text() -> None:
    """A CSV's date column (pyarrow reads date objects) was ordinal-encoded as categories: a request's
    ISO text of the same day was an unknown category (NaN), and a retrain from the log failed on it."""
    import datetime

    import numpy as np
    import pandas as pd

    from mloop.steps.retrain import default_model, describe_default_model

    rows = stream(400, seed=2)
    days = pd.date_range("2024-01-01", periods=400, freq="D")
    rows["y"] = (days.day_of_year > 200).astype(int)  # the label is the date alone
    features = rows.drop(columns=["y"]).assign(day=[d.date() for d in days])
    model = default_model(features, "classification").fit(features, rows["y"])
    assert "1 time (seconds since 1970)" in describe_default_model(features, "classification")
    as_text = features.assign(day=[d.isoformat() for d in features["day"]])
    # the same days as text (a Parquet string column) are categories: the description says so
    assert "'day' holds ISO-8601 dates as text, read as categories" in describe_default_model(
        as_text, "classification"
    )
    assert "ISO-8601" not in describe_default_model(features, "classification")
    as_datetime = features.assign(day=days)
    expected = model.predict_proba(features)
    for other in (as_text, as_datetime):
        np.testing.assert_allclose(model.predict_proba(other), expected)
    assert (model.predict(features) == rows["y"]).mean() > 0.95
    unparsable = as_text.assign(day=["someday"] * 400)  # not a time: missing, never an error
    assert model.predict(unparsable).shape == (400,)
    assert isinstance(features["day"].iloc[0], datetime.date)


def test_times_beyond_pandas_nanosecond_range_and_mixed_offsets_are_read() -> None:
    """Dates before 1677 or after 2262 crashed the first fit (OutOfBoundsDatetime); a column whose
    text carried both +01:00 and +02:00 (a zone with summer time) failed every retrain from the log."""
    import datetime

    import numpy as np
    import pandas as pd

    from mloop.validation.times import epoch_seconds, to_datetimes

    values = [datetime.date(1, 1, 1), datetime.date(2365, 11, 1), "2300-01-01", "2024-01-01T01:00:00+01:00"]
    seconds = epoch_seconds(pd.DataFrame({"d": pd.Series([*values, "someday", True, 5, None], dtype=object)}))
    assert seconds[:, 0][3] == 1704067200.0 and np.isfinite(seconds[:4, 0]).all()
    assert np.isnan(seconds[4:, 0]).all()  # not a time: missing, never an error
    offsets = pd.Series(["2024-01-01T01:00:00+01:00", "2024-07-01T02:00:00+02:00", None])
    parsed = to_datetimes(offsets)
    assert parsed is not None and list(parsed[:2]) == [pd.Timestamp("2024-01-01"), pd.Timestamp("2024-07-01")]
    assert to_datetimes(pd.Series(["2024-01-01", "someday"])) is None  # left as text: the gate names it


def test_labels_a_model_cannot_learn_or_answer_are_one_clear_error_and_blank_labels_are_left_out(
    workspace: mloop.Workspace, tmp_path: Path
) -> None:
    """A datetime target made 400 classes and fit for minutes; a target beyond 64 bits registered a
    model whose every answer the log refused; blank labels and a decimal target reached scikit-learn's
    own errors."""
    import decimal

    import numpy as np
    import pandas as pd
    import pytest

    from mloop.errors import DataError, StepFailedError
    from mloop.steps.retrain import labelled_rows

    rows = stream(200, seed=4)
    cases = {
        "holds times": rows.assign(y=pd.date_range("2024-01-01", periods=200, freq="h")),
        "beyond 64 bits such as 9223372036854775808": rows.assign(
            y=np.where(rows["y"] == 1, 2**63 + 1, 2**63).astype(np.uint64)
        ),
        "column 'empty' holds no values": rows.assign(empty=np.nan),
        "no target column 'y'": rows.drop(columns=["y"]),
    }
    for message, frame in cases.items():
        with pytest.raises(DataError, match=message):
            labelled_rows(frame, "y")
    blanks = rows.assign(y=rows["y"].astype(object).where(rows.index % 10 != 0, None))
    kept = labelled_rows(blanks, "y")
    assert len(kept) == 180 and kept["y"].dtype == np.int64  # typed again without the blanks
    as_decimal = labelled_rows(rows.assign(y=[decimal.Decimal(v) / 3 for v in range(200)]), "y")
    assert as_decimal["y"].dtype == np.float64
    decimal_feature = labelled_rows(rows.assign(d=[decimal.Decimal(v) / 7 for v in range(200)]), "y")
    assert decimal_feature["d"].dtype == np.float64  # the schema's float, not 200 categories

    path = tmp_path / "dated.parquet"
    cases["holds times"].to_parquet(path)
    with pytest.raises(StepFailedError, match="target 'y' holds times"):
        workspace.run(mloop.retrain, model_name=MODEL, target="y", data=str(path), enforce_latency=False)
