"""Test stand-in for `amct_onnx calibration`: real int8 post-training quantization with onnxruntime.

CLI, quant.cfg fields and output naming follow docs/ascend.md §2.1–§2.3: one calibration batch per `.bin`
file (files sorted ascending), `--batch_num` batches, `<save_path>_deploy_model.onnx`,
`<save_path>_fake_quant_model.onnx` and `<save_path>_quant.json`, and the `INFO - [AMCT]:[Utils]: The model file is
saved in <path>` lines. The quantization itself is onnxruntime's `quantize_static` (QDQ, per-channel int8 weights,
int8 activations with an offset iff `activation_offset`), so both models are the same QDQ model that onnxruntime
and the atc stand-in run, where the real deploy model would hold AscendQuant/AscendDequant ops.
Exit status: 0, or 1 after an `ERROR - [AMCT]:...` line (the real CLI's status is unrecorded, §7).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np
import onnx
from onnx import version_converter
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from ascend_standins import (
    PrototextError,
    PrototextMessage,
    ShapeSpecError,
    as_bool,
    parse_prototext,
    parse_shape_spec,
)

INFO = "INFO - [AMCT]:[Utils]: "
ERROR = "ERROR - [AMCT]:[AMCT]: "
QUANTIZABLE_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")
PER_CHANNEL_OPSET = 13  # DequantizeLinear's axis attribute, needed for per-channel weights
APPLIED_CONFIG_FIELDS = frozenset({"batch_num", "activation_offset", "skip_layers", "skip_layer_types"})
# Valid AMCTConfig fields (§2.2) that do not change the stand-in's int8 math.
IGNORED_CONFIG_FIELDS = frozenset({"joint_quant", "do_fusion", "skip_fusion_layers", "fakequant_precision_mode"})
UNEMULATED_CONFIG_FIELDS = frozenset({
    "nuq_config", "common_config", "override_layer_types", "override_layer_configs", "tensor_quantize",
})


class AmctError(Exception):
    """A failed calibration; the message follows the ERROR prefix."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise AmctError(message)


@dataclass(frozen=True)
class QuantConfig:
    """The applied fields of quant.cfg (§2.2), with AMCT's defaults."""

    batch_num: int | None = None
    activation_offset: bool = True
    skip_layers: list[str] = field(default_factory=list)
    skip_layer_types: list[str] = field(default_factory=list)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.ERROR)  # onnxruntime's quantizer logs advice through the root logger
    try:
        calibrate(parse_args(sys.argv[1:] if argv is None else argv))
    except AmctError as error:
        print(ERROR + str(error), flush=True)
        return 1
    return 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = _Parser(prog="amct_onnx")
    commands = parser.add_subparsers(dest="command", required=True)
    calibration = commands.add_parser("calibration", help="post-training int8 calibration")
    calibration.add_argument("--model", required=True, help="the .onnx model to quantize")
    calibration.add_argument("--save_path", required=True, help="output directory plus file name prefix")
    calibration.add_argument("--input_shape", required=True, help='"name1:n,c,h,w;name2:..." of one .bin file')
    calibration.add_argument("--data_dir", required=True, help='calibration .bin directories, "dir1;dir2"')
    calibration.add_argument("--data_types", required=True, help='"float32;float32", one per input')
    calibration.add_argument("--calibration_config", help="simple config (quant.cfg)")
    calibration.add_argument("--batch_num", type=int, help="number of batches (.bin files) to calibrate with")
    return parser.parse_args(argv)


def calibrate(args: argparse.Namespace) -> None:
    config = read_config(Path(args.calibration_config)) if args.calibration_config else QuantConfig()
    batch_num = args.batch_num or config.batch_num or 1
    model = _load_model(Path(args.model))
    shapes = _input_shapes(args.input_shape, model)
    directories = _split(args.data_dir, "--data_dir", len(shapes))
    dtypes = [_dtype(name) for name in _split(args.data_types, "--data_types", len(shapes))]
    batches = list(_calibration_batches(shapes, directories, dtypes, batch_num))
    excluded = _excluded_nodes(model, config)
    save_path = Path(args.save_path)
    save_path.parent.mkdir(parents=True, exist_ok=True)
    deploy = Path(f"{save_path}_deploy_model.onnx")
    fake_quant = Path(f"{save_path}_fake_quant_model.onnx")
    quantize_static(
        model,
        deploy,
        _Batches(batches),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTIZABLE_OP_TYPES),
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
        extra_options={"ActivationSymmetric": not config.activation_offset, "WeightSymmetric": True},
    )
    shutil.copyfile(deploy, fake_quant)
    _write_record(Path(f"{save_path}_quant.json"), model, config, batch_num, excluded)
    for path in (deploy, fake_quant):
        print(f"{INFO}The model file is saved in {path}", flush=True)


def read_config(path: Path) -> QuantConfig:
    try:
        message = parse_prototext(path.read_text())
    except OSError:
        raise AmctError(f"The calibration_config file {path} does not exist or cannot be read.") from None
    except PrototextError as error:
        raise AmctError(f"The calibration_config file {path} is invalid: {error}") from None
    for name in message:
        if name in UNEMULATED_CONFIG_FIELDS:
            raise AmctError(f"Field {name} of {path} is not emulated by the amct_onnx stand-in.")
        if name not in APPLIED_CONFIG_FIELDS | IGNORED_CONFIG_FIELDS:
            raise AmctError(f"Unknown field {name} in the calibration_config file {path}.")
    return QuantConfig(
        batch_num=_config_batch_num(message, path),
        activation_offset=as_bool(_single(message, "activation_offset", path, True)),
        skip_layers=[str(layer) for layer in message.get("skip_layers", [])],
        skip_layer_types=[str(op_type) for op_type in message.get("skip_layer_types", [])],
    )


