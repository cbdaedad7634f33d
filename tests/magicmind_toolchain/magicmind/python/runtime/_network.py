"""`mm.Network` and its `mm.ITensor`s as the ONNX parser fills them (docs/magicmind.md §1.2, §1.3)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx
from magicmind_standins import dtypes

from magicmind.python.runtime._status import Code, Status, invalid
from magicmind.python.runtime._types import DataType, Dims

if TYPE_CHECKING:
    from magicmind.python.runtime._calibration import CalibrationRecord

QUANTIZED_TYPES = frozenset({DataType.QINT8, DataType.QINT16})


class ITensor:
    """A network input or output: name, dims (-1 = open) and the data type the built model will use."""

    def __init__(self, name: str, dims: list[int], network_data_type: DataType) -> None:
        self._name = name
        self._dims = dims
        self._data_type = network_data_type
        self._network_data_type = network_data_type

    def get_tensor_name(self) -> str:
        return self._name

    def get_dimension(self) -> Dims:
        return Dims(self._dims)

    def set_dimension(self, dims: Dims) -> Status:
        """Any dims of the tensor's rank, each positive or -1 (left open)."""
        values = dims.GetDims()
        if len(values) != len(self._dims):
            return invalid(f"tensor {self._name} has {len(self._dims)} dims, but {values} were given")
        if any(value < 1 and value != -1 for value in values):
            return invalid(f"dims {values} of tensor {self._name} must be positive or -1")
        self._dims = values
        return Status()

    def get_data_type(self) -> DataType:
        return self._data_type

    def set_data_type(self, data_type: DataType) -> Status:
        if data_type in QUANTIZED_TYPES:
            return Status(Code.UNIMPLEMENTED, f"the stand-in has no {data_type.name} tensors at the model boundary")
        self._data_type = data_type
        return Status()


class Network:
    """An empty network until `Parser.parse` loads an ONNX model into it."""

    def __init__(self) -> None:
        self._onnx: onnx.ModelProto | None = None
        self._inputs: list[ITensor] = []
        self._outputs: list[ITensor] = []
        self._calibration: CalibrationRecord | None = None

    def get_input_count(self) -> int:
        return len(self._inputs)

    def get_output_count(self) -> int:
        return len(self._outputs)

    def get_input(self, index: int) -> ITensor:
        return self._inputs[index]

    def get_output(self, index: int) -> ITensor:
        return self._outputs[index]

    def _load(self, model: onnx.ModelProto) -> Status:
        initializers = {tensor.name for tensor in model.graph.initializer}
        inputs = [value for value in model.graph.input if value.name not in initializers]
        unsupported = [value.name for value in (*inputs, *model.graph.output)
                       if value.type.tensor_type.elem_type not in dtypes.ONNX_TYPES]
        if unsupported:
            return Status(Code.UNIMPLEMENTED, f"tensors {unsupported} have ONNX element types the stand-in does not "
                          "emulate")
        self._onnx, self._calibration = model, None
        self._inputs = [_tensor(value) for value in inputs]
        self._outputs = [_tensor(value) for value in model.graph.output]
        return Status()


def _tensor(value: onnx.ValueInfoProto) -> ITensor:
    tensor_type = value.type.tensor_type
    dims = [dim.dim_value or -1 for dim in tensor_type.shape.dim]
    return ITensor(value.name, dims, DataType(dtypes.ONNX_TYPES[tensor_type.elem_type]))
