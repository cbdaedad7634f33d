"""The typed `ModelDeployment` resource: the single source of truth for the CRD, the CLI and the planner.

Field names are the camelCase names users write in YAML. Cross-field rules live in
`x-kubernetes-validations` (CEL) next to the fields they check, so the API server and
`modeldeploy validate` enforce exactly the same rules (see `modeldeploy.validation`).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "modeldeploy.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAME = "mdep"

DEFAULT_ITERATIONS = 100

# Job names are "<deployment>-<stage>-<hash>" and must stay within 63 characters.
MAX_NAME_LENGTH = 40

Precision = Literal["fp32", "fp16", "bf16", "mixed", "int8", "int16"]
QUANTIZED_PRECISIONS: frozenset[str] = frozenset({"int8", "int16"})
FLOAT_PRECISIONS: frozenset[str] = frozenset({"fp32", "fp16", "bf16", "mixed"})

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ARCHITECTURE = r"^((timm|torchvision):[A-Za-z0-9_.]+|python:[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*)$"
SHA256 = r"^[0-9a-f]{64}$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"
STORE_URI = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|file:///.*)$"
# Graph input and output names: they become tool arguments (atc --input_shape=name:dims;...) and directory names.
TENSOR_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"

# Integers are int64, as in the API server and its CEL rules.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
# How deeply a free-form field (architectureArgs, options, affinity) may nest: a core/v1 Affinity needs 10
# levels, and Python's recursion limit is far beyond.
MAX_NESTING = 32

Uri = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2048,
        pattern=r"^((s3|file|https?)://.+|[^:]+)$",
        description="s3://bucket/key, file:///path, http(s)://..., or a path relative to the spec file (local runs only).",
    ),
]
Cel = list[dict[str, str]]


def json_problem(value: Any) -> str | None:
    """What keeps `value` from being a JSON value the API server stores as it is, or None.

    Iterative, so a document nested beyond Python's recursion limit is answered too.
    """
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_NESTING:
            return f"nests deeper than {MAX_NESTING} levels"
        if isinstance(node, dict):
            if not all(isinstance(key, str) for key in node):
                return "has a key that is not a string"
            pending.extend((item, depth + 1) for item in node.values())
        elif isinstance(node, list):
            pending.extend((item, depth + 1) for item in node)
        elif isinstance(node, bool) or node is None or isinstance(node, str):
            continue
        elif isinstance(node, int):
            if not INT64_MIN <= node <= INT64_MAX:
                return "holds an integer outside the 64-bit range"
        elif isinstance(node, float):
            if not math.isfinite(node):
                return f"holds {node}, which JSON cannot"
        else:
            return f"holds a {type(node).__name__}, which is not a JSON value"
    return None


def _json_object(value: dict[str, Any]) -> dict[str, Any]:
    problem = json_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object)]


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry; `field_path` points the error at a child field."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class Model(BaseModel):
    """What users write: strict types, as the CRD's schema checks them (true is not an integer, "8" not a number)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
    )


class StatusModel(Model):
    """What the operator writes: numbers as the stages computed them, timestamps as text."""

    model_config = ConfigDict(strict=False)


# ---------------------------------------------------------------- source


