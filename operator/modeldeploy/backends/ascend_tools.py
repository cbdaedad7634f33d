"""The command lines and config files the Ascend stages run, built in one place.

`modeldeploy plan` shows them with the relative paths of a `Workspace`; a Job builds them
with its own paths, so what the plan shows is what runs. Flags and formats follow
docs/ascend.md: atc §1.2, AIPP §1.4, amct_onnx §2.1-2.2, ais_bench §3.2, npu-smi §4.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NPU_SMI_INFO = ("npu-smi", "info")
ATC_VERSION = ("atc", "--version")
AIS_BENCH = ("python3", "-m", "ais_bench")
# The device plugin exposes the NPUs a pod was allocated as logical devices 0, 1, ... in the container (§5.3);
# accuracy runs on the first.
EVALUATED_DEVICE = "0"

# ATC's default is force_fp16, which the guides rely on by leaving the flag out; int8 keeps it
# for the layers AMCT left unquantized.
PRECISION_MODES: Mapping[str, str | None] = {
    "fp16": None,
    "int8": None,
    "fp32": "force_fp32",
    "mixed": "allow_mix_precision",
    "bf16": "allow_fp32_to_bf16",
}


@dataclass(frozen=True)
class ModelInput:
    name: str
    dims: tuple[int, ...]  # one sample's shape, without the batch axis
    data_type: str = "float32"
    layout: str = "NCHW"  # NCHW, NHWC or ND


@dataclass(frozen=True)
class Workspace:
    """The paths a stage's commands name, relative to its working directory unless a Job says otherwise."""

    model: str = "model.onnx"  # what the stage starts from: an ONNX model, or the .om to evaluate
    output: str = "outputs/model"  # atc --output and amct_onnx --save_path prefix
    data: str = "data"  # one directory of .bin files per model input
    config: str = "config"  # generated quant.cfg and aipp.cfg
    results: str = "results"  # ais_bench --output

    def data_dir(self, model_input: ModelInput) -> str:
        return f"{self.data}/{model_input.name}"

    @property
    def quant_cfg(self) -> str:
        return f"{self.config}/quant.cfg"

    @property
    def aipp_cfg(self) -> str:
        return f"{self.config}/aipp.cfg"


def inputs_of(config: Mapping[str, Any]) -> list[ModelInput]:
    """The model inputs a calibrate or compile task's config names (the spec's source.inputs)."""
    return [
        ModelInput(item["name"], tuple(item["shape"][1:]), item.get("dtype", "float32"), item.get("layout", "NCHW"))
        for item in config["inputs"]
    ]


def _shape(inputs: Sequence[ModelInput], batch: int | str) -> str:
    return ";".join(f"{item.name}:{','.join(str(d) for d in (batch, *item.dims))}" for item in inputs)


# ---------------------------------------------------------------- amct_onnx


