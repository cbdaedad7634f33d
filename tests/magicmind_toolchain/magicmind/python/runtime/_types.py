"""The small value types of `magicmind.python.runtime` (docs/magicmind.md §1.2–§1.5): DataType, Dims,
ModelKind and QuantizationAlgorithm."""

from __future__ import annotations

import enum
from collections.abc import Iterable


class DataType(enum.Enum):
    """§1.3; the value is the name serialized models store (magicmind_standins/dtypes.py maps it to numpy)."""

    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    FLOAT16 = "FLOAT16"
    FLOAT32 = "FLOAT32"
    BOOL = "BOOL"
    QINT8 = "QINT8"
    QINT16 = "QINT16"


class ModelKind(enum.Enum):
    kOnnx = 0
    kCaffe = 1
    kPytorch = 2
    kTensorflow = 3


class QuantizationAlgorithm(enum.Enum):
    LINEAR_ALGORITHM = "linear"
    EQNM_ALGORITHM = "eqnm"


class Dims:
    """`mm.Dims((n, c, h, w))`; -1 is a dim left open."""

    def __init__(self, dims: Iterable[int] = ()) -> None:
        self._dims = [int(dim) for dim in dims]

    def GetDims(self) -> list[int]:
        return list(self._dims)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dims) and other._dims == self._dims

    def __hash__(self) -> int:
        return hash(tuple(self._dims))

    def __repr__(self) -> str:
        return f"Dims({self._dims})"