class TensorSpec(Model):
    """A model input: its graph name, shape (-1 marks the batch axis), dtype and layout."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.shape.all(d, d == -1 || d >= 1)",
                    "shape dimensions must be positive, or -1 for the batch axis",
                    ".shape",
                ),
                cel(
                    "self.shape.filter(d, d == -1).size() == 0 || self.shape[0] == -1",
                    "only the first (batch) dimension may be -1",
                    ".shape",
                ),
            ]
        }
    )

    name: str = Field(min_length=1, max_length=128, pattern=TENSOR_NAME, description="Input name in the exported graph.")
    shape: list[Int64] = Field(
        min_length=1,
        max_length=8,
        description="Dimensions, e.g. [-1, 3, 224, 224]; -1 marks the batch axis, set to each batch size when the "
        "model is compiled (ATC's --input_shape, MagicMind's input dims).",
    )
    dtype: Literal["float32", "float16", "uint8", "int8", "int32", "int64"] = Field(
        default="float32", description="The element type the model takes on this input."
    )
    layout: Literal["NCHW", "NHWC", "ND"] = Field(
        default="NCHW",
        description="NCHW or NHWC for an image input, ND for any other tensor (ATC's --input_format).",
    )


class Parity(Model):
    """How close the converted ONNX model must stay to the source model on the same inputs."""

    max_abs_diff: float = Field(
        default=1e-3, gt=0, description="Largest allowed absolute difference between any two corresponding outputs."
    )
    min_cosine: float = Field(
        default=0.9999, ge=0, le=1, description="Smallest allowed cosine similarity between the two models' outputs."
    )


DEFAULT_OPSET = 17  # what a pytorch or torchscript source is exported at when the spec names no opset
Simplifier = Literal["onnxslim", "onnxsim"]
DEFAULT_SIMPLIFIER: Simplifier = "onnxslim"
MODULE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$"


def _default_opset(fields: dict[str, Any]) -> int | None:
    return None if fields.get("format") == "onnx" else DEFAULT_OPSET


class Source(Model):
    """Where the model comes from and how it is exported to ONNX."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.format != 'pytorch' || has(self.architecture)",
                    "a pytorch source needs an architecture", ".architecture"),
                cel("self.format != 'pytorch' || has(self.weights) || self.randomWeights",
                    "a pytorch source needs weights (a state_dict), or randomWeights: true for speed-only runs",
                    ".weights"),
                cel("!(has(self.weights) && self.randomWeights)",
                    "randomWeights excludes weights", ".randomWeights"),
                cel("self.format == 'pytorch' || !self.randomWeights",
                    "randomWeights applies only to a pytorch source", ".randomWeights"),
                cel("!has(self.code) || (has(self.architecture) && self.architecture.startsWith('python:'))",
                    "code applies only to a python:<module>:<callable> architecture", ".code"),
                cel("self.format == 'pytorch' || has(self.uri)",
                    "a torchscript or onnx source needs uri (the model file)", ".uri"),
                cel("self.format == 'pytorch' || !has(self.architecture)",
                    "architecture applies only to a pytorch source", ".architecture"),
                cel("self.format == 'pytorch' || !has(self.weights)",
                    "weights apply only to a pytorch source; use uri for the model file", ".weights"),
                cel("self.format != 'pytorch' || !has(self.uri)",
                    "a pytorch source takes weights, not uri", ".uri"),
                cel("!has(self.weightsLabelOffset) || self.weightsLabelOffset == 0 || has(self.weights)",
                    "weightsLabelOffset applies only to a pytorch source's weights", ".weightsLabelOffset"),
                cel("!has(self.classifier) || (has(self.weightsLabelOffset) && self.weightsLabelOffset > 0)",
                    "classifier names where weightsLabelOffset drops rows: it needs weightsLabelOffset",
                    ".classifier"),
                cel("!has(self.simplifier) || self.simplifier == 'onnxslim' || self.simplify",
                    "simplifier applies only with simplify: true", ".simplifier"),
            ]
        }
    )

    format: Literal["pytorch", "torchscript", "onnx"] = Field(
        description="pytorch: an architecture built in Python and its state_dict (weights); torchscript: a "
        "torch.jit file (uri); onnx: an .onnx file (uri). pytorch and torchscript are exported to ONNX first."
    )
    architecture: str | None = Field(
        default=None,
        max_length=256,
        pattern=ARCHITECTURE,
        description="timm:<name>, torchvision:<name> or python:<module>:<callable>.",
    )
    architecture_args: JsonObject = Field(
        default_factory=dict, description="Keyword arguments for the architecture constructor."
    )
    num_classes: int | None = Field(default=None, ge=1, le=INT64_MAX, description="Passed to the constructor as num_classes.")
    code: Uri | None = Field(
        default=None, description="A .py file or .zip archive put on the import path for a python: architecture."
    )
    weights: Uri | None = Field(default=None, description="state_dict file, loaded with weights_only=True.")
    random_weights: bool = Field(
        default=False, description="No weights: random initialisation, for speed measurements only."
    )
    weights_key: str | None = Field(
        default=None, max_length=128, description="Key of the state_dict inside a checkpoint dict, e.g. state_dict."
    )
    weights_prefix_map: dict[str, str] = Field(
        default_factory=dict,
        description='Rename state_dict key prefixes, e.g. {"backbone.": "", "head.fc.": "fc."}.',
    )
    # weightsLabelOffset and simplifier came after task keys were first computed: at their defaults they are left
    # out of a dump, so the convert configs the planner hashes, and so the keys, of specs not using them stay.
    weights_label_offset: int = Field(
        default=0,
        ge=0,
        le=INT64_MAX,
        exclude_if=lambda rows: rows == 0,
        description="Leading rows of the checkpoint's classifier that the model has no class for, dropped from its "
        "weight and bias as timm's label_offset does: 1 loads a 1001-row classifier whose row 0 is the background "
        "class into a model of numClasses 1000.",
    )
    classifier: list[Annotated[str, Field(min_length=1, max_length=256, pattern=MODULE_NAME)]] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        description="The classifier's module names, e.g. [last_linear] (timm's pretrained_cfg classifier): the "
        "weight and bias weightsLabelOffset trims. Default: every checkpoint tensor with weightsLabelOffset more "
        "leading rows than the model's (and the model's numClasses rows, when numClasses is set).",
    )
    uri: Uri | None = Field(default=None, description="TorchScript or ONNX model file.")
    sha256: str | None = Field(
        default=None, pattern=SHA256, description="Expected sha256 of weights or uri; checked on download."
    )
    inputs: list[TensorSpec] = Field(
        min_length=1,
        max_length=16,
        description="The model's inputs, in the graph's order, each named once.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    outputs: list[Annotated[str, Field(min_length=1, max_length=128, pattern=TENSOR_NAME)]] | None = Field(
        default=None, max_length=16, description="Output names for the exported graph."
    )
    opset: int | None = Field(
        default_factory=_default_opset,
        ge=7,
        le=23,
        description=f"ONNX opset. A pytorch or torchscript source is exported at it ({DEFAULT_OPSET} when unset); "
        "an onnx source is converted to it when it is set, and keeps its own opset when it is not.",
    )
    simplify: bool = Field(
        default=False,
        description="Simplify the ONNX graph (constant folding, redundant nodes removed) before it is calibrated "
        "and compiled.",
    )
    simplifier: Simplifier = Field(
        default=DEFAULT_SIMPLIFIER,
        exclude_if=lambda name: name == DEFAULT_SIMPLIFIER,
        description="What simplify runs: onnxslim, or onnxsim (onnx-simplifier) given the inputs' shapes as its "
        "--overwrite-input-shape.",
    )
    parity: Parity = Field(
        default_factory=Parity,
        description="How close the ONNX model's outputs must stay to the source model's on the same inputs; the "
        "convert stage fails when they do not.",
    )


# ---------------------------------------------------------------- dataset


Decoder = Literal["pil", "opencv"]
FolderLayout = Literal["flat", "imageFolder"]
CalibrationSelect = Literal["spread", "first", "files"]
# A file of the dataset's folder, relative to it: parts never start with a dot, so never '.' or '..'.
DATASET_FILE = r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*$"


def _is_default(default: str) -> Any:
    """For a field added after task keys were first computed: left out of a dump at its default, so the configs
    the planner hashes, and so the keys, of specs that do not use it stay as they were."""
    return lambda value: value == default


