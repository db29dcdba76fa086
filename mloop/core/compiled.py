"""A model's serving form: the registered scikit-learn model compiled to ONNX, proven equal, run by
onnxruntime.

Why: a prediction service that unpickles a scikit-learn model must import scikit-learn (and with it
scipy and pandas' heavier parts) before it can answer, ~1.3-2 s on a small VM, and pays
scikit-learn's per-call checks (~0.2 ms on one row). The compiled form answers the same row in
~10 µs and starts without scikit-learn. It is only ever used where it was proven to give what the
original model gives: at registration it predicts on rows spread over the signature's training
ranges and must return exactly the same labels and probabilities equal to 1e-9 (tree ensembles,
which ONNX evaluates in float32, fail this and keep the Python model).

The artifact holds a short JSON header (columns, classes, task) and the ONNX bytes; loading it
needs only ``onnxruntime`` (``pip install 'mloop[onnx]'``; compiling also needs ``skl2onnx``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["OnnxModel", "compile_model"]

_VERIFY_ROWS = 512
_PROBA_ATOL = 1e-9


class OnnxModel:
    """A compiled model with scikit-learn's prediction interface (``predict``, ``feature_names_in_``;
    classifiers also ``predict_proba`` and ``classes_``), run by onnxruntime on one thread."""

    __mloop_artifact__ = "onnx"

    def __init__(self, onnx_bytes: bytes, columns: list[str], task: str, classes: list[Any] | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # one request is one small matrix: thread pools cost more than they give, and uvicorn
        # workers are the unit of parallelism
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self._bytes = onnx_bytes
        self._input = self._session.get_inputs()[0].name
        self.task = task
        self.feature_names_in_ = np.asarray(columns, dtype=object)
        self.n_features_in_ = len(columns)
        if task == "classification":
            self.classes_ = np.asarray(classes)

    def _matrix(self, x: Any) -> np.ndarray:
        if hasattr(x, "columns"):  # a DataFrame: take the model's columns, in the model's order
            x = x[list(self.feature_names_in_)].to_numpy(dtype=np.float64)
        return np.ascontiguousarray(x, dtype=np.float64)

    def _run(self, x: Any) -> list[Any]:
        return self._session.run(None, {self._input: self._matrix(x)})

    def predict(self, x: Any) -> np.ndarray:
        out = self._run(x)[0]
        return np.asarray(out).ravel() if self.task != "classification" else np.asarray(out)

    def to_bytes(self) -> bytes:
        header = json.dumps(
            {
                "columns": self.feature_names_in_.tolist(),
                "task": self.task,
                "classes": self.classes_.tolist() if self.task == "classification" else None,
            }
        ).encode()
        return struct.pack(">I", len(header)) + header + self._bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> OnnxModel:
        (size,) = struct.unpack(">I", data[:4])
        header = json.loads(data[4 : 4 + size])
        kind = OnnxClassifier if header["task"] == "classification" else OnnxModel
        return kind(data[4 + size :], header["columns"], header["task"], header["classes"])


class OnnxClassifier(OnnxModel):
    """A compiled classifier: labels and class probabilities from one onnxruntime call."""

    def predict_proba(self, x: Any) -> np.ndarray:
        return np.asarray(self._run(x)[1], dtype=np.float64)


def compile_model(model: Any, signature: Mapping[str, Any]) -> tuple[OnnxModel | None, str]:
    """``(compiled model, "")`` when ``model`` compiles to ONNX and predicts exactly as it does on
    rows spread over the signature's input ranges; else ``(None, why not)``. Never raises."""
    inputs = signature.get("inputs", {}).get("columns", {})
    names = getattr(model, "feature_names_in_", None)
    columns = [str(c) for c in names] if names is not None else list(inputs)
    if not columns:
        return None, "no input columns (no signature and no feature names)"
    kinds = {c: inputs.get(c, {}).get("type") for c in columns}
    if any(k not in ("int", "float") for k in kinds.values()):
        odd = next(c for c, k in kinds.items() if k not in ("int", "float"))
        return None, f"column {odd!r} is not numeric ({kinds[odd]}); the compiled form takes numbers only"
    if not type(model).__module__.startswith("sklearn."):
        return None, f"{type(model).__name__} is not a scikit-learn model"
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import DoubleTensorType
        from sklearn.base import is_classifier
    except ImportError:
        return None, "the onnx extra is not installed (pip install 'mloop[onnx]')"
    classifier = bool(is_classifier(model))
    if classifier and not hasattr(model, "predict_proba"):
        return None, "a classifier without predict_proba"
    try:
        proto = to_onnx(
            model,
            initial_types=[("X", DoubleTensorType([None, len(columns)]))],
            options={"zipmap": False} if classifier else None,
        )
        classes = model.classes_.tolist() if classifier else None
        kind = OnnxClassifier if classifier else OnnxModel
        compiled = kind(
            proto.SerializeToString(), columns, "classification" if classifier else "regression", classes
        )
        problem = _differs(model, compiled, _verification_rows(columns, inputs), classifier)
    except Exception as exc:  # a converter gap or a runtime refusal: keep the Python model
        return None, f"ONNX conversion failed: {type(exc).__name__}: {str(exc)[:200]}"
    return (None, problem) if problem else (compiled, "")


def _verification_rows(columns: list[str], inputs: Mapping[str, Any]) -> Any:
    """Rows at the ranges' corners and middle, and spread uniformly inside them (seeded)."""
    import pandas as pd

    rng = np.random.default_rng(0)
    data = {}
    for c in columns:
        rule = inputs.get(c, {})
        lo, hi = rule.get("min"), rule.get("max")
        lo = float(lo) if lo is not None else -1.0
        hi = float(hi) if hi is not None else 1.0
        values = np.concatenate([[lo, hi, (lo + hi) / 2], rng.uniform(lo, hi, _VERIFY_ROWS)])
        data[c] = np.round(values) if rule.get("type") == "int" else values
    return pd.DataFrame(data, columns=columns)


def _differs(model: Any, compiled: OnnxModel, rows: Any, classifier: bool) -> str:
    expected = np.asarray(model.predict(rows))
    got = compiled.predict(rows.to_numpy(dtype=np.float64))
    if classifier:
        if not np.array_equal(expected, got):
            return f"the ONNX form's labels differ on {int((expected != got).sum())} of {len(rows)} rows"
        assert isinstance(compiled, OnnxClassifier)
        gap = float(np.abs(model.predict_proba(rows) - compiled.predict_proba(rows)).max())
        if not gap <= _PROBA_ATOL:
            return f"the ONNX form's probabilities differ by up to {gap:.2g} (allowed {_PROBA_ATOL:g})"
        return ""
    if not np.allclose(expected, got, rtol=1e-9, atol=1e-12):
        return f"the ONNX form's predictions differ by up to {float(np.abs(expected - got).max()):.2g}"
    return ""