def _single(message: PrototextMessage, name: str, path: Path, default: object) -> object:
    values = message.get(name, [default])
    if len(values) != 1:
        raise AmctError(f"Field {name} is set more than once in {path}.")
    return values[0]


def _config_batch_num(message: PrototextMessage, path: Path) -> int | None:
    value = _single(message, "batch_num", path, None)
    if value is not None and (not isinstance(value, int) or value < 1):
        raise AmctError(f"batch_num [{value}] in {path} must be a positive integer.")
    return value


def _load_model(path: Path) -> onnx.ModelProto:
    """The model, converted to opset 13 if older: onnxruntime's per-channel QDQ needs it."""
    try:
        model = onnx.load(str(path))
    except Exception:  # noqa: BLE001 - protobuf's DecodeError, OSError, ...: anything that is no ONNX model
        raise AmctError(f"Failed to load the model {path}; it must be an ONNX model.") from None
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)
    if opset >= PER_CHANNEL_OPSET:
        return model
    try:
        return version_converter.convert_version(model, PER_CHANNEL_OPSET)
    except RuntimeError as error:  # the converter's failed assertions
        raise AmctError(f"The stand-in cannot convert {path} from opset {opset} to {PER_CHANNEL_OPSET} "
                        f"for per-channel quantization: {error}") from None


def _input_shapes(text: str, model: onnx.ModelProto) -> dict[str, list[int]]:
    try:
        shapes = parse_shape_spec(text)
    except ShapeSpecError as error:
        raise AmctError(f"--input_shape [{text}] is invalid: {error}.") from None
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = {value.name: value for value in model.graph.input if value.name not in initializers}
    for name, dims in shapes.items():
        if name not in inputs:
            raise AmctError(f"Input {name} of --input_shape is not an input of the model ({', '.join(inputs)}).")
        model_dims = [dim.dim_value or -1 for dim in inputs[name].type.tensor_type.shape.dim]
        if len(model_dims) != len(dims) or any(-1 not in (m, d) and m != d for m, d in zip(model_dims, dims)):
            raise AmctError(f"--input_shape {name}:{','.join(map(str, dims))} does not match the model input "
                            f"shape {model_dims}.")
    missing = set(inputs) - set(shapes)
    if missing:
        raise AmctError(f"--input_shape lacks the model inputs {', '.join(sorted(missing))}.")
    return shapes


def _split(text: str, flag: str, count: int) -> list[str]:
    parts = [part.strip() for part in text.split(";") if part.strip()]
    if len(parts) != count:
        raise AmctError(f"{flag} has {len(parts)} entries but --input_shape has {count} inputs.")
    return parts


def _dtype(name: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:
        raise AmctError(f"--data_types entry [{name}] is not a data type such as float32.") from None


def _calibration_batches(
    shapes: Mapping[str, list[int]], directories: Sequence[str], dtypes: Sequence[np.dtype], batch_num: int
) -> Iterator[dict[str, np.ndarray]]:
    """The first batch_num .bin files of every input directory (sorted ascending), one batch per file."""
    files = {
        name: _bin_files(Path(directory), name, dims, dtype, batch_num)
        for (name, dims), directory, dtype in zip(shapes.items(), directories, dtypes)
    }
    for index in range(batch_num):
        yield {
            name: np.fromfile(files[name][index], dtype=dtype).reshape(dims)
            for (name, dims), dtype in zip(shapes.items(), dtypes)
        }


def _bin_files(directory: Path, name: str, dims: list[int], dtype: np.dtype, batch_num: int) -> list[Path]:
    if not directory.is_dir():
        raise AmctError(f"--data_dir {directory} is not a directory.")
    files = sorted(path for path in directory.iterdir() if path.suffix == ".bin")
    if len(files) < batch_num:
        raise AmctError(f"--data_dir {directory} holds {len(files)} .bin files, fewer than batch_num {batch_num}.")
    known_size = int(np.prod([dim for dim in dims if dim != -1])) * dtype.itemsize
    for path in files:
        size = path.stat().st_size
        fits = size % known_size == 0 and size > 0 if -1 in dims else size == known_size
        if not fits:
            raise AmctError(f"The size of {path} is {size} bytes, but one batch of {name} with shape "
                            f"{','.join(map(str, dims))} and data type {dtype} is {known_size} bytes.")
    return files


def _excluded_nodes(model: onnx.ModelProto, config: QuantConfig) -> list[str]:
    names = {node.name for node in model.graph.node}
    unknown = [layer for layer in config.skip_layers if layer not in names]
    if unknown:
        raise AmctError(f"skip_layers {', '.join(unknown)} are not layers of the model.")
    by_type = [node.name for node in model.graph.node if node.op_type in config.skip_layer_types]
    return [*config.skip_layers, *by_type]


class _Batches(CalibrationDataReader):
    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self._batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _write_record(path: Path, model: onnx.ModelProto, config: QuantConfig, batch_num: int, excluded: list[str]) -> None:
    quantized = [node.name for node in model.graph.node
                 if node.op_type in QUANTIZABLE_OP_TYPES and node.name not in excluded]
    record = {
        "batch_num": batch_num,
        "activation_offset": config.activation_offset,
        "skip_layers": excluded,
        "quantized_layers": quantized,
    }
    path.write_text(json.dumps(record, indent=2))