class Preprocess(Model):
    """Image preprocessing: resize, center crop, x*scale, (x-mean)/std, channel order, layout, dtype."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.mean.size() == self.std.size()", "mean and std need the same number of channels", ".std"),
                cel("!has(self.crop) || !has(self.resize) || self.crop <= self.resize",
                    "crop must not be larger than resize", ".crop"),
            ]
        }
    )

    decoder: Decoder = Field(
        default="pil",
        exclude_if=_is_default("pil"),
        description="pil: Pillow decodes and resizes, as torchvision's transforms do; opencv: cv2.imread, "
        "BGR to RGB, and cv2.resize, as OpenCV scripts do (the two libraries' resampling differs).",
    )
    resize: int | None = Field(
        default=None, ge=1, le=8192, description="Resize to this size (see resizeMode) before the crop; unset: no resize."
    )
    resize_mode: Literal["shorter", "exact"] = Field(
        default="shorter",
        description="shorter: the shorter side becomes resize, keeping the aspect (torchvision's Resize(int)); "
        "exact: resize x resize, not keeping it (cv2.resize(image, (resize, resize))).",
    )
    crop: int | None = Field(default=None, ge=1, le=8192, description="Center crop to crop x crop.")
    interpolation: Literal["bilinear", "bicubic", "nearest"] = Field(
        default="bilinear",
        description="The decoder's resampling filter: Pillow's BILINEAR/BICUBIC/NEAREST, or OpenCV's "
        "INTER_LINEAR/INTER_CUBIC/INTER_NEAREST.",
    )
    scale: float = Field(default=1 / 255, gt=0, description="Pixel values are multiplied by scale first.")
    mean: list[float] = Field(
        default=[0.0, 0.0, 0.0],
        min_length=1,
        max_length=4,
        description="Per-channel mean subtracted after scaling, in channelOrder, e.g. [0.485, 0.456, 0.406].",
    )
    std: list[Annotated[float, Field(gt=0)]] = Field(
        default=[1.0, 1.0, 1.0],
        min_length=1,
        max_length=4,
        description="Per-channel standard deviation divided by, in channelOrder, e.g. [0.229, 0.224, 0.225].",
    )
    channel_order: Literal["RGB", "BGR"] = Field(
        default="RGB", description="The channel order the model takes: RGB, or BGR (models trained on OpenCV images)."
    )
    layout: Literal["NCHW", "NHWC"] = Field(default="NCHW", description="The layout of the preprocessed samples.")
    dtype: Literal["float32", "float16", "uint8"] = Field(
        default="float32", description="The element type of the preprocessed samples."
    )


class Dataset(Model):
    """The evaluation data; int8 calibration draws its samples from it too."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.kind in ['digits', 'synthetic'] || has(self.uri)",
                    "this dataset kind needs uri", ".uri"),
                cel("!(self.kind in ['digits', 'synthetic']) || !has(self.uri)",
                    "digits and synthetic datasets take no uri", ".uri"),
                cel("self.kind != 'imagenet' || self.folderLayout == 'imageFolder' || has(self.labels)",
                    "an imagenet dataset needs labels (the val_label.txt file), or folderLayout: imageFolder",
                    ".labels"),
                cel("self.folderLayout != 'imageFolder' || self.kind == 'imagenet'",
                    "folderLayout: imageFolder is a layout of imagenet datasets", ".folderLayout"),
                cel("self.folderLayout != 'imageFolder' || !has(self.labels)",
                    "with folderLayout: imageFolder the class folders are the labels: remove labels", ".labels"),
                cel("!(self.kind in ['tensors', 'synthetic']) || !has(self.preprocess)",
                    "tensors and synthetic datasets are already preprocessed", ".preprocess"),
                cel("self.kind != 'digits' || !has(self.preprocess) || "
                    "(!has(self.preprocess.resize) && !has(self.preprocess.crop))",
                    "digits are 8x8 arrays: resize and crop do not apply", ".preprocess"),
            ]
        }
    )

    kind: Literal["imagenet", "cifar100", "digits", "tensors", "synthetic"] = Field(
        description="imagenet: a folder of images with a labels file (val_label.txt) or class folders; cifar100: "
        "the CIFAR-100 python 'test' pickle; digits: scikit-learn's 8x8 digits; tensors: a directory of .npy or "
        ".bin tensors, already preprocessed; synthetic: random inputs, for speed measurements only."
    )
    uri: Uri | None = Field(
        default=None, description="imagenet: image folder; cifar100: the python 'test' pickle; tensors: directory."
    )
    labels: Uri | None = Field(default=None, description="Label file of 'file label' lines.")
    folder_layout: FolderLayout = Field(
        default="flat",
        exclude_if=_is_default("flat"),
        description="imagenet: flat: the images side by side, labelled by the labels file; imageFolder: "
        "<class>/<image>, as torchvision's ImageFolder reads it: the label is the class folder's position "
        "among the sorted folders, the images are taken class by class, each class's sorted.",
    )
    preprocess: Preprocess | None = Field(
        default=None,
        description="How images become model inputs (resize, crop, normalise), as the model's training did; unset: "
        "each field's default.",
    )
    limit: int | None = Field(default=None, ge=1, le=INT64_MAX, description="Use at most this many samples.")
    label_offset: int = Field(
        default=0, ge=-1, le=1, description="Added to every label: 1 for 1001-class models with a background class."
    )
    seed: int = Field(default=0, ge=0, le=INT64_MAX, description="Seed for synthetic data.")


CalibrationMethod = Literal["auto", "minmax", "entropy", "percentile"]


