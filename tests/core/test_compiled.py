"""The compiled serving form: used only where it predicts exactly as the model it came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

import mloop

pytest.importorskip("skl2onnx", reason="compiling needs mloop[onnx]")

from mloop.core.compiled import OnnxClassifier, OnnxModel, compile_model


def numbers(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(3, 2, size=n), "n": rng.integers(0, 9, n)})
    return x, ((x["a"] + x["b"] / 2 - x["n"] / 4) > 1).astype(int)


def signature(x: pd.DataFrame) -> dict:
    return {"inputs": mloop.infer_schema(mloop.compute_statistics(x)).to_dict()}


def test_a_pipeline_compiles_and_predicts_exactly_as_scikit_learn() -> None:
    x, y = numbers()
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    compiled, why_not = compile_model(model, signature(x))
    assert why_not == "" and isinstance(compiled, OnnxClassifier)
    fresh, _ = numbers(300, seed=1)
    assert compiled.predict(fresh).tolist() == model.predict(fresh).tolist()  # DataFrame in
    matrix = fresh.to_numpy(dtype=float)
    assert np.abs(compiled.predict_proba(matrix) - model.predict_proba(fresh)).max() <= 1e-9
    assert compiled.classes_.tolist() == [0, 1]
    assert compiled.feature_names_in_.tolist() == ["a", "b", "n"]
    again = OnnxModel.from_bytes(compiled.to_bytes())
    assert isinstance(again, OnnxClassifier)
    assert again.predict(matrix).tolist() == model.predict(fresh).tolist()


def test_a_regressor_compiles_without_class_probabilities() -> None:
    x, _ = numbers()
    model = Ridge().fit(x, x["a"] * 3 + x["b"])
    compiled, why_not = compile_model(model, signature(x))
    assert why_not == "" and compiled is not None
    assert not hasattr(compiled, "predict_proba")
    np.testing.assert_allclose(compiled.predict(x), model.predict(x), rtol=1e-9)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        # ONNX runs tree ensembles in float32: some rows near a threshold land on the other side
        (lambda: RandomForestClassifier(n_estimators=10, random_state=0), "labels differ"),
        (
            lambda: make_pipeline(FunctionTransformer(lambda v: v * 2), LogisticRegression()),
            "conversion failed",
        ),
    ],
)
def test_a_model_that_is_not_reproduced_exactly_keeps_its_python_form(make, reason: str) -> None:
    x, y = numbers()
    compiled, why_not = compile_model(make().fit(x, y), signature(x))
    assert compiled is None and reason in why_not


def test_non_numeric_inputs_and_foreign_models_are_not_compiled() -> None:
    x, y = numbers()
    text = x.assign(city=np.where(y == 1, "rome", "paris"))
    assert "column 'city' is not numeric" in compile_model(LogisticRegression(), signature(text))[1]

    class Rule:
        feature_names_in_ = np.array(["a", "b", "n"], dtype=object)

        def predict(self, rows: object) -> list[int]:
            return [1]

    assert "not a scikit-learn model" in compile_model(Rule(), signature(x))[1]


def test_registration_stores_the_form_and_the_registry_says_why_not(tmp_path: Path) -> None:
    x, y = numbers()
    with mloop.Workspace.open(tmp_path / "ws") as ws:
        linear = ws.register_model(
            "m", make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y),
            signature=signature(x), compile=True,
        )  # fmt: skip
        form = linear.signature["serving_form"]
        assert form["format"] == "onnx"
        loaded = ws.load_artifact(form["artifact_id"])  # digest-verified like any artifact
        assert isinstance(loaded, OnnxClassifier)
        assert loaded.predict(x).tolist() == ws.load_model("m:1").predict(x).tolist()

        forest = ws.register_model(
            "m", RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y),
            signature=signature(x), compile=True,
        )  # fmt: skip
        assert forest.signature["serving_form"]["format"] is None
        assert "differ" in forest.signature["serving_form"]["reason"]
        plain = ws.register_model("m", LogisticRegression().fit(x, y), signature=signature(x))
        assert "serving_form" not in plain.signature  # compiling is asked for, never implied
