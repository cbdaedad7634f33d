"""The qint* precision modes (docs/magicmind.md §1.4, §1.5) as onnxruntime QDQ post-training quantization.

`quantize_static` runs on the calibration batches `mm.Calibrator.calibrate` recorded: the linear algorithm is
MinMax calibration, eqnm is Entropy; qint8 modes quantize to QInt8 and qint16 modes to QInt16 (which onnxruntime
supports for activations and weights alike, moving the model to opset 21 for it); `per_axis` weight granularity is
per-channel; symmetric activation quantization has no zero point. Weights are always symmetric. Conv,
ConvTranspose, Gemm and MatMul are quantized; other ops stay float, like MagicMind's "mixed" half of the mode.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from magicmind_standins.engine import ONNXRUNTIME_ERRORS
from magicmind_standins.mm_file import QuantizationInfo

QUANTIZABLE_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")
PER_CHANNEL_OPSET = 13  # DequantizeLinear's axis attribute
CALIBRATION_METHODS = {"linear": CalibrationMethod.MinMax, "eqnm": CalibrationMethod.Entropy}
QUANT_TYPES = {"qint8": QuantType.QInt8, "qint16": QuantType.QInt16}


class QuantizationError(ValueError):
    """onnxruntime could not quantize the network; the message says why."""


@dataclass(frozen=True)
class QuantSettings:
    precision_mode: str  # a qint* mode
    algorithm: str  # linear | eqnm
    per_channel: bool
    activation_symmetric: bool


def quantize(model: onnx.ModelProto, batches: list[dict[str, np.ndarray]],
             settings: QuantSettings) -> tuple[onnx.ModelProto, QuantizationInfo]:
    """The QDQ model calibrated on `batches` (network input name → array) and what was done."""
    quant_type = QUANT_TYPES[settings.precision_mode.split("_")[0]]
    method = CALIBRATION_METHODS[settings.algorithm]
    with tempfile.TemporaryDirectory(prefix="magicmind-standin-") as directory, _quiet():
        output = Path(directory) / "quantized.onnx"
        try:
            quantize_static(
                _with_per_channel_opset(model), output, _Batches(batches),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZABLE_OP_TYPES),
                per_channel=settings.per_channel,
                activation_type=quant_type,
                weight_type=quant_type,
                calibrate_method=method,
                extra_options={"ActivationSymmetric": settings.activation_symmetric, "WeightSymmetric": True},
            )
        except (ValueError, RuntimeError, *ONNXRUNTIME_ERRORS) as error:
            raise QuantizationError(f"onnxruntime could not quantize the network: {error}") from None
        quantized = onnx.load(output)
    return quantized, QuantizationInfo(
        algorithm=settings.algorithm,
        calibration_method=method.name,
        quant_type=quant_type.name,
        per_channel=settings.per_channel,
        activation_symmetric=settings.activation_symmetric,
        calibration_batches=len(batches),
    )


def _with_per_channel_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)
    if opset >= PER_CHANNEL_OPSET:
        return model
    try:
        return version_converter.convert_version(model, PER_CHANNEL_OPSET)
    except RuntimeError as error:  # the converter's failed assertions
        raise QuantizationError(f"cannot convert the network from opset {opset} to {PER_CHANNEL_OPSET} for QDQ "
                                f"quantization: {error}") from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantizer prints progress to stdout and advice as warnings; keep stdout for the caller."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logging.disable(previous)


class _Batches(CalibrationDataReader):
    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self._batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)
