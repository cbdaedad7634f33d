"""The stand-in serialized MagicMind model, written by `mm.Model.serialize_to_file` and read by `mm_run`.

A real model file is an MLU binary (docs/magicmind.md §1.6); this one is a zip archive holding `model.onnx`
(the network as onnxruntime runs it: input dims fixed as built, or symbolic for a shape-mutable model, and
QuantizeLinear/DequantizeLinear pairs for qint precision modes) and `magicmind.json` (a `ModelInfo`).
Dims are user-facing (after `convert_input_layout`), except `dim_range`, which stays in the network's own layout
as BuilderConfig takes it (§1.4); -1 marks a dim the model does not fix.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import TypedDict

MODEL_MEMBER = "model.onnx"
INFO_MEMBER = "magicmind.json"


class LayoutConversion(TypedDict):
    src: str  # the network's layout, e.g. NCHW
    dst: str  # the model's layout at its boundary, e.g. NHWC


class Normalization(TypedDict):
    """`insert_bn_before_firstnode`: the model computes (x - mean) / sqrt(var) per channel of uint8 pixels."""

    mean: list[float]
    var: list[float]


class DimRange(TypedDict):
    min: list[int]
    max: list[int]


class InputInfo(TypedDict):
    name: str
    dims: list[int]  # as built; a shape-mutable model reports -1 for every dim but keeps these as run hints
    data_type: str  # the mm.DataType name the model takes, UINT8 with insert_bn
    network_data_type: str  # the type of the ONNX input
    layout: LayoutConversion | None
    insert_bn: Normalization | None
    dim_range: DimRange | None


class OutputInfo(TypedDict):
    name: str
    dims: list[int]
    data_type: str
    network_data_type: str
    layout: LayoutConversion | None


class QuantizationInfo(TypedDict):
    algorithm: str  # linear | eqnm
    calibration_method: str  # the onnxruntime CalibrationMethod that emulates it
    quant_type: str  # the onnxruntime QuantType of activations and weights
    per_channel: bool  # weight_quant_granularity per_axis
    activation_symmetric: bool
    calibration_batches: int


class ModelInfo(TypedDict):
    name: str
    archs: list[str]
    cluster_num: dict[str, list[int]]  # from the `{"archs": [{"mtp_372": [6, 8]}]}` form
    precision_mode: str
    computation_preference: str
    graph_shape_mutable: bool
    quantization: QuantizationInfo | None
    inputs: list[InputInfo]
    outputs: list[OutputInfo]


class MmFormatError(ValueError):
    """The file is not a stand-in MagicMind model."""


def write(path: Path, onnx_bytes: bytes, info: ModelInfo) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(MODEL_MEMBER, onnx_bytes)
        archive.writestr(INFO_MEMBER, json.dumps(info, indent=2, sort_keys=True))


def read(path: Path) -> tuple[bytes, ModelInfo]:
    """The ONNX bytes and info of a stand-in model file; OSError if unreadable, MmFormatError if no model."""
    with path.open("rb") as handle:
        if not zipfile.is_zipfile(handle):
            raise MmFormatError(f"{path} is not a MagicMind model file")
    with zipfile.ZipFile(path) as archive:
        if not {MODEL_MEMBER, INFO_MEMBER} <= set(archive.namelist()):
            raise MmFormatError(f"{path} is not a MagicMind model file: it lacks {MODEL_MEMBER} or {INFO_MEMBER}")
        info: ModelInfo = json.loads(archive.read(INFO_MEMBER))
        return archive.read(MODEL_MEMBER), info