class Calibration(Model):
    """Post-training quantization settings for the int8/int16 precisions."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.select == 'files' || !has(self.files)",
                    "files lists the calibration samples for select: files only", ".files"),
                cel("self.select != 'files' || has(self.files)",
                    "select: files needs files, the dataset's files to calibrate on", ".files"),
                cel("!has(self.files) || self.samples == self.files.size()",
                    "samples must be the number of files", ".samples"),
            ]
        }
    )

    samples: int = Field(default=256, ge=1, le=100_000, description="How many samples calibrate.")
    select: CalibrationSelect = Field(
        default="spread",
        exclude_if=_is_default("spread"),
        description="Which samples: spread: evenly over the dataset; first: the first samples, in the dataset's "
        "order; files: the files listed in files, in that order.",
    )
    files: list[Annotated[str, Field(max_length=1024, pattern=DATASET_FILE)]] | None = Field(
        default=None,
        min_length=1,
        max_length=100_000,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="select: files: file names in the dataset's folder (imageFolder: <class>/<image>).",
    )
    method: CalibrationMethod = Field(
        default="auto", description="auto picks each backend's recommended method."
    )


# ---------------------------------------------------------------- targets


class Toleration(Model):
    """A taint the stage pods tolerate, as in a core/v1 Pod's tolerations."""

    key: str | None = Field(
        default=None, max_length=317, description="The taint's key, e.g. huawei.com/Ascend310P; unset: every key."
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists: any value of the key; Equal (the default): the value below."
    )
    value: str | None = Field(default=None, max_length=253, description="The taint's value, with operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="The taint effect tolerated; unset: every effect."
    )
    toleration_seconds: Int64 | None = Field(
        default=None, description="With effect NoExecute: how long a pod stays bound to a node once it is tainted."
    )


Quantity = Int64 | Annotated[str, Field(pattern=QUANTITY)]


class Resources(Model):
    """The stage containers' resources, merged over the installation's, as in a core/v1 Container."""

    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Resource limits by name, e.g. cpu: 4, memory: 8Gi, or an extended resource of a device plugin "
        "such as huawei.com/Ascend310P: 1 or cambricon.com/mlu370: 1.",
    )
    requests: dict[str, Quantity] = Field(
        default_factory=dict, description="Resource requests by name, e.g. cpu: 2, memory: 4Gi."
    )


class Placement(Model):
    """Where this target's Jobs run; merged over the backend's and the installation's defaults."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("!has(self.env) || self.env.all(name, name.matches('^[A-Za-z_][A-Za-z0-9_]*$'))",
                    "environment variable names are letters, digits and _, not starting with a digit", ".env"),
                cel("!has(self.env) || self.env.all(name, !name.startsWith('AWS_'))",
                    "store credentials and endpoints come from artifacts (secretRef, endpoint, region), not env",
                    ".env"),
            ]
        }
    )

    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels the stage pods require, e.g. node.kubernetes.io/npu.chip.name: 310P3 as the Ascend "
        "device plugin labels its nodes.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=32,
        description="Taints the stage pods tolerate, e.g. a device plugin's huawei.com/Ascend310P:NoSchedule.",
    )
    affinity: JsonObject = Field(default_factory=dict, description="A core/v1 Affinity.")
    resources: Resources | None = Field(
        default=None, description="The stage containers' resource limits and requests, merged over the installation's."
    )
    env: dict[str, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict, max_length=64, description="Environment variables of the stage containers."
    )


class DynamicBatch(Model):
    """Compile one artifact for a range of batch sizes, and evaluate it at `evaluate`."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.min <= self.max", "min must not exceed max", ".min"),
                cel("!has(self.evaluate) || self.evaluate.all(b, b >= self.min && b <= self.max)",
                    "evaluated batch sizes must lie within [min, max]", ".evaluate"),
            ]
        }
    )

    min: int = Field(ge=1, le=4096, description="The smallest batch size the compiled model accepts.")
    max: int = Field(ge=1, le=4096, description="The largest batch size the compiled model accepts.")
    evaluate: list[Annotated[int, Field(ge=1, le=4096)]] | None = Field(
        default=None,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Batch sizes to measure; defaults to min, the powers of two between, and max.",
    )

    def evaluated(self) -> list[int]:
        if self.evaluate is not None:
            return sorted(self.evaluate)
        sizes = {self.min, self.max}
        power = 1
        while power < self.max:
            if power > self.min:
                sizes.add(power)
            power *= 2
        return sorted(sizes)


def _installed_backend(name: str) -> str:
    from modeldeploy.backends import registry  # the registry's declarations import this module

    if name not in registry():
        raise ValueError(f"unknown backend {name!r}; installed: {', '.join(registry())}")
    return name


class TargetToolchain(Model):
    """The vendor toolchain a target expects in its job image."""

    version: str = Field(
        min_length=1,
        max_length=32,
        pattern=r"^[0-9][0-9A-Za-z.]*$",
        description="The release the target is compiled and measured with, e.g. CANN 6.0.RC1 or MagicMind 0.13.0: "
        "it picks the job image and enters the target's task keys, and the results say whether the image ran it. "
        "Default: the backend's own release.",
    )


