"""Cambricon MLU: MagicMind build with calibration, mm_run and runtime evaluation (docs/magicmind.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from modeldeploy import images
from modeldeploy.backends import (
    RAW_UINT8_BINS,
    TENSORS,
    TENSORS_NHWC,
    Backend,
    Config,
    Device,
    FieldErrors,
    Options,
    magicmind_tools,
)
from modeldeploy.spec import ModelDeploymentSpec, Preprocess, Target, TensorSpec

MAGICMIND_VERSION = "1.7.0"
MAGICMIND_RELEASE = r"\d+\.\d+\.\d+"


class MagicMindOptions(Options):
    computation_preference: Literal["auto", "fast", "high_precision"] = "auto"
    cluster_num: list[int] | None = Field(default=None, min_length=1, max_length=8)
    quantized_mixed: Literal["float16", "float32"] = Field(
        default="float16", description="Precision of the layers left unquantized: qint8_mixed_<this>."
    )
    weight_quant_granularity: Literal["per_tensor", "per_axis"] = "per_tensor"
    activation_quant_algo: Literal["symmetric", "asymmetric"] = "symmetric"
    calibration_algorithm: Literal["linear", "eqnm"] = "linear"
    insert_bn: bool = Field(default=False, description="Fold mean/std into the model; the input becomes uint8 NHWC.")
    input_layout: Literal["NCHW", "NHWC"] | None = Field(
        default=None,
        exclude_if=lambda layout: layout is None,
        description="The layout the built model takes its image inputs in, when not the network's own "
        "(source.inputs[].layout): BuilderConfig convert_input_layout, as build_param.py's --input_layout. The "
        "evaluation data is the preprocessed float images in that layout; calibration data stays in the network's.",
    )


def _card(card: str) -> Device:
    return Device(
        name=card,
        # With --enable-device-type (the shipped default) the device plugin names the resource after the
        # model's prefix, MLU370-X4 -> cambricon.com/mlu370; operator config resourceNames maps it to
        # plain cambricon.com/mlu for a plugin without device types (docs/magicmind.md §6.1).
        resource=f"cambricon.com/{card.split('-', 1)[0].lower()}",
        tolerations=({"key": "cambricon.com/mlu", "operator": "Exists", "effect": "NoSchedule"},),
        env={"NEUWARE_HOME": "/usr/local/neuware"},  # where mm_run and the runtime libraries live in the image
    )


DEVICES = {card: _card(card) for card in ("MLU370-S4", "MLU370-X4", "MLU370-X8")}
ARCHS = {"MLU370-S4": "mtp_372", "MLU370-X4": "mtp_372", "MLU370-X8": "mtp_372"}


def check(target: Target, spec: ModelDeploymentSpec) -> FieldErrors:
    options = MagicMindOptions.model_validate(target.options)
    errors: FieldErrors = []
    if options.insert_bn:
        preprocess = spec.dataset.preprocess if spec.dataset else None
        if preprocess is None or len(preprocess.mean) != 3:
            errors.append(("options.insertBn", "insertBn folds 3-channel mean/std from dataset.preprocess"))
        images = [item for item in spec.source.inputs if len(item.shape) == 4 and item.shape[1] == 3]
        if len(images) != len(spec.source.inputs):
            shapes = ", ".join(f"{item.name} {item.shape}" for item in spec.source.inputs)
            errors.append(("options.insertBn", (f"insertBn turns a 3-channel NCHW image input into uint8 NHWC; the "
                                                f"model's inputs are {shapes}")))
    if options.input_layout is not None:
        errors += _input_layout_errors(options, spec)
    if options.activation_quant_algo == "asymmetric" and options.calibration_algorithm == "eqnm":
        errors.append(("options.calibrationAlgorithm", "eqnm works only with symmetric activation quantization"))
    return errors


IMAGE_DATASETS = ("imagenet", "cifar100", "digits")


def _input_layout_errors(options: MagicMindOptions, spec: ModelDeploymentSpec) -> FieldErrors:
    if options.insert_bn and options.input_layout != "NHWC":
        return [("options.inputLayout", "insertBn builds a model that takes uint8 NHWC: inputLayout can only be NHWC")]
    if len(spec.source.inputs) != 1 or spec.source.inputs[0].layout not in ("NCHW", "NHWC"):
        return [("options.inputLayout", ("inputLayout converts the layout of one image input (source.inputs[0] with "
                                        "layout NCHW or NHWC)"))]
    if spec.dataset is not None and spec.dataset.kind not in IMAGE_DATASETS:
        return [("options.inputLayout", (f"inputLayout feeds the model preprocessed images in another layout; a "
                                         f"{spec.dataset.kind} dataset holds no images (use {', '.join(IMAGE_DATASETS)})"))]
    return []


def converted_layout(target: Target, spec: ModelDeploymentSpec) -> str | None:
    """The layout the built model takes its float image input in, when the target asks for another than the
    network's; None otherwise (insertBn converts its uint8 input itself)."""
    options = MagicMindOptions.model_validate(target.options)
    if options.insert_bn or options.input_layout is None or len(spec.source.inputs) != 1:
        return None
    return options.input_layout if options.input_layout != spec.source.inputs[0].layout else None


def build_config(target: Target, spec: ModelDeploymentSpec) -> Config:
    """The model inputs (for input dims and dim_range), the input layout the model is built to take, and insertBn's
    mean and var from the preprocessing."""
    config: dict = {"inputs": [item.model_dump(mode="json", by_alias=True) for item in spec.source.inputs]}
    layout = converted_layout(target, spec)
    if layout is not None:
        config["inputLayout"] = {"0": {"src": spec.source.inputs[0].layout, "dst": layout}}
    if MagicMindOptions.model_validate(target.options).insert_bn and spec.dataset is not None:
        preprocess = (spec.dataset.preprocess or Preprocess()).model_dump(mode="json", by_alias=True)
        config["insertBn"] = magicmind_tools.normalisation(preprocess)
    return config


def data_variant(target: Target) -> str:
    options = MagicMindOptions.model_validate(target.options)
    if options.insert_bn:
        return RAW_UINT8_BINS
    return TENSORS_NHWC if options.input_layout == "NHWC" else TENSORS


def commands(kind: str, config: Config, inputs: Sequence[TensorSpec]) -> list[list[str]]:
    """The tools' command lines, with the flags of the release the target names (mm_run's batch flag changed)."""
    return magicmind_tools.commands(kind, config, config.get("toolchainVersion", MAGICMIND_VERSION))


def toolchain_of(release: str) -> str:
    return f"magicmind-{release}"


def image_of(release: str) -> str:
    return images.magicmind_jobs_image(release)


MAGICMIND = Backend(
    name="magicmind",
    precisions=frozenset({"fp32", "fp16", "int8", "int16"}),
    toolchain=toolchain_of(MAGICMIND_VERSION),
    image=image_of(MAGICMIND_VERSION),
    release=MAGICMIND_VERSION,
    release_pattern=MAGICMIND_RELEASE,
    release_examples="0.13.0 or 1.7.0",
    toolchain_of=toolchain_of,
    image_of=image_of,
    options=MagicMindOptions,
    devices=DEVICES,
    runs_as_non_root=False,
    # MagicMind calibrates on the MLU while it builds the model.
    calibrates_in_compile=True,
    build_target=ARCHS.__getitem__,  # one model per MLU architecture serves every card of it
    device_stages=frozenset({"compile", "evaluate"}),
    data_variant=data_variant,
    check=check,
    build_config=build_config,
    commands=commands,
    files=magicmind_tools.files,
)
