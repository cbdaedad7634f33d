"""Huawei Ascend: AMCT calibration, ATC compile, ais_bench evaluation (docs/ascend.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from modeldeploy import images
from modeldeploy.backends import (
    RAW_UINT8_BINS,
    SAMPLE_BINS,
    Backend,
    Config,
    Device,
    FieldErrors,
    Options,
    ascend_tools,
)
from modeldeploy.spec import Calibration, Dataset, ModelDeploymentSpec, Preprocess, Target, TensorSpec

CANN_VERSION = "8.2.rc1"
# CANN releases: 5.0.1, 6.0.RC1, 8.2.rc1, and pre-releases such as 7.0.RC1.alpha003 or 8.0.RC2.beta1.
CANN_RELEASE = r"\d+\.\d+\.(\d+|rc\d+)(\.(alpha|beta)\d+)?"
CIFAR_SIDE = 32
MAX_DEVICES = 64  # chips of one node: 16 on the largest Ascend servers; ais_bench takes ids up to 255
# The prepare stage's uint8 NHWC samples resized but not cropped, for AIPP to crop on the device.
RAW_UINT8_UNCROPPED_BINS = "raw-uint8-uncropped-bins"


# A node name as quant.cfg quotes it: any text but a quote, a backslash or a control character, which would end the
# string or the line and write a setting of the spec's choosing into the file.
LayerName = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r'^[^"\\\x00-\x1f\x7f]+$')]


class AscendOptions(Options):
    aipp: bool = Field(
        default=False, description="Fold resize/crop output normalisation into the model (uint8 NHWC input)."
    )
    # Options added after task keys were first computed are left out of the dump at their defaults, so the keys of
    # targets that do not use them stay.
    aipp_crop: bool = Field(
        default=False,
        exclude_if=lambda crop: not crop,
        description="AIPP crops on the device (crop, load_start_pos, crop_size): the host only resizes, to "
        "src_image_size, and AIPP cuts dataset.preprocess.crop from the centre, where the host would have cut it.",
    )
    enable_small_channel: bool = False
    op_select_implmode: Literal[
        "high_performance", "high_precision", "high_performance_for_all", "high_precision_for_all"
    ] | None = None
    output_type: Literal["FP32", "FP16", "UINT8", "INT8"] | None = None
    activation_offset: bool = Field(
        default=True, description="AMCT's activation_offset: asymmetric activation quantization (AMCT's default)."
    )
    joint_quant: bool = Field(
        default=False,
        exclude_if=lambda joint: not joint,
        description="AMCT's joint_quant: quantize the inputs of element-wise operators jointly (AMCT's default: off).",
    )
    skip_layers: list[LayerName] = Field(default_factory=list, description="Layers AMCT leaves unquantized.")
    devices: int = Field(
        default=1,
        ge=1,
        le=MAX_DEVICES,
        exclude_if=lambda devices: devices == 1,
        description="NPU chips of one node the evaluate stage runs on at once: its Job requests this many of the "
        "device's resource (huawei.com/Ascend310: 4 for an Atlas 300I card's four chips), and the speed run is "
        "ais_bench --device 0,...,devices-1, whose throughput is the sum over the devices (each device's figure "
        "is kept too). Accuracy is measured on device 0.",
    )
    calibration_batch_size: int = Field(
        default=16,
        ge=1,
        le=4096,
        description="Samples per AMCT calibration batch (one .bin file each); quant.cfg's batch_num is "
        "calibration.samples / calibrationBatchSize.",
    )


def _device(soc: str, resource: str, precisions: set[str] | None = None) -> Device:
    family = resource.rsplit("/", 1)[1]
    return Device(
        name=soc,
        resource=resource,
        # Applied by the Ascend device plugin itself, with the npu-smi chip name.
        node_selector={"node.kubernetes.io/npu.chip.name": soc.removeprefix("Ascend")},
        tolerations=({"key": f"huawei.com/{family}", "operator": "Exists", "effect": "NoSchedule"},),
        precisions=frozenset(precisions) if precisions is not None else None,
    )


WITHOUT_BF16 = {"fp32", "fp16", "mixed", "int8"}

DEVICES = {
    device.name: device
    for device in [
        _device("Ascend310", "huawei.com/Ascend310", WITHOUT_BF16),
        *(_device(f"Ascend310P{n}", "huawei.com/Ascend310P", WITHOUT_BF16) for n in (1, 2, 3, 4, 5, 7)),
        *(_device(soc, "huawei.com/Ascend910", WITHOUT_BF16)
          for soc in ("Ascend910A", "Ascend910ProA", "Ascend910ProB", "Ascend910PremiumA")),
        *(_device(f"Ascend910B{n}", "huawei.com/Ascend910") for n in ("1", "2", "2C", "3", "4", "4_1")),
        # The chip is read from npu-smi inside the Job, so compile runs on the NPU node too; which NPU
        # resource to request comes from the target's or the installation's placement.
        Device(name="auto", resource=None, stages=frozenset({"compile", "evaluate"})),
    ]
}


def check(target: Target, spec: ModelDeploymentSpec) -> FieldErrors:
    options = AscendOptions.model_validate(target.options)
    errors: FieldErrors = []
    if options.enable_small_channel and not options.aipp:
        errors.append(("options.enableSmallChannel", "enableSmallChannel works only with static AIPP (aipp: true)"))
    if options.aipp:
        dataset = spec.dataset
        preprocess = dataset.preprocess if dataset else None
        if dataset is not None and dataset.kind in ("tensors", "synthetic"):
            errors.append(("options.aipp", (f"aipp feeds the model uint8 images, but a {dataset.kind} dataset is "
                                            "already float tensors: use an image dataset or set aipp: false")))
        elif preprocess is None:
            errors.append(("options.aipp", "aipp folds the dataset's preprocessing into the model: add dataset.preprocess"))
        elif len(preprocess.mean) != 3:
            errors.append(("options.aipp", "aipp needs 3-channel mean and std in dataset.preprocess"))
        if any(inp.layout not in ("NCHW", "NHWC") for inp in spec.source.inputs):
            errors.append(("options.aipp", "aipp needs NCHW or NHWC model inputs"))
        if len(spec.source.inputs) != 1:
            errors.append(("options.aipp", "aipp applies to a model with one image input"))
        elif spec.source.inputs[0].dtype != "float32":
            errors.append(("options.aipp", (f"aipp replaces a float32 image input, but input "
                                            f"{spec.source.inputs[0].name!r} is {spec.source.inputs[0].dtype}")))
    if options.aipp_crop:
        errors += _aipp_crop_errors(options, spec)
    if "int8" in target.precisions:
        samples = (spec.calibration or Calibration()).samples
        batch = options.calibration_batch_size
        if samples > batch and samples % batch:
            errors.append(("options.calibrationBatchSize", (
                f"AMCT calibrates on whole batches: calibration.samples ({samples}) is not a multiple of "
                f"calibrationBatchSize ({batch}), so {samples % batch} samples would be left out")))
    return errors


def _aipp_crop_errors(options: AscendOptions, spec: ModelDeploymentSpec) -> FieldErrors:
    if not options.aipp:
        return [("options.aippCrop", "aippCrop crops in AIPP: set aipp: true")]
    dataset = spec.dataset
    if dataset is None or dataset.preprocess is None:
        return []  # reported at options.aipp
    crop = dataset.preprocess.crop
    if crop is None:
        return [("options.aippCrop", "aippCrop moves dataset.preprocess.crop onto the device: set preprocess.crop")]
    side = resized_side(dataset)
    if side is None:
        return [("options.aippCrop", ("aippCrop needs every image at one size before the crop (AIPP's static "
                                      "src_image_size): set dataset.preprocess.resizeMode: exact"))]
    if side <= crop:
        return [("options.aippCrop", (f"AIPP cuts the {crop}x{crop} preprocess.crop from the {side}x{side} resized "
                                      f"images: it must be smaller than {side}"))]
    model_input = spec.source.inputs[0]
    dims = model_input.shape[1:]
    if len(dims) != 3:
        return []  # reported at options.aipp
    height, width = (dims[0], dims[1]) if model_input.layout == "NHWC" else (dims[1], dims[2])
    if (height, width) != (crop, crop):
        return [("options.aippCrop", (f"AIPP hands the model its {crop}x{crop} crop, but input {model_input.name!r} "
                                      f"is {height}x{width}: preprocess.crop must be the model's input size"))]
    return []


def resized_side(dataset: Dataset) -> int | None:
    """The side of the square images the host hands AIPP when it only resizes; None when their size varies."""
    preprocess = dataset.preprocess or Preprocess()
    if dataset.kind == "cifar100":  # 32x32 images: a shorter-side resize keeps them square
        return preprocess.resize or CIFAR_SIDE
    if preprocess.resize is not None and preprocess.resize_mode == "exact":
        return preprocess.resize
    return None


def build_config(target: Target, spec: ModelDeploymentSpec) -> Config:
    """The model inputs the tools' --input_shape names, and the AIPP fields from the dataset's preprocessing.

    The options calibrate and compile see leave out `devices`, which only says where evaluate runs: a target's
    .om files are the same whatever number of chips measures them, and are built once."""
    inputs = [item.model_dump(mode="json", by_alias=True) for item in spec.source.inputs]
    options = AscendOptions.model_validate(target.options)
    built = {"inputs": inputs, "options": options.model_dump(mode="json", by_alias=True, exclude={"devices"})}
    if not options.aipp or spec.dataset is None:
        return built
    preprocess = (spec.dataset.preprocess or Preprocess()).model_dump(mode="json", by_alias=True)
    source_side = resized_side(spec.dataset) if options.aipp_crop else None
    return {**built, "aipp": ascend_tools.aipp_fields(preprocess, inputs[0], source_side)}


def device_count(target: Target, stage: str) -> int:
    """The chips a Job requests: `devices` for evaluate, one for a compile that reads the chip (device: auto)."""
    return AscendOptions.model_validate(target.options).devices if stage == "evaluate" else 1


def commands(kind: str, config: Config, inputs: Sequence[TensorSpec]) -> list[list[str]]:
    spec_inputs = {"inputs": [item.model_dump(mode="json", by_alias=True) for item in inputs]}
    return ascend_tools.commands(kind, config, ascend_tools.inputs_of(spec_inputs))


def data_variant(target: Target) -> str:
    options = AscendOptions.model_validate(target.options)
    if not options.aipp:
        return SAMPLE_BINS
    return RAW_UINT8_UNCROPPED_BINS if options.aipp_crop else RAW_UINT8_BINS


def toolchain_of(release: str) -> str:
    return f"cann-{release}"


def image_of(release: str) -> str:
    return images.ascend_jobs_image(release)


ASCEND = Backend(
    name="ascend",
    precisions=frozenset({"fp32", "fp16", "bf16", "mixed", "int8"}),
    toolchain=toolchain_of(CANN_VERSION),
    image=image_of(CANN_VERSION),
    release=CANN_VERSION,
    release_pattern=CANN_RELEASE,
    release_examples="5.0.1, 6.0.RC1, 6.3.RC1 or 8.2.rc1",
    toolchain_of=toolchain_of,
    image_of=image_of,
    options=AscendOptions,
    devices=DEVICES,
    runs_as_non_root=False,
    data_variant=data_variant,
    check=check,
    build_config=build_config,
    commands=commands,
    files=ascend_tools.files,
    device_count=device_count,
)