class Target(Model):
    """One device to compile for and measure on."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("has(self.batchSizes) != has(self.dynamicBatch)",
                    "set exactly one of batchSizes or dynamicBatch", ".batchSizes"),
            ]
        }
    )

    name: str = Field(
        min_length=1,
        max_length=24,
        pattern=DNS_LABEL,
        description="The target's name, unique in the spec (a DNS label): it names the target's Jobs, results and "
        "report rows.",
    )
    backend: Annotated[str, AfterValidator(_installed_backend)] = Field(
        min_length=1,
        max_length=63,
        description="The toolchain that compiles and measures: ascend (Huawei CANN: AMCT, ATC, ais_bench), "
        "magicmind (Cambricon MagicMind, mm_run), openvino or onnxruntime (on CPU).",
    )
    device: str | None = Field(
        default=None,
        max_length=63,
        description="The chip or card, as npu-smi or cnmon names it, e.g. Ascend310P3 or MLU370-X4; required by a "
        "device backend, refused by a CPU one.",
    )
    precisions: list[Precision] = Field(
        min_length=1,
        max_length=6,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="The precisions to compile and measure, each at every batch size: fp32, fp16, bf16, mixed "
        "(ATC's allow_mix_precision), int8 or int16 (quantized after training on calibration samples: AMCT on "
        "Ascend, MagicMind's qint8/qint16 modes). Each backend accepts its own subset.",
    )
    batch_sizes: list[Annotated[int, Field(ge=1, le=4096)]] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Batch sizes to compile a static model for and measure, one model each. Set this or dynamicBatch.",
    )
    dynamic_batch: DynamicBatch | None = Field(
        default=None,
        description="One model for a range of batch sizes (ATC's --dynamic_batch_size gears, MagicMind's dim "
        "range). Set this or batchSizes.",
    )
    options: JsonObject = Field(
        default_factory=dict, description="Backend options, checked by the backend, which refuses one it does not know."
    )
    image: str | None = Field(default=None, max_length=512, description="Overrides the backend's job image.")
    toolchain: TargetToolchain | None = Field(
        default=None, description="The vendor toolchain release the target expects; unset: the backend's own."
    )
    placement: Placement | None = Field(
        default=None,
        description="Where the target's Jobs run (node selector, tolerations, affinity, resources, env), merged over "
        "the backend's and the installation's defaults.",
    )

    def evaluated_batch_sizes(self) -> list[int]:
        if self.dynamic_batch is not None:
            return self.dynamic_batch.evaluated()
        return sorted(self.batch_sizes or [])


# ---------------------------------------------------------------- accuracy, artifacts, performance


class DeclaredAccuracy(Model):
    """Published accuracy as fractions (78.55% is 0.7855)."""

    top1: float | None = Field(default=None, ge=0, le=1, description="Top-1 accuracy, a fraction.")
    top5: float | None = Field(default=None, ge=0, le=1, description="Top-5 accuracy, a fraction.")


def _unique_expected(entries: str) -> str:
    """CEL: no two of `entries` name the same (target, precision, batchSize); a left-out target or batchSize is a
    value of its own (every target, every batch size)."""
    return (
        f"{entries}.all(a, {entries}.exists_one(b, b.precision == a.precision"
        " && has(a.target) == has(b.target) && (!has(a.target) || a.target == b.target)"
        " && has(a.batchSize) == has(b.batchSize) && (!has(a.batchSize) || a.batchSize == b.batchSize)))"
    )


class ExpectedCell(Model):
    """Which cells a published figure is for: a precision, on one target and at one batch size when given."""

    target: str | None = Field(
        default=None, min_length=1, max_length=24, pattern=DNS_LABEL,
        description="The target (targets[].name) the figure was published for; every target when left out.",
    )
    precision: Precision = Field(description="The precision the figure was published for.")
    batch_size: int | None = Field(
        default=None, ge=1, le=4096, description="The batch size the figure was published for; every batch size "
        "when left out. A figure for the cell's target and batch size wins over one leaving either out.",
    )

    def specificity(self, target: str, precision: str, batch_size: int) -> tuple[bool, bool] | None:
        """How closely this entry names the cell (target named, batch size named), or None when it does not."""
        if self.precision != precision or self.target not in (None, target) or self.batch_size not in (None, batch_size):
            return None
        return self.target is not None, self.batch_size is not None


Entry = TypeVar("Entry", bound=ExpectedCell)


def matching(entries: list[Entry] | None, target: str, precision: str, batch_size: int) -> Entry | None:
    """The entry that names the cell most closely: the target first, then the batch size."""
    ranked = [
        (rank, entry) for entry in entries or [] if (rank := entry.specificity(target, precision, batch_size)) is not None
    ]
    return max(ranked, key=lambda pair: pair[0])[1] if ranked else None


class ExpectedAccuracy(ExpectedCell):
    """Published accuracy of one precision (at one batch size, on one target, when given), as fractions."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("has(self.top1) || has(self.top5)", "an expected accuracy needs top1 or top5", ".top1"),
            ]
        }
    )

    top1: float | None = Field(default=None, ge=0, le=1, description="Published top-1 accuracy, a fraction.")
    top5: float | None = Field(default=None, ge=0, le=1, description="Published top-5 accuracy, a fraction.")


class ExpectedThroughput(ExpectedCell):
    """Published throughput of one precision at one batch size (on one target, when given)."""

    batch_size: int = Field(ge=1, le=4096, description="The batch size the throughput was published for.")
    throughput: float = Field(gt=0, description="Published throughput in samples per second.")


class Accuracy(Model):
    """The accuracy gate every cell must pass."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.reference != 'declared' || has(self.declared)",
                    "reference: declared needs the declared numbers", ".declared"),
                cel("self.reference == 'declared' || !has(self.declared)",
                    "declared numbers are used only with reference: declared", ".declared"),
                cel("!has(self.declared) || (self.metric == 'top1' ? has(self.declared.top1) : has(self.declared.top5))",
                    "the declared numbers must include the gate's metric", ".declared"),
                cel("self.dropMode != 'relative' || self.maxDrop <= 1.0",
                    "a relative maxDrop is a fraction of the reference and must not exceed 1", ".maxDrop"),
                cel("self.reference != 'declared' || !has(self.expected) || self.expected.all(e, "
                    "self.metric == 'top1' ? has(e.top1) : has(e.top5))",
                    "with reference: declared every expected accuracy must include the gate's metric", ".expected"),
                cel(f"!has(self.expected) || {_unique_expected('self.expected')}",
                    "expected accuracies must not repeat a target, precision and batchSize", ".expected"),
            ]
        }
    )

    reference: Literal["source", "declared"] = Field(
        default="source", description="source: the source model in fp32 on the same data; declared: the numbers below."
    )
    declared: DeclaredAccuracy | None = Field(
        default=None, description="With reference: declared, the reference of every cell without an expected "
        "accuracy of its own.",
    )
    expected: list[ExpectedAccuracy] | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Published accuracy per precision (and batch size, and target): each cell's status and the "
        "report show measured against expected as a ratio. With reference: declared the gate judges a cell "
        "against its expected figure, and against declared when it has none.",
    )
    metric: Literal["top1", "top5"] = Field(default="top1", description="The metric the gate judges.")
    max_drop: float = Field(default=0.01, ge=0, description="Largest allowed drop below the reference.")
    drop_mode: Literal["absolute", "relative"] = Field(
        default="absolute", description="absolute: maxDrop in fractions (0.01 is one point); relative: a fraction "
        "of the reference."
    )

    def expected_for(self, target: str, precision: str, batch_size: int) -> ExpectedAccuracy | None:
        return matching(self.expected, target, precision, batch_size)


class SecretReference(Model):
    """A Secret in the ModelDeployment's namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="The Secret's name, in the ModelDeployment's namespace.",
    )


