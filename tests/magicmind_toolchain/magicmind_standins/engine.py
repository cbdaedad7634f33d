"""Runs a stand-in MagicMind model (mm_file.py) with onnxruntime on the CPU, as an MLU engine would run it.

Shared by `mm.IContext.enqueue` (docs/magicmind.md §4.1) and `mm_run` (§3). Per input, in this order:
the data type and dims are checked against the model (a static model takes exactly its dims; a shape-mutable one
any dims of the right rank inside its `dim_range`); `insert_bn_before_firstnode` computes
(x - mean) / sqrt(var) on the uint8 pixels along the channel axis of the model's layout (§1.4); a
`convert_input_layout` transposes from the model's layout back to the network's; precision modes that end in
float16 round the network's float inputs and outputs through float16, the stand-in's stand-in for MLU half
precision. Outputs get `convert_output_layout` and the output data type.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from magicmind_standins import dtypes
from magicmind_standins.cards import Card
from magicmind_standins.mm_file import InputInfo, LayoutConversion, ModelInfo, Normalization, OutputInfo

LAYOUTS = ("NCHW", "NHWC", "NCT", "NTC", "NCDHW", "NDHWC")  # §1.4 convert_input_layout
FLOAT16_IO_PRECISION_MODES = frozenset({"force_float16", "qint8_mixed_float16", "qint16_mixed_float16"})
CHANNEL_AXIS = "C"
DEFAULT_CHANNEL_AXIS = 1  # without a layout conversion the network is taken to be channel-first
# What onnxruntime raises for a graph or feed it cannot run.
ONNXRUNTIME_ERRORS: tuple[type[Exception], ...] = (
    ort_state.Fail, ort_state.InvalidArgument, ort_state.InvalidGraph, ort_state.InvalidProtobuf,
    ort_state.NotImplemented, ort_state.RuntimeException,
)


class InputError(ValueError):
    """Inputs the model refuses or cannot compute; the message says why."""


@dataclass(frozen=True)
class Inference:
    outputs: list[np.ndarray]
    seconds: float  # the emulated device work: pre-processing, the onnxruntime run, post-processing


def permutation(source: str, target: str) -> list[int]:
    """The axes that turn an array in `source` layout into `target` layout, e.g. NCHW→NHWC = [0, 2, 3, 1]."""
    return [source.index(axis) for axis in target]


def to_network_dims(dims: Sequence[int], layout: LayoutConversion | None) -> list[int]:
    """Dims at the model boundary → dims in the network's layout."""
    if layout is None:
        return list(dims)
    return [dims[axis] for axis in permutation(layout["dst"], layout["src"])]


def to_model_dims(dims: Sequence[int], layout: LayoutConversion | None) -> list[int]:
    """Dims in the network's layout → dims at the model boundary."""
    if layout is None:
        return list(dims)
    return [dims[axis] for axis in permutation(layout["src"], layout["dst"])]


def model_input_dims(info: InputInfo, graph_shape_mutable: bool) -> list[int]:
    """What the model reports for an input: its dims, or -1 for every dim of a shape-mutable model (§3.5)."""
    return [-1] * len(info["dims"]) if graph_shape_mutable else list(info["dims"])


def arch_mismatch(info: ModelInfo, card: Card) -> str | None:
    """Why the model cannot run on the card, or None if the card's arch is one the model was built for."""
    if card.spec.arch in info["archs"]:
        return None
    return (f"the model is built for archs {info['archs']}, but MLU device {card.device_id} is a "
            f"{card.spec.name} ({card.spec.arch})")


