"""The MagicMind build configuration and the command lines the MLU stages run, built in one place.

`modeldeploy plan` shows them; the Jobs run them. BuilderConfig keys follow docs/magicmind.md
§1.4, the build flow §1.5-1.6, mm_run's flags §3.2 (MagicMind 1.x) and §3.3 (0.13/0.14).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BUILD_PROGRAM = ("python3", "-m", "modeldeploy_jobs.magicmind_build")
EVALUATED_DEVICE = "0"
# MagicMind 1.0 renamed mm_run's --batch to --batch_size, and its parser aborts on unknown flags.
FIRST_BATCH_SIZE_VERSION = (1, 0)

FLOAT_MODES = {"fp32": "force_float32", "fp16": "force_float16"}
QUANTIZED_BITS = {"int8": "qint8", "int16": "qint16"}


def precision_mode(precision: str, options: Mapping[str, Any]) -> str:
    if precision in FLOAT_MODES:
        return FLOAT_MODES[precision]
    return f"{QUANTIZED_BITS[precision]}_mixed_{options['quantizedMixed']}"


def quantized(precision: str) -> bool:
    return precision in QUANTIZED_BITS


def normalisation(preprocess: Mapping[str, Any]) -> dict[str, list[float]]:
    """insert_bn_before_firstnode's mean and var in pixel units: (p*scale - m)/s = (p - m/scale)/sqrt((s/scale)^2)."""
    scale = preprocess.get("scale", 1 / 255)
    return {
        "mean": [round(m / scale, 6) for m in preprocess.get("mean", [0.0, 0.0, 0.0])],
        "var": [round((s / scale) ** 2, 6) for s in preprocess.get("std", [1.0, 1.0, 1.0])],
    }


def builder_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The BuilderConfig JSON of a compile task (parse_from_string takes it whole)."""
    options = config["options"]
    precision = config["precision"]
    arch = config["device"]
    # The quantization keys are written for every mode, as Cambricon's sample does; float modes ignore them.
    built: dict[str, Any] = {
        "archs": [{arch: options["clusterNum"]}] if options.get("clusterNum") else [arch],
        "precision_config": {
            "precision_mode": precision_mode(precision, options),
            "activation_quant_algo": options["activationQuantAlgo"],
            "weight_quant_granularity": options["weightQuantGranularity"],
        },
        "opt_config": {"type64to32_conversion": True, "conv_scale_fold": True},
    }
    if options["computationPreference"] != "auto":  # MagicMind's default, which the sample leaves unset
        built["computation_preference"] = options["computationPreference"]
    dims = [list(item["shape"][1:]) for item in config["inputs"]]
    dynamic = config.get("dynamicBatch")
    built["graph_shape_mutable"] = dynamic is not None
    if dynamic is not None:
        built["dim_range"] = {
            str(index): {"min": [dynamic["min"], *shape], "max": [dynamic["max"], *shape]}
            for index, shape in enumerate(dims)
        }
    if config.get("inputLayout"):
        built["convert_input_layout"] = config["inputLayout"]
    if config.get("insertBn"):
        # The model takes uint8 HWC pixels, as the prepare stage's raw variant writes them.
        built["convert_input_layout"] = {"0": {"src": "NCHW", "dst": "NHWC"}}
        built["insert_bn_before_firstnode"] = {"0": config["insertBn"]}
    return built


@dataclass(frozen=True)
class Workspace:
    """Paths the commands name, relative to the stage's working directory unless a Job says otherwise."""

    model: str = "model.onnx"
    builder_config: str = "config/builder_config.json"
    calibration_data: str = "calibration"  # one .npy per input, samples on the first axis
    magicmind_model: str = "outputs/model.mm"


def build_command(config: Mapping[str, Any], workspace: Workspace) -> list[str]:
    command = [
        *BUILD_PROGRAM,
        "--onnx", workspace.model,
        "--builder_config", workspace.builder_config,
        "--input_dims", *(",".join(str(d) for d in _batched(item["shape"], config)) for item in config["inputs"]),
        "--magicmind_model", workspace.magicmind_model,
    ]
    if quantized(config["precision"]):
        command += [
            "--calibration_data", workspace.calibration_data,
            "--calibration_algo", config["options"]["calibrationAlgorithm"],
        ]
    return command


def _batched(shape: list[int], config: Mapping[str, Any]) -> list[int]:
    """The network's input dims; a shape-mutable network is built (and calibrated) at its smallest batch."""
    dynamic = config.get("dynamicBatch")
    return [dynamic["min"] if dynamic else config["batchSize"], *shape[1:]]


def mm_run_command(config: Mapping[str, Any], model: str, version: str) -> list[str]:
    """mm_run on one device and thread: `iterations`, or at least durationSeconds of runs."""
    major_minor = tuple(int(part) for part in version.split(".")[:2])
    batch_flag = "--batch_size" if major_minor >= FIRST_BATCH_SIZE_VERSION else "--batch"
    budget = config["performance"]
    command = [
        "mm_run", "--magicmind_model", model, batch_flag, str(config["batchSize"]),
        "--devices", EVALUATED_DEVICE, "--threads", "1",
    ]
    if "durationSeconds" in budget:
        return command + ["--iterations", "1", "--duration", str(round(budget["durationSeconds"] * 1000))]
    return command + ["--iterations", str(budget["iterations"])]


def commands(kind: str, config: Mapping[str, Any], version: str) -> list[list[str]]:
    if kind == "compile":
        return [build_command(config, Workspace())]
    if kind == "evaluate":
        return [["cnmon", "info"], mm_run_command(config, "model.mm", version)]
    return []


def files(kind: str, config: Mapping[str, Any]) -> dict[str, str]:
    if kind == "compile":
        return {Workspace().builder_config: json.dumps(builder_config(config), indent=2) + "\n"}
    return {}