class Artifacts(Model):
    """Object storage for every artifact; credentials come from the Secret, never from the spec."""

    uri: str = Field(
        min_length=1,
        max_length=1024,
        pattern=STORE_URI,
        description="s3://bucket/prefix or file:///path.",
    )
    secret_ref: SecretReference | None = Field(
        default=None, description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (optional AWS_SESSION_TOKEN)."
    )
    endpoint: str | None = Field(
        default=None, max_length=512, pattern=r"^https?://[^\s]+$", description="S3 endpoint for MinIO, Ceph RGW, OBS."
    )
    region: str | None = Field(default=None, max_length=64, description="The S3 region, e.g. us-east-1.")
    on_delete: Literal["Retain", "Delete"] = Field(
        default="Retain", description="What happens to the artifacts when the ModelDeployment is deleted."
    )


class Performance(Model):
    """How speed is measured, per batch size: warm-up, then iterations or a time budget."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("!(has(self.iterations) && has(self.durationSeconds))",
                    "set iterations or durationSeconds, not both", ".durationSeconds"),
                cel("!has(self.minRatio) || has(self.expected)",
                    "minRatio is a fraction of the expected throughput: it needs expected", ".minRatio"),
                cel(f"!has(self.expected) || {_unique_expected('self.expected')}",
                    "expected throughputs must not repeat a target, precision and batchSize", ".expected"),
            ]
        }
    )

    warmup: int = Field(default=10, ge=0, le=100_000, description="Warm-up iterations, not measured.")
    iterations: int | None = Field(default=None, ge=1, le=1_000_000, description="Defaults to 100.")
    duration_seconds: float | None = Field(
        default=None, gt=0, le=86_400, description="Measure for this long instead of a number of iterations."
    )
    expected: list[ExpectedThroughput] | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Published throughput per precision and batch size (and target): each cell's status and the "
        "report show measured against expected as a ratio.",
    )
    min_ratio: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Speed gate: a cell whose throughput is below this fraction of its expected throughput fails "
        "(0.9: at least 90% of the published figure). Cells without an expected throughput are not judged.",
    )
    # Left out of a dump at its default, as the fields above are at None: specs not using the speed gate keep
    # their report task's key.
    int8_must_be_faster: bool = Field(
        default=False,
        exclude_if=lambda value: not value,
        description="Speed gate: an int8 cell fails when its throughput is not above that of every float "
        "(fp32, fp16, bf16, mixed) cell of the same target and batch size.",
    )

    def speed_gated(self) -> bool:
        return self.min_ratio is not None or self.int8_must_be_faster

    def expected_for(self, target: str, precision: str, batch_size: int) -> ExpectedThroughput | None:
        return matching(self.expected, target, precision, batch_size)

    def budget(self) -> dict[str, float | int]:
        """The measurement budget with its default filled in: iterations, or a duration."""
        if self.duration_seconds is not None:
            return {"warmup": self.warmup, "durationSeconds": self.duration_seconds}
        return {"warmup": self.warmup, "iterations": self.iterations or DEFAULT_ITERATIONS}


# ---------------------------------------------------------------- the resource


_POWERS_OF_TWO = [2**exponent for exponent in range(13)]  # 1 to 4096, the batch sizes dynamicBatch may default to


def _expected_rules(section: str) -> list[dict[str, str]]:
    """CEL rules: every entry of <section>.expected names a target, precision and batch size the spec measures."""
    entries = f"self.{section}.expected"
    guard = f"!has(self.{section}) || !has({entries}) || {entries}.all(e, "
    its_targets = "(!has(e.target) || t.name == e.target) && e.precision in t.precisions"
    # DynamicBatch.evaluated(): evaluate, or min, max and the powers of two between.
    evaluated = (
        "(has(t.batchSizes) ? e.batchSize in t.batchSizes : has(t.dynamicBatch) && "
        "(has(t.dynamicBatch.evaluate) ? e.batchSize in t.dynamicBatch.evaluate : "
        "e.batchSize == t.dynamicBatch.min || e.batchSize == t.dynamicBatch.max || "
        f"(e.batchSize > t.dynamicBatch.min && e.batchSize < t.dynamicBatch.max && e.batchSize in {_POWERS_OF_TWO})))"
    )
    field = f".{section}.expected"
    return [
        cel(guard + "!has(e.target) || self.targets.exists(t, t.name == e.target))",
            f"{section}.expected names a target that is not in targets", field),
        cel(guard + f"self.targets.exists(t, {its_targets}))",
            f"{section}.expected names a precision its target does not measure (or, without target, no target)", field),
        cel(guard + f"!has(e.batchSize) || self.targets.exists(t, {its_targets} && {evaluated}))",
            f"{section}.expected names a batchSize its target does not evaluate at that precision (or, without target, "
            "no target)",
            field),
    ]


class ModelDeploymentSpec(Model):
    """What to convert, on which data, for which targets, and how to judge the result."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("!has(self.calibration) || has(self.dataset)",
                    "calibration needs a dataset to draw samples from", ".calibration"),
                cel("has(self.dataset) || !self.targets.exists(t, t.precisions.exists(p, p in ['int8', 'int16']))",
                    "int8/int16 precisions are calibrated on real data: add a dataset", ".dataset"),
                cel("!has(self.accuracy) || (has(self.dataset) && self.dataset.kind != 'synthetic')",
                    "an accuracy gate needs a labelled dataset (not synthetic)", ".accuracy"),
                cel("!has(self.accuracy) || !self.source.randomWeights",
                    "a randomly initialised model has no accuracy to gate", ".accuracy"),
                cel("!has(self.calibration) || !has(self.dataset) || !has(self.dataset.limit)"
                    " || self.calibration.samples <= self.dataset.limit",
                    "calibration.samples must not exceed dataset.limit", ".calibration.samples"),
                *_expected_rules("accuracy"),
                *_expected_rules("performance"),
                cel("!has(self.performance) || !has(self.performance.int8MustBeFaster) || "
                    "!self.performance.int8MustBeFaster || self.targets.exists(t, 'int8' in t.precisions && "
                    f"t.precisions.exists(p, p in {sorted(FLOAT_PRECISIONS)}))",
                    "int8MustBeFaster needs a target measuring int8 beside fp32, fp16, bf16 or mixed",
                    ".performance.int8MustBeFaster"),
            ]
        }
    )

    source: Source = Field(description="The model to convert: its format, file or architecture, and inputs.")
    dataset: Dataset | None = Field(
        default=None,
        description="The evaluation data, and the calibration samples of int8/int16; unset: speed measurements only.",
    )
    calibration: Calibration | None = Field(
        default=None, description="How int8/int16 precisions are calibrated; unset: the defaults below."
    )
    targets: list[Target] = Field(
        min_length=1,
        max_length=16,
        description="The devices to compile for and measure on, each with its backend, precisions and batch sizes.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    accuracy: Accuracy | None = Field(
        default=None, description="The accuracy gate every cell must pass; unset: accuracy is measured, not judged."
    )
    artifacts: Artifacts | None = Field(
        default=None, description="Defaults to the operator's store (or --store for local runs)."
    )
    performance: Performance = Field(
        default_factory=Performance, description="How speed is measured, and the speed gate."
    )