class CompiledModel:
    """A deserialized model bound to an onnxruntime session; `run` is thread-safe."""

    def __init__(self, onnx_bytes: bytes, info: ModelInfo) -> None:
        self.info = info
        self._session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        self._float16_io = info["precision_mode"] in FLOAT16_IO_PRECISION_MODES

    def check_inputs(self, arrays: Sequence[np.ndarray]) -> None:
        """InputError unless the arrays fit the model's inputs (count, data types, dims)."""
        inputs = self.info["inputs"]
        if len(arrays) != len(inputs):
            raise InputError(f"the model has {len(inputs)} inputs, but {len(arrays)} were given")
        for index, (array, info) in enumerate(zip(arrays, inputs)):
            expected = dtypes.numpy_type(info["data_type"])
            if array.dtype != expected:
                raise InputError(f"input[{index}] {info['name']} has data type {dtypes.name_of_numpy(array.dtype)}"
                                 f", but the model takes {info['data_type']}")
            self._check_dims(index, info, list(array.shape))

    def _check_dims(self, index: int, info: InputInfo, dims: list[int]) -> None:
        label = f"input[{index}] {info['name']} dims {dims}"
        if not self.info["graph_shape_mutable"]:
            if dims != info["dims"]:
                raise InputError(f"{label} differ from the model dims {info['dims']}; the model is not shape "
                                 "mutable (graph_shape_mutable false)")
            return
        if len(dims) != len(info["dims"]) or min(dims, default=1) < 1:
            raise InputError(f"{label} do not fit the model: it takes {len(info['dims'])} positive dims")
        dim_range = info["dim_range"]
        network_dims = to_network_dims(dims, info["layout"])
        if dim_range is not None and not all(
                low <= dim <= high for dim, low, high in zip(network_dims, dim_range["min"], dim_range["max"])):
            raise InputError(f"{label} (network layout {network_dims}) are outside the dim_range of the model: "
                             f"min {dim_range['min']} max {dim_range['max']}")

    def run(self, arrays: Sequence[np.ndarray]) -> Inference:
        """The outputs for inputs that passed `check_inputs`; InputError if onnxruntime cannot compute them."""
        start = time.perf_counter()
        feeds = {info["name"]: self._network_input(array, info) for array, info in zip(arrays, self.info["inputs"])}
        try:
            results = self._session.run(None, feeds)
        except ONNXRUNTIME_ERRORS as error:
            raise InputError(f"the model cannot compute these inputs: {error}") from None
        outputs = [self._model_output(result, info) for result, info in zip(results, self.info["outputs"])]
        return Inference(outputs, time.perf_counter() - start)

    def _network_input(self, array: np.ndarray, info: InputInfo) -> np.ndarray:
        layout, normalization = info["layout"], info["insert_bn"]
        if normalization is not None:
            channel_axis = layout["dst"].index(CHANNEL_AXIS) if layout else DEFAULT_CHANNEL_AXIS
            array = _normalise(array, info["name"], normalization, channel_axis)
        if layout is not None:
            array = np.transpose(array, permutation(layout["dst"], layout["src"]))
        network = np.ascontiguousarray(array, dtype=dtypes.numpy_type(info["network_data_type"]))
        return self._round_float(network)

    def _model_output(self, array: np.ndarray, info: OutputInfo) -> np.ndarray:
        array = self._round_float(array)
        if info["layout"] is not None:
            array = np.transpose(array, permutation(info["layout"]["src"], info["layout"]["dst"]))
        return np.ascontiguousarray(array, dtype=dtypes.numpy_type(info["data_type"]))

    def _round_float(self, array: np.ndarray) -> np.ndarray:
        if self._float16_io and array.dtype == np.float32:
            return array.astype(np.float16).astype(np.float32)
        return array


def _normalise(pixels: np.ndarray, name: str, normalization: Normalization, channel_axis: int) -> np.ndarray:
    shape = [1] * pixels.ndim
    shape[channel_axis] = len(normalization["mean"])
    if pixels.shape[channel_axis] != shape[channel_axis]:
        raise InputError(f"input {name} has {pixels.shape[channel_axis]} channels, but insert_bn_before_"
                         f"firstnode has {shape[channel_axis]} means")
    mean = np.reshape(np.asarray(normalization["mean"], np.float32), shape)
    std = np.sqrt(np.reshape(np.asarray(normalization["var"], np.float32), shape))
    return (pixels.astype(np.float32) - mean) / std
