"""Open Inference Protocol v2 tensors: datatypes, the JSON and binary encodings, checks.

The binary tensor data extension (tritonclient's default): the body is the JSON header
(``Inference-Header-Content-Length`` bytes) followed by each binary tensor's raw bytes, in the
order of the tensors that carry a ``binary_data_size`` parameter. Numbers are little-endian and
row-major; ``BYTES`` elements are a 4-byte little-endian length followed by that many bytes.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from mloop.serving.limits import LARGEST
from mloop.serving.predictor import InputError, quoted

__all__ = ["DATATYPES", "check_data", "compatible", "decode_binary", "encode_binary", "flatten"]

_INTS = {
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
}
# the largest finite value of each float type (FP64: mloop's bound for any number, as in JSON bodies);
# a JSON value beyond it does not fit the type the client declared, as 300 does not fit UINT8
_FLOATS = {
    "FP16": float(np.finfo(np.float16).max),
    "FP32": float(np.finfo(np.float32).max),
    "FP64": LARGEST,
    "BF16": 3.3895313892515355e38,
}
DATATYPES = frozenset({"BOOL", "BYTES", *_INTS, *_FLOATS})
_NUMPY = {
    "BOOL": "<?",
    **{name: f"<{'u' if name.startswith('U') else 'i'}{int(name.lstrip('UINT')) // 8}" for name in _INTS},
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


class TensorError(InputError):
    """A tensor whose name, shape, datatype or data break the protocol (HTTP 400 on v2 routes)."""

    code = "invalid_tensor"


def flatten(data: list[Any], shape: list[int], where: str) -> list[Any]:
    """Flat data, or data nested as the shape says (``[n, 1]`` → ``[[v], …]``) → one flat list."""
    if not any(isinstance(v, list) for v in data):
        return data
    inner = shape[1] if len(shape) == 2 else None
    if inner is None or not all(
        isinstance(v, list) and len(v) == inner and not any(isinstance(x, list) for x in v) for v in data
    ):
        raise TensorError(f"{where}: the data's nesting does not follow the shape {shape}", field=where)
    return [x for v in data for x in v]


def check_data(values: list[Any], datatype: str, where: str) -> None:
    """Each value is of ``datatype`` (JSON encoding: numbers, booleans, strings for BYTES)."""
    if datatype == "BOOL":
        bad = next((v for v in values if not isinstance(v, bool)), _OK)
    elif datatype in _INTS:
        lo, hi = _INTS[datatype]
        bad = next(
            (v for v in values if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi), _OK
        )
    elif datatype in _FLOATS:
        top = _FLOATS[datatype]
        bad = next(
            (v for v in values if isinstance(v, bool) or not isinstance(v, int | float) or not abs(v) <= top),
            _OK,
        )
    else:  # BYTES
        bad = next((v for v in values if not isinstance(v, str)), _OK)
    if bad is not _OK:
        raise TensorError(f"{where}: {quoted(bad)} is not a value of type {datatype}", field=where)


_OK = object()


def compatible(datatype: str, rule: dict[str, Any]) -> bool:
    """Whether a tensor of ``datatype`` may feed a column with this signature rule."""
    kind = rule.get("type", "any")
    if kind == "float":
        return datatype in _INTS or datatype in _FLOATS
    if kind == "int":
        return datatype in _INTS
    if kind == "bool":
        return datatype == "BOOL"
    if kind in ("str", "string", "category", "categorical"):
        return datatype == "BYTES"
    return True


def decode_binary(blob: bytes, datatype: str, count: int, where: str) -> list[Any]:
    """``count`` elements of ``datatype`` from their binary encoding."""
    if datatype == "BYTES":
        out: list[Any] = []
        offset = 0
        while offset < len(blob):
            if offset + 4 > len(blob):
                raise TensorError(f"{where}: a BYTES element's length is cut short", field=where)
            (n,) = struct.unpack_from("<I", blob, offset)
            offset += 4
            if offset + n > len(blob):
                raise TensorError(f"{where}: a BYTES element runs past its tensor", field=where)
            try:
                out.append(blob[offset : offset + n].decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise TensorError(f"{where}: a BYTES element is not UTF-8 text", field=where) from exc
            offset += n
        if len(out) != count:
            raise TensorError(f"{where}: {len(out)} BYTES elements, the shape says {count}", field=where)
        return out
    if datatype not in _NUMPY:
        raise TensorError(f"{where}: {datatype} is not supported in binary form", field=where)
    dtype = np.dtype(_NUMPY[datatype])
    if len(blob) != count * dtype.itemsize:
        raise TensorError(
            f"{where}: {len(blob)} bytes, the shape and {datatype} need {count * dtype.itemsize}", field=where
        )
    values = np.frombuffer(blob, dtype=dtype)
    if datatype in _FLOATS and not (np.abs(values.astype(np.float64)) <= LARGEST).all():
        raise TensorError(
            f"{where}: holds a value that is not a finite number within ±{LARGEST:g}", field=where
        )
    return values.tolist()


def encode_binary(values: list[Any], datatype: str) -> bytes:
    """The binary encoding of ``values`` as ``datatype``."""
    if datatype == "BYTES":
        parts = []
        for v in values:
            raw = str(v).encode("utf-8")
            parts.append(struct.pack("<I", len(raw)))
            parts.append(raw)
        return b"".join(parts)
    return np.asarray(values, dtype=np.dtype(_NUMPY[datatype])).tobytes()
