"""ONNX Runtime on CPU: static QDQ quantization, fixed batch shapes, an optimized model saved."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modeldeploy_jobs.backends import InputSpec, Session
from modeldeploy_jobs.data import PreparedData
from modeldeploy_jobs.stage import StageError, StageReason

CALIBRATION_METHODS = {"auto": "MinMax", "minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
# A saved model optimized at "all" carries layout transforms for the CPU it was made on, so the saved
# model stops at "extended"; evaluation applies the configured level when it loads the model.
SAVED_LEVEL_CAP = "extended"


def versions() -> dict[str, str]:
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__}


def calibrate(
    model: Path, data: PreparedData, indices: Sequence[int], config: Mapping[str, Any], outputs_dir: Path
) -> dict[str, Path]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.samples: Iterator[int] = iter(indices)

        def get_next(self) -> dict[str, np.ndarray] | None:
            index = next(self.samples, None)
            return None if index is None else data.take([index])

        def rewind(self) -> None:
            self.samples = iter(indices)

    options = config["options"]
    prepared = outputs_dir.parent / "preprocessed.onnx"
    target = outputs_dir / "model.onnx"
    try:
        quant_pre_process(str(model), str(prepared))
        quantize_static(
            str(prepared),
            str(target),
            Reader(),
            quant_format=getattr(QuantFormat, options["quantFormat"]),
            per_channel=options["perChannel"],
            activation_type=QuantType.QUInt8 if options["activationType"] == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[config["calibration"]["method"]]),
        )
    except Exception as error:  # noqa: BLE001 - the quantizer raises many types
        raise StageError(StageReason.MODEL_UNSUPPORTED, f"ONNX Runtime could not quantize the model: {error}") from None
    return {"model.onnx": target}


def compile(model: Path, config: Mapping[str, Any], outputs_dir: Path, workdir: Path) -> tuple[dict[str, Path], dict]:
    import onnx
    import onnxruntime

    network = onnx.load(str(model))
    if config.get("dynamicBatch") is None:
        initializers = {item.name for item in network.graph.initializer}
        for value in network.graph.input:
            if value.name not in initializers and value.type.tensor_type.shape.dim:
                value.type.tensor_type.shape.dim[0].dim_value = config["batchSize"]
    shaped = workdir / "shaped.onnx"
    onnx.save(network, str(shaped))
    level = min(config["options"]["graphOptimizationLevel"], SAVED_LEVEL_CAP, key=list(LEVELS).index)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, LEVELS[level])
    target = outputs_dir / "model.onnx"
    options.optimized_model_filepath = str(target)
    try:
        onnxruntime.InferenceSession(str(shaped), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise StageError(StageReason.MODEL_UNSUPPORTED, f"ONNX Runtime cannot load the model: {error}") from None
    return {"model.onnx": target}, {"savedOptimizationLevel": level}


def load(model: Path, config: Mapping[str, Any], threads: int) -> Session:
    import onnxruntime

    options = config.get("options", {})  # the reference run of the source model has none
    settings = onnxruntime.SessionOptions()
    settings.intra_op_num_threads = options.get("intraOpThreads") or threads
    settings.inter_op_num_threads = 1
    settings.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    settings.graph_optimization_level = getattr(
        onnxruntime.GraphOptimizationLevel, LEVELS[options.get("graphOptimizationLevel", "all")]
    )
    session = onnxruntime.InferenceSession(str(model), settings, providers=["CPUExecutionProvider"])

    def infer(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return session.run(None, dict(inputs))

    specs = [
        InputSpec(item.name, tuple(dim if isinstance(dim, int) else None for dim in item.shape), _dtype(item.type))
        for item in session.get_inputs()
    ]
    return Session(specs, infer, {"threads": str(settings.intra_op_num_threads)})


def _dtype(onnx_type: str) -> np.dtype:
    names = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
             "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}
    return np.dtype(names.get(onnx_type, "float32"))