class Condition(StatusModel):
    """One aspect of the resource's state, as in metav1.Condition."""

    type: str = Field(max_length=316, description="Ready, Reconciling or Stalled.")
    status: Literal["True", "False", "Unknown"] = Field(description="Whether the condition holds: True, False or Unknown.")
    reason: str = Field(max_length=1024, description="Why, in one CamelCase word, e.g. Succeeded or InvalidSpec.")
    message: str = Field(default="", max_length=32768, description="Why, in words.")
    last_transition_time: datetime = Field(description="When status last changed.")
    observed_generation: Int64 | None = Field(
        default=None, description="The metadata.generation of the spec this condition was computed for."
    )


StagePhase = Literal["Pending", "Running", "Succeeded", "Failed", "Skipped"]


class StageStatus(StatusModel):
    """One task of the pipeline and the Job that computes it."""

    name: str = Field(description="The task: its kind and what it is for, e.g. compile "
                      "ascend-310p/int8/bs8.")
    kind: str = Field(description="convert, prepare, calibrate, compile, evaluate or report.")
    key: str = Field(description="The task's key: a hash of its configuration and inputs, naming its results in the "
                     "artifact store; deployments asking for the same task share them.")
    phase: StagePhase = Field(description="Pending (waiting for its inputs or a Job slot), Running, Succeeded, "
                              "Failed, or Skipped (an input failed).")
    job: str | None = Field(default=None, description="The name of the Job computing the task.")
    start_time: datetime | None = Field(default=None, description="When the Job started.")
    completion_time: datetime | None = Field(default=None, description="When the Job finished.")
    message: str | None = Field(default=None, description="Why the stage failed or waits.")
    attempts: Int64 | None = Field(default=None, description="Pods the stage's Job ran: above 1 when a failure that "
                                 "retrying may fix (a tool, device or network failure) was retried.")


class Latency(StatusModel):
    """Latency of one batch in milliseconds, as the benchmark tool (ais_bench, mm_run, ...) reports it."""

    mean: float | None = Field(default=None, description="Mean latency in milliseconds.")
    p50: float | None = Field(default=None, description="Median latency in milliseconds.")
    p90: float | None = Field(default=None, description="90th percentile latency in milliseconds.")
    p99: float | None = Field(default=None, description="99th percentile latency in milliseconds.")


class Figures(StatusModel):
    """Accuracy (fractions) and throughput (samples per second) of one cell, or their ratios."""

    top1: float | None = Field(default=None, description="Top-1 accuracy.")
    top5: float | None = Field(default=None, description="Top-5 accuracy.")
    throughput: float | None = Field(default=None, description="Throughput.")


    def ratios(self, expected: Figures | None) -> Figures | None:
        """These figures divided by `expected`, where both have one."""
        if expected is None:
            return None
        values = {
            name: value / base
            for name in ("top1", "top5", "throughput")
            if (value := getattr(self, name)) is not None and (base := getattr(expected, name))
        }
        return Figures(**values) if values else None


