"""OpenVINO on CPU: NNCF post-training quantization, IR with the batch shape set, precision hints."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modeldeploy_jobs.backends import InputSpec, Session
from modeldeploy_jobs.data import PreparedData
from modeldeploy_jobs.stage import StageError, StageReason

PRECISION_HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}  # int8 runs its quantized IR as the plugin decides


def versions() -> dict[str, str]:
    import nncf
    import openvino

    return {"openvino": openvino.get_version(), "nncf": nncf.__version__}


def calibrate(
    model: Path, data: PreparedData, indices: Sequence[int], config: Mapping[str, Any], outputs_dir: Path
) -> dict[str, Path]:
    import nncf
    import openvino as ov

    source = ov.Core().read_model(str(model))
    dataset = nncf.Dataset(list(indices), lambda index: data.take([index]))
    parameters = {}
    if config["calibration"]["method"] == "minmax":
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        parameters["advanced_parameters"] = AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
        )
    try:
        quantized = nncf.quantize(source, dataset, subset_size=len(indices), **parameters)
    except Exception as error:  # noqa: BLE001 - NNCF raises many types
        raise StageError(StageReason.MODEL_UNSUPPORTED, f"NNCF could not quantize the model: {error}") from None
    target = outputs_dir / "model.xml"
    ov.save_model(quantized, str(target), compress_to_fp16=False)
    return {"model.xml": target, "model.bin": target.with_suffix(".bin")}


def compile(model: Path, config: Mapping[str, Any], outputs_dir: Path, workdir: Path) -> tuple[dict[str, Path], dict]:
    import openvino as ov

    core = ov.Core()
    network = core.read_model(str(model))
    network.reshape({item.get_any_name(): _shape(item, config) for item in network.inputs})
    precision = config["precision"]
    hints = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision]} if precision in PRECISION_HINTS else {}
    try:
        compiled = core.compile_model(network, "CPU", hints)
    except RuntimeError as error:
        raise StageError(StageReason.MODEL_UNSUPPORTED, f"OpenVINO cannot compile the model for CPU: {error}") from None
    target = outputs_dir / "model.xml"
    ov.save_model(network, str(target), compress_to_fp16=config["precision"] in ("fp16", "bf16"))
    runtime = outputs_dir / "runtime.json"
    runtime.write_text(json.dumps({"hints": hints}, indent=2, sort_keys=True))
    metrics = {"inferencePrecision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()}
    return {"model.xml": target, "model.bin": target.with_suffix(".bin"), "runtime.json": runtime}, metrics


def _shape(item: Any, config: Mapping[str, Any]) -> Any:
    import openvino as ov

    dims = list(item.get_partial_shape())
    if any(dim.is_dynamic for dim in dims[1:]):
        raise StageError(StageReason.MODEL_UNSUPPORTED, f"input {item.get_any_name()} has dynamic dimensions besides "
                         "the batch: OpenVINO compiles fixed shapes (fix them in spec.source.inputs)")
    dynamic = config.get("dynamicBatch")
    batch = ov.Dimension(dynamic["min"], dynamic["max"]) if dynamic else ov.Dimension(config["batchSize"])
    return ov.PartialShape([batch, *dims[1:]])


def load(model: Path, config: Mapping[str, Any], threads: int) -> Session:
    import openvino as ov

    options = config["options"]
    runtime_file = model.parent / "runtime.json"  # absent for the converted ONNX model
    runtime = json.loads(runtime_file.read_text()) if runtime_file.exists() else {}
    properties = {
        **runtime.get("hints", {}),
        "INFERENCE_NUM_THREADS": options.get("inferenceThreads") or threads,
        "PERFORMANCE_HINT": options["performanceHint"].upper(),
    }
    if options.get("numStreams"):
        properties["NUM_STREAMS"] = options["numStreams"]
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(model)), "CPU", properties)
    request = compiled.create_infer_request()
    outputs = len(compiled.outputs)

    def infer(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        request.infer(dict(inputs))
        return [request.get_output_tensor(index).data for index in range(outputs)]

    specs = [
        InputSpec(
            item.get_any_name(),
            tuple(None if dim.is_dynamic else dim.get_length() for dim in item.get_partial_shape()),
            np.dtype(item.get_element_type().to_dtype()),
        )
        for item in compiled.inputs
    ]
    effective = {
        "inferencePrecision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
        "threads": str(compiled.get_property("INFERENCE_NUM_THREADS")),
        "streams": str(compiled.get_property("NUM_STREAMS")),
    }
    return Session(specs, infer, effective)

