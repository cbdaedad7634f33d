"""The MagicMind data type names (docs/magicmind.md §1.3, `mm.DataType`) and their numpy and ONNX counterparts.

Serialized models (mm_file.py) store data types by these names. QINT8/QINT16 are MagicMind's quantized tensor
types; the stand-in has no quantized tensors at the model boundary, so they have no numpy counterpart here and
are refused as input or output types.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

NUMPY_TYPES: dict[str, type[np.generic]] = {
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "FLOAT16": np.float16, "FLOAT32": np.float32, "BOOL": np.bool_,
}
ONNX_TYPES: dict[int, str] = {
    TensorProto.INT8: "INT8", TensorProto.INT16: "INT16", TensorProto.INT32: "INT32", TensorProto.INT64: "INT64",
    TensorProto.UINT8: "UINT8", TensorProto.UINT16: "UINT16", TensorProto.UINT32: "UINT32",
    TensorProto.FLOAT16: "FLOAT16", TensorProto.FLOAT: "FLOAT32", TensorProto.BOOL: "BOOL",
}
# How mm_run prints data types (§3.4 "Datatype: FLOAT", §3.5 "FLOAT"; "HALF" is the CLI name of FLOAT16, §1.3).
DISPLAY_NAMES = {"FLOAT32": "FLOAT", "FLOAT16": "HALF"}


def numpy_type(name: str) -> np.dtype:
    """The numpy dtype of a MagicMind type name; KeyError for QINT8/QINT16."""
    return np.dtype(NUMPY_TYPES[name])


def name_of_numpy(dtype: np.dtype) -> str:
    """The MagicMind type name of a numpy dtype; KeyError if MagicMind has none (e.g. float64)."""
    for name, numpy_scalar in NUMPY_TYPES.items():
        if np.dtype(numpy_scalar) == dtype:
            return name
    raise KeyError(f"numpy dtype {dtype} has no MagicMind data type")


def display_name(name: str) -> str:
    return DISPLAY_NAMES.get(name, name)
