"""`mm.Model` and the runtime objects it leads to (docs/magicmind.md §1.6, §4.1): `IEngine`, `IContext`,
`IRTTensor`.

`serialize_to_file` writes the stand-in model file (magicmind_standins/mm_file.py). `create_i_engine` returns
None after an ERROR log line on stderr when the calling thread has no active device, the EngineConfig's
device_type is not "MLU", or the active card's arch is not among the model's archs (MLU370-* is mtp_372, §7).
`IContext.enqueue` computes at once with onnxruntime (magicmind_standins/engine.py) and appends the outputs;
inputs the model refuses (data type, dims of a static model, dims outside a mutable model's dim_range) give an
INVALID_ARGUMENT Status and no outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from magicmind_standins import dtypes, log, mm_file
from magicmind_standins.engine import ONNXRUNTIME_ERRORS, CompiledModel, InputError, arch_mismatch, model_input_dims
from magicmind_standins.mm_file import ModelInfo

from magicmind.python.runtime._status import Status, invalid, precondition
from magicmind.python.runtime._system import Queue, active_card
from magicmind.python.runtime._types import DataType, Dims

LOG_SOURCE = "magicmind/standin/model.py"
DEVICE_TYPE = "MLU"


@dataclass(frozen=True)
class _Contents:
    onnx_bytes: bytes
    info: ModelInfo


class EngineConfig:
    def __init__(self) -> None:
        self.device_type = DEVICE_TYPE


class IRTTensor:
    """A runtime tensor: `from_numpy` fills it, `to(device)` moves it (a no-op here), `asnumpy` reads it."""

    def __init__(self, name: str, dims: list[int], data_type: DataType, array: np.ndarray | None = None) -> None:
        self._name = name
        self._dims = dims
        self._data_type = data_type
        self._array = array

    def get_tensor_name(self) -> str:
        return self._name

    def get_dimension(self) -> Dims:
        return Dims(self._dims)

    def get_data_type(self) -> DataType:
        return self._data_type

    def from_numpy(self, array: np.ndarray) -> Status:
        expected = dtypes.numpy_type(self._data_type.value)
        if array.dtype != expected:
            return invalid(f"tensor {self._name} takes {self._data_type.name} ({expected}), not {array.dtype}")
        self._array = np.array(array, copy=True, order="C")
        self._dims = list(array.shape)
        return Status()

    def to(self, device: object) -> Status:
        return Status()

    def asnumpy(self) -> np.ndarray:
        if self._array is None:
            raise ValueError(f"tensor {self._name} holds no data")
        return self._array.copy()


class IContext:
    def __init__(self, compiled: CompiledModel) -> None:
        self._compiled = compiled

    def create_inputs(self) -> list[IRTTensor]:
        info = self._compiled.info
        return [IRTTensor(entry["name"], model_input_dims(entry, info["graph_shape_mutable"]),
                          DataType(entry["data_type"])) for entry in info["inputs"]]

    def enqueue(self, inputs: list[IRTTensor], outputs: list[IRTTensor], queue: Queue | None) -> Status:
        if queue is None:
            return invalid("enqueue needs a queue from Device.create_queue()")
        arrays = [tensor._array for tensor in inputs]
        empty = [tensor.get_tensor_name() for tensor, array in zip(inputs, arrays) if array is None]
        if empty:
            return invalid(f"input tensors {empty} hold no data; fill them with from_numpy")
        try:
            self._compiled.check_inputs(arrays)
            inference = self._compiled.run(arrays)
        except InputError as error:
            return invalid(str(error))
        outputs.extend(IRTTensor(entry["name"], list(array.shape), DataType(entry["data_type"]), array)
                       for entry, array in zip(self._compiled.info["outputs"], inference.outputs))
        return Status()


class IEngine:
    def __init__(self, compiled: CompiledModel) -> None:
        self._compiled = compiled

    def create_i_context(self) -> IContext:
        return IContext(self._compiled)


class Model:
    EngineConfig = EngineConfig

    def __init__(self) -> None:
        self._contents: _Contents | None = None

    @classmethod
    def _built(cls, onnx_bytes: bytes, info: ModelInfo) -> Model:
        model = cls()
        model._contents = _Contents(onnx_bytes, info)
        return model

    def serialize_to_file(self, path: str | Path) -> Status:
        if self._contents is None:
            return precondition("the model is empty; build or deserialize one first")
        try:
            mm_file.write(Path(path), self._contents.onnx_bytes, self._contents.info)
        except OSError as error:
            return invalid(f"cannot write the model to {path}: {error}")
        return Status()

    def deserialize_from_file(self, path: str | Path) -> Status:
        try:
            self._contents = _Contents(*mm_file.read(Path(path)))
        except (OSError, mm_file.MmFormatError) as error:
            return invalid(f"cannot read a MagicMind model from {path}: {error}")
        return Status()

    def get_input_names(self) -> list[str]:
        return [entry["name"] for entry in self._loaded().info["inputs"]]

    def get_output_names(self) -> list[str]:
        return [entry["name"] for entry in self._loaded().info["outputs"]]

    def get_input_dimensions(self) -> list[Dims]:
        info = self._loaded().info
        return [Dims(model_input_dims(entry, info["graph_shape_mutable"])) for entry in info["inputs"]]

    def get_output_dimensions(self) -> list[Dims]:
        return [Dims(entry["dims"]) for entry in self._loaded().info["outputs"]]

    def get_input_data_types(self) -> list[DataType]:
        return [DataType(entry["data_type"]) for entry in self._loaded().info["inputs"]]

    def get_output_data_types(self) -> list[DataType]:
        return [DataType(entry["data_type"]) for entry in self._loaded().info["outputs"]]

    def get_input_num(self) -> int:
        return len(self._loaded().info["inputs"])

    def get_output_num(self) -> int:
        return len(self._loaded().info["outputs"])

    def create_i_engine(self, econfig: EngineConfig | None = None) -> IEngine | None:
        contents = self._loaded()
        device_type = (econfig or EngineConfig()).device_type
        card = active_card()
        if device_type != DEVICE_TYPE:
            reason = f"device_type {device_type!r} is not emulated; the stand-in runs models on {DEVICE_TYPE} only"
        elif card is None:
            reason = "no device is active; call mm.Device().active() inside `with mm.System():` first"
        else:
            reason = arch_mismatch(contents.info, card)
        if reason is not None:
            log("ERROR", LOG_SOURCE, f"create_i_engine failed: {reason}")
            return None
        try:
            return IEngine(CompiledModel(contents.onnx_bytes, contents.info))
        except ONNXRUNTIME_ERRORS as error:
            log("ERROR", LOG_SOURCE, f"create_i_engine failed: the model cannot be loaded: {error}")
            return None

    def _loaded(self) -> _Contents:
        if self._contents is None:
            raise ValueError("the model is empty; build or deserialize one first")
        return self._contents