def expected_figures(
    accuracy: Accuracy | None, performance: Performance | None, target: str, precision: str, batch_size: int
) -> Figures | None:
    """What a cell is compared with: its expected accuracy (else, with reference: declared, the declared one) and
    its expected throughput."""
    published = accuracy.expected_for(target, precision, batch_size) if accuracy else None
    if published is None and accuracy is not None and accuracy.reference == "declared":
        published = accuracy.declared
    speed = performance.expected_for(target, precision, batch_size) if performance else None
    values = {
        "top1": published.top1 if published else None,
        "top5": published.top5 if published else None,
        "throughput": speed.throughput if speed else None,
    }
    return Figures(**values) if any(value is not None for value in values.values()) else None


class ToolchainCheck(StatusModel):
    expected: str = Field(description="The toolchain release the target expects (targets[].toolchain.version, "
                          "else the backend's).")
    actual: str | None = Field(default=None, description="The release that ran, as its tools report it.")
    match: bool = Field(description="Whether the release that ran is the one expected.")


class DeviceThroughput(StatusModel):
    """One device's own figure in a measurement on several devices at once."""

    device: Int64 = Field(description="The device, as ais_bench's --device numbers it.")
    throughput: float | None = Field(default=None, description="Its samples per second.")


class ThroughputCovers(StatusModel):
    """What a cell's throughput is the figure of: the devices it is summed over, and the chips and cards they are."""

    devices: Int64 = Field(description="How many devices measured at once (the Ascend target's options.devices).")
    per_device: list[DeviceThroughput] = Field(default_factory=list, description="Each device's own throughput.")
    chips: Int64 = Field(description="How many chips those devices are.")
    chip: str | None = Field(default=None, description="The chip, as npu-smi names it, e.g. Ascend310.")
    cards: Int64 | None = Field(default=None, description="How many cards (npu-smi's NPU ids) hold those chips.")
    whole_cards: bool | None = Field(default=None, description="Whether every chip of those cards was measured.")
    summary: str = Field(description="The above in words, e.g. sum of 4 devices (4 Ascend310 chips, 1 whole card).")


class CellResult(StatusModel):
    """The measurements of one cell: a target at one precision and batch size."""

    target: str = Field(description="The target (targets[].name).")
    backend: str | None = Field(default=None, description="The backend that compiled and measured the cell.")
    device: str | None = Field(default=None, description="The chip it ran on, e.g. Ascend310P3 or MLU370-X4.")
    precision: Precision = Field(description="The precision the cell was compiled at.")
    batch_size: Int64 = Field(description="The batch size the cell was measured at.")
    top1: float | None = Field(default=None, description="Top-1 accuracy on the dataset, a fraction.")
    top5: float | None = Field(default=None, description="Top-5 accuracy on the dataset, a fraction.")
    throughput: float | None = Field(default=None, description="Samples per second.")
    latency_ms: Latency | None = Field(default=None, description="Latency of one batch in milliseconds.")
    artifact: str | None = Field(
        default=None, description="Where the compiled model is in the artifact store (the .om, MagicMind model, ...)."
    )
    sha256: str | None = Field(default=None, description="The sha256 of the compiled model.")
    drop: float | None = Field(default=None, description="Drop of the gate's metric below the reference.")
    expected: Figures | None = Field(
        default=None, description="The published figures this cell is compared with (accuracy.expected, else "
        "accuracy.declared; performance.expected)."
    )
    ratio: Figures | None = Field(default=None, description="Measured divided by expected, figure by figure.")
    gate: Literal["Passed", "Failed", "NotEvaluated"] = Field(
        default="NotEvaluated", description="The accuracy gate's and the speed gate's verdict together."
    )
    gate_message: str | None = Field(default=None, description="Why the gate failed, or could not judge the cell.")
    toolchain: ToolchainCheck | None = Field(
        default=None, description="The toolchain release the target expects against the one that ran."
    )
    throughput_covers: ThroughputCovers | None = Field(
        default=None, description="What throughput is the figure of, when the backend says (several devices "
        "measured at once are summed)."
    )


class BestCell(StatusModel):
    """A target's fastest cell among those that passed the gate."""

    target: str = Field(description="The target (targets[].name).")
    precision: Precision = Field(description="The cell's precision.")
    batch_size: Int64 = Field(description="The cell's batch size.")
    throughput: float = Field(description="Samples per second.")
    top1: float | None = Field(default=None, description="Top-1 accuracy, a fraction.")


class ModelDeploymentStatus(StatusModel):
    """What the operator observed: the pipeline's progress and its results. Written by the operator only."""

    observed_generation: Int64 | None = Field(
        default=None, description="The metadata.generation of the spec this status describes."
    )
    phase: Literal["Pending", "Running", "Succeeded", "Failed"] | None = Field(
        default=None,
        description="Pending: no stage started; Running; Succeeded: the report is written; Failed: a stage failed "
        "and nothing else runs, or the spec is invalid.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Ready (every cell measured and the report written), Reconciling (stages running or waiting; "
        "the reason Queued while every Job waits in a Kueue queue) and Stalled (an invalid spec, an unreachable "
        "artifact store, or a failed stage).",
    )
    stages: list[StageStatus] = Field(default_factory=list, description="Every task of the pipeline and its Job.")
    results: list[CellResult] = Field(
        default_factory=list,
        description="One entry per target x precision x batch size: measured as each cell finishes, judged by the "
        "gate once the report is written.",
    )
    best: list[BestCell] = Field(default_factory=list, description="Each target's fastest cell that passed the gate.")
    report_uri: str | None = Field(default=None, description="Where report.html is, once the report is written.")
    targets: str | None = Field(default=None, description="Targets with every cell finished, e.g. 1/2.")
    best_summary: str | None = Field(default=None, description="The fastest passing cell, for kubectl get.")


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, description="Checked by the resource's CEL rule, as the API server does.")
    namespace: str | None = None
    generation: Int64 | None = None


class ModelDeployment(BaseModel):
    """A model conversion pipeline: convert, calibrate, compile and measure every target x precision x batch size."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    api_version: Literal["modeldeploy.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ModelDeployment"]
    metadata: ObjectMeta
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None