def calibration_batches(samples: int, batch_size: int) -> tuple[int, int]:
    """(samples per .bin file, number of files): AMCT reads one batch per file (docs/ascend.md §2.1)."""
    batch = min(batch_size, samples)
    return batch, max(1, samples // batch)


# quant.cfg keys the Ascend options set, by option name, and AMCT's value for each when the file leaves it out.
AMCT_KEYS = {"activation_offset": "activationOffset", "joint_quant": "jointQuant"}
AMCT_DEFAULTS = {"activation_offset": True, "joint_quant": False}


def quant_cfg(options: Mapping[str, Any], batch_num: int) -> str:
    """AMCT's simple config (docs/ascend.md §2.2): batch_num, then each key whose option is not AMCT's default."""
    lines = [f"batch_num : {batch_num}"]
    for key, option in AMCT_KEYS.items():
        value = options.get(option, AMCT_DEFAULTS[key])  # an option left at its default may be left out of the dump
        if value != AMCT_DEFAULTS[key]:
            lines.append(f"{key} : {str(value).lower()}")
    lines += [f'skip_layers : "{layer}"' for layer in options["skipLayers"]]
    return "\n".join(lines) + "\n"


def amct_command(inputs: Sequence[ModelInput], workspace: Workspace, batch: int) -> list[str]:
    """AMCT over .bin files of `batch` samples each (docs/ascend.md §2.1)."""
    return [
        "amct_onnx", "calibration",
        f"--model={workspace.model}",
        f"--save_path={workspace.output}",
        f"--input_shape={_shape(inputs, batch)}",
        f"--data_dir={';'.join(workspace.data_dir(item) for item in inputs)}",
        f"--data_types={';'.join(item.data_type for item in inputs)}",
        f"--calibration_config={workspace.quant_cfg}",
    ]


def deploy_model(workspace: Workspace) -> str:
    return f"{workspace.output}_deploy_model.onnx"


# ---------------------------------------------------------------- AIPP


def aipp_fields(
    preprocess: Mapping[str, Any], model_input: Mapping[str, Any], source_side: int | None = None
) -> dict[str, Any]:
    """Static AIPP that takes the prepare stage's uint8 RGB and normalises it on the device.

    The prepare stage computes (pixel * scale - mean) / std; AIPP computes
    (pixel - mean_chn - min_chn) * var_reci_chn, so min_chn = mean / scale and var_reci_chn = scale / std.
    With `source_side`, the host stops after resizing to source_side x source_side and AIPP cuts
    preprocess.crop from the centre, at the offset the host's centre crop uses.
    """
    shape = model_input["shape"]
    if len(shape) != 4:
        # Validation reports this ValueError at the target's options (modeldeploy.validation).
        raise ValueError(f"aipp feeds the model one image per sample, so its input {model_input['name']!r} needs "
                         f"4 dimensions (N, C, H, W or N, H, W, C), but its shape is {shape}")
    dims = shape[1:]
    height, width = (dims[0], dims[1]) if model_input.get("layout") == "NHWC" else (dims[1], dims[2])
    scale = preprocess.get("scale", 1 / 255)
    mean = preprocess.get("mean", [0.0, 0.0, 0.0])
    std = preprocess.get("std", [1.0, 1.0, 1.0])
    fields: dict[str, Any] = {
        "inputFormat": "RGB888_U8",
        "srcImageSizeW": width,
        "srcImageSizeH": height,
        "minChn": [_significant(m / scale) for m in mean],
        "varReciChn": [_significant(scale / s) for s in std],
        "rbuvSwap": preprocess.get("channelOrder") == "BGR",
    }
    if source_side is not None:
        crop = preprocess["crop"]
        start = round((source_side - crop) / 2.0)  # as prepare's centre crop (torchvision's CenterCrop) rounds
        fields.update(srcImageSizeW=source_side, srcImageSizeH=source_side)
        fields["crop"] = {"loadStartPosH": start, "loadStartPosW": start, "cropSizeW": crop, "cropSizeH": crop}
    return fields


def _significant(value: float) -> float:
    """15 significant digits, as the ModelZoo AIPP files write 1/(255*std): 0.0171247538316637."""
    return float(f"{value:.15g}")


def aipp_cfg(fields: Mapping[str, Any]) -> str:
    lines = [
        "aipp_op {",
        "    aipp_mode : static",
        f"    input_format : {fields['inputFormat']}",
        f"    src_image_size_w : {fields['srcImageSizeW']}",
        f"    src_image_size_h : {fields['srcImageSizeH']}",
    ]
    crop = fields.get("crop")  # absent: the host cropped
    if crop is None:
        lines.append("    crop : false")
    else:
        lines += [
            "    crop : true",
            f"    load_start_pos_h : {crop['loadStartPosH']}",
            f"    load_start_pos_w : {crop['loadStartPosW']}",
            f"    crop_size_w : {crop['cropSizeW']}",
            f"    crop_size_h : {crop['cropSizeH']}",
        ]
    if fields["rbuvSwap"]:
        lines.append("    rbuv_swap_switch : true")
    lines += [f"    min_chn_{i} : {value}" for i, value in enumerate(fields["minChn"])]
    lines += [f"    var_reci_chn_{i} : {value}" for i, value in enumerate(fields["varReciChn"])]
    return "\n".join([*lines, "}"]) + "\n"


# ---------------------------------------------------------------- atc


def atc_command(
    config: Mapping[str, Any], inputs: Sequence[ModelInput], workspace: Workspace, soc_version: str
) -> list[str]:
    options = config["options"]
    dynamic = config.get("dynamicBatch")
    command = [
        "atc", "--framework=5",
        f"--model={workspace.model}",
        f"--output={workspace.output}",
        f"--input_format={inputs[0].layout}",
        f"--input_shape={_shape(inputs, -1 if dynamic else config['batchSize'])}",
    ]
    if dynamic:
        command.append(f"--dynamic_batch_size={','.join(str(size) for size in dynamic['gears'])}")
    command.append(f"--soc_version={soc_version}")
    mode = PRECISION_MODES[config["precision"]]
    if mode is not None:
        command.append(f"--precision_mode={mode}")
    if options["aipp"]:
        command.append(f"--insert_op_conf={workspace.aipp_cfg}")
    if options["enableSmallChannel"]:
        command.append("--enable_small_channel=1")
    if options.get("opSelectImplmode"):
        command.append(f"--op_select_implmode={options['opSelectImplmode']}")
    if options.get("outputType"):
        command.append(f"--output_type={options['outputType']}")
    command.append("--log=error")
    return command


def soc_version(device: str) -> str:
    """The --soc_version for a chip name from the spec or from npu-smi's Name column (310P3 -> Ascend310P3)."""
    return device if device.startswith("Ascend") else f"Ascend{device}"


# ---------------------------------------------------------------- ais_bench


def accuracy_command(config: Mapping[str, Any], inputs: Sequence[ModelInput], workspace: Workspace) -> list[str]:
    command = [
        *AIS_BENCH,
        "--model", workspace.model,
        "--input", ",".join(workspace.data_dir(item) for item in inputs),
        "--output", workspace.results,
        "--output_dirname", "accuracy",
        "--outfmt", "TXT",
        "--batchsize", str(config["batchSize"]),
        "--device", EVALUATED_DEVICE,
    ]
    return command + _gear(config)


def evaluated_devices(config: Mapping[str, Any]) -> list[int]:
    """The devices the speed run uses: the target's `devices` NPUs, 0 to devices - 1."""
    return list(range(config["options"].get("devices", 1)))


def speed_command(config: Mapping[str, Any], workspace: Workspace, loop: int | None) -> list[str]:
    """Pure inference on each of the target's devices at once: `loop` iterations per device (from a durationSeconds
    budget when None: shown as ${LOOP}); ais_bench sums the devices' throughputs (§3.5 (d))."""
    budget = config["performance"]
    command = [
        *AIS_BENCH,
        "--model", workspace.model,
        "--output", workspace.results,
        "--output_dirname", "speed",
        "--batchsize", str(config["batchSize"]),
        "--loop", str(loop if loop is not None else budget.get("iterations", "${LOOP}")),
        "--warmup_count", str(budget["warmup"]),
        "--display_all_summary", "true",
        "--device", ",".join(str(device) for device in evaluated_devices(config)),
    ]
    return command + _gear(config)


def _gear(config: Mapping[str, Any]) -> list[str]:
    return ["--dymBatch", str(config["batchSize"])] if config.get("dynamicBatch") else []


# ---------------------------------------------------------------- the plan's view


def commands(kind: str, config: Mapping[str, Any], inputs: Sequence[ModelInput]) -> list[list[str]]:
    """The tool command lines a task of this kind runs, with the default workspace's paths."""
    workspace = Workspace()
    device = config.get("device", "auto")
    if kind == "calibrate":
        batch, _ = calibration_batches(config["calibration"]["samples"], config["options"]["calibrationBatchSize"])
        return [amct_command(inputs, workspace, batch)]
    if kind == "compile":
        if device == "auto":
            return [list(NPU_SMI_INFO), atc_command(config, inputs, workspace, "Ascend${CHIP_NAME}")]
        return [atc_command(config, inputs, workspace, soc_version(device))]
    if kind == "evaluate":
        om = Workspace(model="model.om")
        listed = [list(NPU_SMI_INFO)]
        if config.get("accuracy"):
            listed.append(accuracy_command(config, inputs, om))
        return [*listed, speed_command(config, om, None)]
    return []


def files(kind: str, config: Mapping[str, Any]) -> dict[str, str]:
    """The config files a task of this kind generates, by their workspace path."""
    workspace = Workspace()
    if kind == "calibrate":
        _, batch_num = calibration_batches(config["calibration"]["samples"], config["options"]["calibrationBatchSize"])
        return {workspace.quant_cfg: quant_cfg(config["options"], batch_num)}
    if kind == "compile" and config.get("aipp"):
        return {workspace.aipp_cfg: aipp_cfg(config["aipp"])}
    return {}
