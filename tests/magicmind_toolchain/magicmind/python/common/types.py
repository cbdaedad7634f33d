"""Test stand-in for `magicmind.python.common.types`: `get_datatype_by_numpy` (docs/magicmind.md §1.1, §1.5)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from magicmind_standins import dtypes

from magicmind.python.runtime import DataType


def get_datatype_by_numpy(dtype: npt.DTypeLike) -> DataType:
    """`np.float32` → `DataType.FLOAT32`; TypeError for a numpy type MagicMind has no name for."""
    try:
        return DataType[dtypes.name_of_numpy(np.dtype(dtype))]
    except KeyError as error:
        raise TypeError(str(error)) from None
