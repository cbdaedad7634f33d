"""The prepare stage: turns the user's dataset into model-ready samples (see `data` for the format).

Image preprocessing matches torchvision's Resize(int) / CenterCrop / ToTensor / Normalize, as the
vendor ModelZoo scripts use it, or, with `decoder: opencv`, cv2.imread / cvtColor(BGR2RGB) / cv2.resize
as the scripts that read with OpenCV do. The `raw-uint8-bins` variant stops after resize and crop:
Ascend AIPP and MagicMind's folded normalisation take uint8 HWC pixels and normalise on the device.
`raw-uint8-uncropped-bins` stops after the resize, for an AIPP that crops too.
"""

from __future__ import annotations

import codecs
import itertools
import os
import pickle
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from modeldeploy.spec import Preprocess
from numpy._core.multiarray import _reconstruct
from PIL import Image

from modeldeploy_jobs.data import (
    RAW_UINT8_BINS,
    RAW_UINT8_UNCROPPED_BINS,
    TENSORS_NHWC,
    Sample,
    digits_split,
    write_prepared,
)
from modeldeploy_jobs.limits import DATASET_BYTES, DATASET_FILES, IMAGE_PIXELS
from modeldeploy_jobs.stage import StageContext, StageError, StageReason, StageResult

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp")
TENSOR_EXTENSIONS = (".npy", ".bin")
SYNTHETIC_SAMPLES = 256
MAX_LISTED = 5
CIFAR_SIDE = 32
RGB_CHANNELS = 3

RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
OPENCV_INTERPOLATION = {"bilinear": "INTER_LINEAR", "bicubic": "INTER_CUBIC", "nearest": "INTER_NEAREST"}
# EXIF orientations that turn the image a quarter, so its decoded width and height are the header's swapped
QUARTER_TURNS = frozenset({5, 6, 7, 8})
EXIF_ORIENTATION = 0x0112

Config = Mapping[str, Any]


@dataclass(frozen=True)
class Source:
    """A dataset opened for preparation: sample names, labels, and the samples produced lazily."""

    names: list[str]
    labels: np.ndarray | None  # int64, before labelOffset
    samples: Iterator[Sample]
    toolchain: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Tensor:
    """A model input as fixed-shape per-sample data."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def run(context: StageContext) -> StageResult:
    dataset = context.config["dataset"]
    variant = context.config["variant"]
    if "files" in context.config and dataset["kind"] != "imagenet":
        raise StageError(StageReason.DATASET_INVALID,
                         f"calibration.files names image files, and a {dataset['kind']} dataset has none: "
                         "select spread or first samples instead")
    inputs = context.config["inputs"]
    if variant == TENSORS_NHWC:
        # For a model built to take its image input channels last: the images preprocessed in that layout.
        dataset = {**dataset, "preprocess": {**dataset.get("preprocess", {}), "layout": "NHWC"}}
        inputs = [_channels_last(item) for item in inputs]
    source = LOADERS[dataset["kind"]](context, dataset, variant, inputs)
    count = min(len(source.names), dataset.get("limit", len(source.names)))
    if count == 0:
        raise StageError(StageReason.DATASET_EMPTY, f"{_describe(dataset)} holds no samples")
    labels = None if source.labels is None else source.labels[:count] + dataset.get("labelOffset", 0)
    outputs, meta = write_prepared(
        context.outputs_dir, variant, source.names[:count], itertools.islice(source.samples, count), labels
    )
    metrics = {
        "count": meta["count"],
        "labelled": meta["labelled"],
        "numClasses": meta["numClasses"],
        "variant": variant,
        "sampleShape": meta["inputs"][0]["shape"],
    }
    toolchain = {"numpy": np.__version__, "pillow": PIL.__version__, **source.toolchain}
    if dataset.get("preprocess", {}).get("decoder") == "opencv":
        import cv2

        toolchain["opencv"] = cv2.__version__
    return StageResult(outputs=outputs, metrics=metrics, toolchain=toolchain)


def _channels_last(model_input: Config) -> Config:
    """An NCHW image input as the model built to take it NHWC sees it."""
    if model_input.get("layout", "NCHW") != "NCHW" or len(model_input["shape"]) != 4:
        return model_input
    batch, channels, height, width = model_input["shape"]
    return {**model_input, "shape": [batch, height, width, channels], "layout": "NHWC"}


def _describe(dataset: Config) -> str:
    return dataset.get("uri") or f"the {dataset['kind']} dataset"


def _join(uri: str, *names: str) -> str:
    return "/".join([uri.rstrip("/"), *(name for name in names if name)])


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(d) if d > 0 else "?" for d in shape)


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _listed(names: Sequence[str]) -> str:
    more = f", ... ({len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else ""
    return ", ".join(names[:MAX_LISTED]) + more


def _single_input(inputs: Sequence[Config], kind: str) -> Config:
    if len(inputs) != 1:
        names = ", ".join(repr(item["name"]) for item in inputs)
        raise StageError(
            StageReason.DATASET_INVALID,
            f"{kind} datasets feed a single model input, but the model has {len(inputs)}: {names}",
        )
    return inputs[0]


# ---------------------------------------------------------------- files and labels


def _natural_key(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _list_files(directory: Path, extensions: Sequence[str], sort_key: Callable[[str], Any], uri: str) -> list[str]:
    """File names in `directory` with one of `extensions` (any case), sorted; stems must be unique."""
    names = sorted(
        (path.name for path in directory.iterdir() if path.is_file() and path.suffix.lower() in extensions),
        key=sort_key,
    )
    stems: dict[str, str] = {}
    for name in names:
        other = stems.setdefault(Path(name).stem, name)
        if other != name:
            raise StageError(StageReason.DATASET_INVALID,
                             f"{uri} holds both {other} and {name}: sample names must be unique")
    return names


def _check_dataset_size(directory: Path, names: Sequence[str], uri: str) -> None:
    """The dataset's files against the installation's caps, before any is read."""
    DATASET_FILES.check(len(names), f"{uri} holds")
    DATASET_BYTES.check(sum((directory / name).stat().st_size for name in names), f"{uri} holds")


def _label_key(name: str) -> str:
    return name.split(".", 1)[0]


@dataclass(frozen=True)
class Label:
    file: str
    label: int
    line: int  # where the labels file gives it, which messages name instead of quoting the file


def _read_labels(path: Path, uri: str) -> dict[str, Label]:
    """`<file> <label>` lines by file name up to the first '.'."""
    DATASET_BYTES.check(path.stat().st_size, f"{uri} holds")
    table: dict[str, Label] = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not re.fullmatch(r"[+-]?\d+", fields[1]):
            raise StageError(StageReason.LABELS_INVALID,
                             f"{uri} line {number}: expected '<file> <label>' with an integer label")
        key = _label_key(fields[0])
        if key in table:
            raise StageError(StageReason.LABELS_INVALID,
                             f"{uri} line {number}: names the same file as line {table[key].line}")
        table[key] = Label(fields[0], int(fields[1]), number)
    return table


def _match_labels(context: StageContext, dataset: Config, files: Sequence[str], noun: str) -> np.ndarray:
    """One label per file, from the dataset's labels file; every file labelled, every label used."""
    uri, labels_uri = dataset["uri"], dataset["labels"]
    table = _read_labels(context.fetch_source(labels_uri, context.workdir / "labels.txt", None), labels_uri)
    missing = [name for name in files if _label_key(name) not in table]
    if missing:
        raise StageError(
            StageReason.LABELS_MISSING,
            f"{labels_uri} has no label for {len(missing)} of {len(files)} {noun} in {uri}: {_listed(missing)}",
        )
    present = {_label_key(name) for name in files}
    absent = [str(entry.line) for key, entry in table.items() if key not in present]
    if absent:
        raise StageError(
            StageReason.LABELS_MISMATCH,
            f"{labels_uri} lists {len(table)} {noun} but {uri} has {len(files)}; not there: the "
            + (f"file named on line {absent[0]}" if len(absent) == 1 else f"files named on lines {_listed(absent)}"),
        )
    return np.array([table[_label_key(name)].label for name in files], dtype=np.int64)


# ---------------------------------------------------------------- image preprocessing


def _decode(path: Path, where: str, pipeline: ImagePipeline) -> Image.Image:
    """The image as RGB pixels, decoded only once the size its header declares passes the pipeline's checks."""
    with _opened(path, where) as image:
        pipeline.check_size(image.size, where)
        return image.convert("RGB")


def _decode_opencv(path: Path, where: str, pipeline: ImagePipeline) -> np.ndarray:
    """The image as cv2.imread reads it (EXIF orientation applied), turned to RGB: HWC uint8.

    OpenCV decodes without a look at the size first, so Pillow reads the header for the pipeline's checks.
    """
    import cv2

    with _opened(path, where) as image:
        width, height = image.size
        turned = image.getexif().get(EXIF_ORIENTATION) in QUARTER_TURNS
        pipeline.check_size((height, width) if turned else (width, height), where)
    pixels = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    if pixels is None:
        raise StageError(StageReason.DATASET_INVALID, f"{where}: the image is damaged or OpenCV cannot read it")
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


@contextmanager
def _opened(path: Path, where: str) -> Iterator[Image.Image]:
    """The image opened by Pillow, which has read its header only; failures as stage errors that name `where`."""
    limit = IMAGE_PIXELS.value()
    Image.MAX_IMAGE_PIXELS = limit  # Pillow's own bomb check, for any image opened in this process
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size check refuses them
            image = Image.open(path)
        with image:
            yield image
    except Image.DecompressionBombError:
        raise StageError(
            StageReason.LIMIT_EXCEEDED,
            f"{where} has more than {2 * limit:,} pixels, more than the {limit:,} this installation allows "
            f"(an administrator can raise it with ${IMAGE_PIXELS.variable})",
        ) from None
    except Image.UnidentifiedImageError:
        raise StageError(StageReason.DATASET_INVALID, f"{where}: not an image Pillow can read "
                         f"({', '.join(IMAGE_EXTENSIONS)})") from None
    except (OSError, ValueError, SyntaxError) as error:  # the decoder's message may quote the file's bytes
        raise StageError(StageReason.DATASET_INVALID,
                         f"{where}: the image is damaged or truncated ({type(error).__name__})") from None


def _resized_size(size: tuple[int, int], preprocess: Preprocess) -> tuple[int, int]:
    """(width, height) after preprocess.resize."""
    target = preprocess.resize
    if target is None:
        return size
    width, height = size
    if preprocess.resize_mode == "exact":
        return (target, target)
    if width <= height:  # torchvision Resize(int): the shorter side becomes `size`
        return (target, int(target * height / width))
    return (int(target * width / height), target)


def _resized(image: Image.Image, preprocess: Preprocess) -> Image.Image:
    target = _resized_size(image.size, preprocess)
    if target == image.size:
        return image
    return image.resize(target, RESAMPLING[preprocess.interpolation])


def _resized_opencv(pixels: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    import cv2

    height, width = pixels.shape[:2]
    target = _resized_size((width, height), preprocess)
    if target == (width, height):
        return pixels
    return cv2.resize(pixels, target, interpolation=getattr(cv2, OPENCV_INTERPOLATION[preprocess.interpolation]))


def _check_crop(size: tuple[int, int], crop: int | None, where: str) -> None:
    width, height = size
    if crop is not None and (height < crop or width < crop):
        raise StageError(StageReason.DATASET_INVALID,
                         f"{where}: the {width}x{height} image is smaller than the {crop}x{crop} crop")


def _center_cropped(pixels: np.ndarray, crop: int | None, where: str) -> np.ndarray:
    if crop is None:
        return pixels
    height, width = pixels.shape[:2]
    _check_crop((width, height), crop, where)
    top = round((height - crop) / 2.0)
    left = round((width - crop) / 2.0)
    return pixels[top : top + crop, left : left + crop]


def _per_channel(values: tuple[float, ...], channels: int, what: str) -> np.ndarray:
    if len(set(values)) == 1:
        return np.full(channels, values[0], dtype=np.float32)
    if len(values) == channels:
        return np.asarray(values, dtype=np.float32)
    raise StageError(
        StageReason.DATASET_INVALID,
        f"preprocess.{what} has {len(values)} values but the images have {_counted(channels, 'channel')}",
    )


def _cast(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "uint8" and values.dtype.kind == "f":
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return values.astype(dtype, copy=False)


def _normalised(pixels: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """HWC pixels -> x*scale, (x-mean)/std, channel order, layout, dtype."""
    channels = pixels.shape[2]
    values = pixels.astype(np.float32) * np.float32(preprocess.scale)
    values = (values - _per_channel(preprocess.mean, channels, "mean")) / _per_channel(preprocess.std, channels, "std")
    if preprocess.channel_order == "BGR":
        values = values[..., ::-1]
    if preprocess.layout == "NCHW":
        values = values.transpose(2, 0, 1)
    return np.ascontiguousarray(_cast(values, preprocess.dtype))


def _raw(pixels: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """HWC pixels as uint8 in the configured channel order, not normalised."""
    if preprocess.channel_order == "BGR":
        pixels = pixels[..., ::-1]
    return np.ascontiguousarray(_cast(pixels, "uint8"))


def _check_shape(
    produced: tuple[int, ...], model_input: Config, raw: bool, preprocess: Preprocess, where: str
) -> None:
    expected = tuple(model_input["shape"][1:])
    if raw:  # uint8 HWC: only the spatial size must fit, wherever the model keeps its channels
        layout = model_input.get("layout") if model_input.get("layout") in ("NCHW", "NHWC") else preprocess.layout
        produced = produced[:2]
        if len(expected) == 3:
            expected = expected[:2] if layout == "NHWC" else expected[1:]
    if len(produced) != len(expected) or any(e > 0 and e != p for p, e in zip(produced, expected)):
        raise StageError(
            StageReason.DATASET_INVALID,
            f"{where}: preprocessing produces {_dims(produced)} samples "
            f"but input {model_input['name']!r} expects {_dims(expected)}",
        )


class ImagePipeline:
    """Decoded pixels -> one model-input sample, for the given variant."""

    def __init__(self, preprocess: Preprocess, variant: str, model_input: Config):
        self.preprocess = preprocess
        self.raw = variant in (RAW_UINT8_BINS, RAW_UINT8_UNCROPPED_BINS)
        # Ascend's AIPP crops these on the device: the samples are the resized images, larger than the model input,
        # and all of one size, AIPP's src_image_size.
        self.uncropped = variant == RAW_UINT8_UNCROPPED_BINS
        self.crop = None if self.uncropped else preprocess.crop
        self.model_input = model_input
        self.first: tuple[tuple[int, ...], str] | None = None  # the first sample's shape, and where it came from

    def check_size(self, size: tuple[int, int], where: str) -> None:
        """Refuses an image from the (width, height) its header declares: too many pixels, too small for the crop,
        or a sample shape the model input does not take."""
        width, height = size
        IMAGE_PIXELS.check(width * height, f"{where} ({width}x{height}) has")
        resized = _resized_size(size, self.preprocess)
        _check_crop(resized, self.crop, where)
        out_width, out_height = (self.crop, self.crop) if self.crop is not None else resized
        hwc = (out_height, out_width, RGB_CHANNELS)
        chw = (RGB_CHANNELS, out_height, out_width)
        produced = hwc if self.raw or self.preprocess.layout != "NCHW" else chw
        if not self.uncropped:
            _check_shape(produced, self.model_input, self.raw, self.preprocess, where)

    def file(self, path: Path, where: str) -> Sample:
        """The image file decoded, resized and cropped by the preprocess' decoder."""
        if self.preprocess.decoder == "opencv":
            return self.resized(_resized_opencv(_decode_opencv(path, where, self), self.preprocess), where)
        return self.image(_decode(path, where, self), where)

    def image(self, image: Image.Image, where: str) -> Sample:
        """Decoded RGB pixels, resized and cropped by the preprocess' decoder."""
        if self.preprocess.decoder == "opencv":
            return self.resized(_resized_opencv(np.asarray(image), self.preprocess), where)
        return self.resized(np.asarray(_resized(image, self.preprocess)), where)

    def resized(self, pixels: np.ndarray, where: str) -> Sample:
        return self.pixels(_center_cropped(pixels, self.crop, where), where)

    def pixels(self, pixels: np.ndarray, where: str) -> Sample:
        sample = _raw(pixels, self.preprocess) if self.raw else _normalised(pixels, self.preprocess)
        if self.uncropped:
            self._check_one_size(tuple(sample.shape), where)
        else:
            _check_shape(tuple(sample.shape), self.model_input, self.raw, self.preprocess, where)
        return {self.model_input["name"]: sample}

    def _check_one_size(self, shape: tuple[int, ...], where: str) -> None:
        if self.first is None:
            self.first = (shape, where)
        elif shape != self.first[0]:
            raise StageError(
                StageReason.DATASET_INVALID,
                f"{where}: preprocessing produces {_dims(shape[:2])} pixels but {_dims(self.first[0][:2])} for "
                f"{self.first[1]}: images that AIPP crops must all be resized to one size (resizeMode: exact)",
            )


# ---------------------------------------------------------------- datasets


def _imagenet(context: StageContext, dataset: Config, variant: str, inputs: Sequence[Config]) -> Source:
    uri = dataset["uri"]
    pipeline = ImagePipeline(
        Preprocess.model_validate(dataset.get("preprocess", {})), variant, _single_input(inputs, "imagenet")
    )
    root = context.fetch_tree(uri, context.workdir / "images")
    if dataset.get("folderLayout") == "imageFolder":
        files, labels = _image_folder(root, uri)
        _check_dataset_size(root, files, uri)
    else:
        files = _list_files(root, IMAGE_EXTENSIONS, str, uri)
        if not files:
            raise StageError(StageReason.DATASET_EMPTY, f"{uri} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        _check_dataset_size(root, files, uri)
        labels = _match_labels(context, dataset, files, "images") if "labels" in dataset else None
    if "files" in context.config:
        files, labels = _chosen(context.config["files"], files, labels, uri)
    samples = (pipeline.file(root / name, _join(uri, name)) for name in files)
    return Source([Path(name).stem for name in files], labels, samples)


def _image_folder(root: Path, uri: str) -> tuple[list[str], np.ndarray]:
    """The images of `<class>/.../<image>` paths and their class indices, in torchvision's ImageFolder order.

    Classes are the sorted sub-folder names, a class's index its position; images are listed class by class,
    each class's folders (the class folder, then any below it) in the sorted order of their paths, and each
    folder's files sorted. Sample names are the file names' stems, so they must be unique over all classes.
    """
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    if not classes:
        raise StageError(StageReason.DATASET_EMPTY,
                         f"{uri} has no class folders: folderLayout imageFolder reads <class>/<image> paths")
    files: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        found = _class_images(root, name)
        if not found:
            raise StageError(
                StageReason.DATASET_INVALID,
                f"{_join(uri, name)} holds no images ({', '.join(IMAGE_EXTENSIONS)}): an empty class folder would "
                "still take a class index, so it is refused as torchvision's ImageFolder refuses it",
            )
        files.extend(found)
        labels.extend([index] * len(found))
    stems: dict[str, str] = {}
    for path in files:
        other = stems.setdefault(Path(path).stem, path)
        if other != path:
            raise StageError(StageReason.DATASET_INVALID,
                             f"{uri} holds both {other} and {path}: sample names (file names without their "
                             "extension) must be unique over all classes")
    return files, np.array(labels, dtype=np.int64)


def _class_images(root: Path, name: str) -> list[str]:
    """The image paths under root/name, relative to root, in ImageFolder's order; symlinked folders are not entered."""
    found = []
    for folder, _, names in sorted(os.walk(root / name)):
        relative = Path(folder).relative_to(root).as_posix()
        found.extend(f"{relative}/{file}" for file in sorted(names)
                     if Path(file).suffix.lower() in IMAGE_EXTENSIONS and (Path(folder) / file).is_file())
    return found


def _chosen(chosen: Sequence[str], files: Sequence[str], labels: np.ndarray | None, uri: str
            ) -> tuple[list[str], np.ndarray | None]:
    """The files named in calibration.files, in that order, with their labels."""
    position = {name: index for index, name in enumerate(files)}
    missing = [name for name in chosen if name not in position]
    if missing:
        raise StageError(StageReason.DATASET_INVALID,
                         f"calibration.files names {_counted(len(missing), 'file')} that {uri} does not hold "
                         f"as images: {_listed(missing)}")
    indices = [position[name] for name in chosen]
    return [files[index] for index in indices], None if labels is None else labels[indices]


def _sample_names(count: int) -> list[str]:
    return [f"sample-{index:06d}" for index in range(count)]


def _cifar100(context: StageContext, dataset: Config, variant: str, inputs: Sequence[Config]) -> Source:
    uri = dataset["uri"]
    pipeline = ImagePipeline(
        Preprocess.model_validate(dataset.get("preprocess", {})), variant, _single_input(inputs, "cifar100")
    )
    path = context.fetch_source(uri, context.workdir / "cifar-100-test", None)
    DATASET_BYTES.check(path.stat().st_size, f"{uri} holds")
    pixels, labels = _load_cifar(path, uri)
    samples = (
        pipeline.image(Image.fromarray(image), f"{uri} sample {index}") for index, image in enumerate(pixels)
    )
    return Source(_sample_names(len(labels)), labels, samples)


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """`_codecs.encode` as pickle protocol 2 uses it for bytes objects, and for nothing else."""
    if encoding != "latin1":
        raise pickle.UnpicklingError("refuses _codecs.encode with an encoding other than latin1")
    return codecs.encode(text, "latin1")


class _NdarrayType:
    """What `numpy.ndarray` unpickles to: the type `_reconstruct` is given, which the pickle itself cannot call."""


NDARRAY_TYPE = _NdarrayType()


def _empty_array(subtype: _NdarrayType, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """numpy's `_reconstruct` as an ndarray's pickle calls it: an empty array, which __setstate__ then fills with
    the pickled data. Any other shape would allocate memory the file does not hold."""
    if subtype is not NDARRAY_TYPE or tuple(shape) != (0,):
        raise pickle.UnpicklingError("refuses numpy _reconstruct other than an ndarray of shape (0,)")
    return _reconstruct(np.ndarray, (0,), dtype)


def _empty_bytes(*args: Any) -> bytes:
    """`bytes()` as protocol 2 pickles b'': with an argument it would allocate as much as the argument says."""
    if args:
        raise pickle.UnpicklingError("refuses bytes() with arguments")
    return b""


# Everything a pickled dict of numpy arrays, lists, bytes and ints needs; nothing that can run code or allocate
# more memory than the file holds.
PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _empty_array,
    ("numpy._core.multiarray", "_reconstruct"): _empty_array,
    ("numpy", "ndarray"): NDARRAY_TYPE,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
    ("__builtin__", "bytes"): _empty_bytes,  # protocol 2 names builtins by their Python 2 module
}


class ArrayUnpickler(pickle.Unpickler):
    """Loads plain containers and numpy arrays; refuses every other global."""

    def __init__(self, file: Any, uri: str):
        super().__init__(file, encoding="bytes")  # cifar's pickle comes from Python 2
        self.uri = uri

    def find_class(self, module: str, name: str) -> Any:
        allowed = PICKLE_GLOBALS.get((module, name))
        if allowed is None:  # the global's name is the file's content, so it is not quoted
            raise StageError(
                StageReason.UNSAFE_PICKLE,
                f"{self.uri}: refused: the pickle refers to Python objects other than plain arrays, lists, bytes "
                "and numbers",
            )
        return allowed


def _load_cifar(path: Path, uri: str) -> tuple[np.ndarray, np.ndarray]:
    """The cifar-100-python `test` pickle as (N x 32 x 32 x 3 uint8 RGB, int64 fine labels)."""
    try:
        with path.open("rb") as file:
            content = ArrayUnpickler(file, uri).load()
    except StageError:
        raise
    except Exception as error:  # noqa: BLE001 - a corrupt pickle fails in many ways, all the same to the user
        # The unpickler's message may quote the file's bytes, so only its type is named.
        raise StageError(StageReason.DATASET_INVALID,
                         f"{uri}: not a readable python pickle ({type(error).__name__})") from None
    if not isinstance(content, dict) or b"data" not in content or b"fine_labels" not in content:
        raise StageError(
            StageReason.DATASET_INVALID, f"{uri}: expected the cifar-100-python dict with b'data' and b'fine_labels'"
        )
    data = content[b"data"]
    side = CIFAR_SIDE
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * side**2:
        found = f"{data.dtype} {_dims(data.shape)} array" if isinstance(data, np.ndarray) else type(data).__name__
        raise StageError(StageReason.DATASET_INVALID,
                         f"{uri}: b'data' must be a uint8 N x {3 * side**2} array, got {found}")
    labels = np.asarray(content[b"fine_labels"])
    if labels.dtype.kind not in "iu" or labels.shape != (len(data),):
        raise StageError(StageReason.DATASET_INVALID, f"{uri}: b'fine_labels' must hold one integer per row of b'data'")
    pixels = data.reshape(-1, 3, side, side).transpose(0, 2, 3, 1)  # channel-major rows -> HWC images
    return np.ascontiguousarray(pixels), labels.astype(np.int64)


def _digits(context: StageContext, dataset: Config, variant: str, inputs: Sequence[Config]) -> Source:
    # scikit-learn is imported only here: no other dataset needs it.
    import sklearn
    from sklearn.datasets import load_digits

    pipeline = ImagePipeline(
        Preprocess.model_validate(dataset.get("preprocess", {})), variant, _single_input(inputs, "digits")
    )
    digits = load_digits()
    _, test = digits_split(len(digits.target))
    images = digits.images[test][..., np.newaxis]  # one channel, values 0..16
    samples = (pipeline.pixels(image, f"digits sample {index}") for index, image in enumerate(images))
    labels = digits.target[test].astype(np.int64)
    return Source(_sample_names(len(test)), labels, samples, {"scikit-learn": sklearn.__version__})


def _tensor(model_input: Config, kind: str) -> Tensor:
    shape = tuple(model_input["shape"][1:])
    if any(d < 1 for d in shape):
        raise StageError(
            StageReason.DATASET_INVALID,
            f"input {model_input['name']!r} has shape {list(model_input['shape'])}: "
            f"{kind} data needs every dimension after the batch axis fixed",
        )
    return Tensor(model_input["name"], shape, np.dtype(model_input.get("dtype", "float32")))


def _open_npy(path: Path, tensor: Tensor, where: str) -> np.ndarray:
    """The .npy file memory-mapped, as (samples, *tensor.shape)."""
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as error:  # numpy's message may quote the file's header
        raise StageError(StageReason.DATASET_INVALID, f"{where}: not a readable .npy file: its header is damaged or "
                         f"it is shorter than its header declares ({type(error).__name__})") from None
    if array.shape == tensor.shape:
        array = array[np.newaxis]
    if array.shape[1:] != tensor.shape or not len(array):
        raise StageError(
            StageReason.DATASET_INVALID,
            f"{where}: holds a {_dims(array.shape)} array; input {tensor.name!r} takes {_dims(tensor.shape)} samples",
        )
    if not np.can_cast(array.dtype, tensor.dtype, "same_kind"):
        raise StageError(StageReason.DATASET_INVALID,
                         f"{where}: holds {array.dtype} data; input {tensor.name!r} takes {tensor.dtype}")
    return array


def _sample_count(path: Path, tensor: Tensor, where: str) -> int:
    if path.suffix.lower() == ".npy":
        return len(_open_npy(path, tensor, where))
    size = path.stat().st_size
    if size == 0 or size % tensor.nbytes:
        raise StageError(
            StageReason.DATASET_INVALID,
            f"{where}: {size} bytes is not a multiple of one {_dims(tensor.shape)} {tensor.dtype} sample "
            f"of input {tensor.name!r} ({tensor.nbytes} bytes)",
        )
    return size // tensor.nbytes


def _read_tensors(path: Path, tensor: Tensor, where: str) -> np.ndarray:
    """The file's samples memory-mapped: a sample is read (and cast to the input's dtype) when it is taken."""
    if path.suffix.lower() == ".npy":
        return _open_npy(path, tensor, where)
    return np.memmap(path, dtype=tensor.dtype, mode="r").reshape(-1, *tensor.shape)


def _tensors(context: StageContext, dataset: Config, variant: str, inputs: Sequence[Config]) -> Source:
    uri = dataset["uri"]
    tensors = [_tensor(model_input, "tensors") for model_input in inputs]
    root = context.fetch_tree(uri, context.workdir / "tensors")
    # A single input's files lie in the directory itself, several inputs' in one sub-directory each.
    folders = {tensors[0].name: ""} if len(tensors) == 1 else {tensor.name: tensor.name for tensor in tensors}
    files = _tensor_files(root, folders, uri)
    _check_dataset_size(root, [f"{folder}/{name}" if folder else name for folder in folders.values() for name in files],
                        uri)
    counts = [_file_sample_counts(root, folders[tensor.name], tensor, files, uri) for tensor in tensors]
    _check_counts_agree(tensors, folders, files, counts, uri)
    labels = None
    if "labels" in dataset:
        labels = _match_labels(context, dataset, files, "files")
        for name, count in zip(files, counts[0]):
            if count != 1:
                raise StageError(
                    StageReason.DATASET_INVALID,
                    f"{_join(uri, folders[tensors[0].name], name)} holds {_counted(count, 'sample')}, "
                    f"but {dataset['labels']} gives one label per file",
                )
    names = [
        Path(name).stem if count == 1 else f"{Path(name).stem}-{index:06d}"
        for name, count in zip(files, counts[0])
        for index in range(count)
    ]
    return Source(names, labels, _tensor_samples(root, folders, tensors, files, uri))


def _check_counts_agree(
    tensors: Sequence[Tensor], folders: Mapping[str, str], files: Sequence[str], counts: Sequence[list[int]], uri: str
) -> None:
    first = tensors[0].name
    for tensor, tensor_counts in zip(tensors[1:], counts[1:]):
        for name, expected, count in zip(files, counts[0], tensor_counts):
            if count != expected:
                raise StageError(
                    StageReason.DATASET_INVALID,
                    f"{_join(uri, folders[tensor.name], name)} holds {_counted(count, 'sample')} "
                    f"but {_join(uri, folders[first], name)} holds {expected}",
                )


def _tensor_files(root: Path, folders: Mapping[str, str], uri: str) -> list[str]:
    """The file names shared by every input's folder, natural-sorted."""
    listings: dict[str, list[str]] = {}
    for name, folder in folders.items():
        directory = root / folder
        if not directory.is_dir():
            raise StageError(
                StageReason.DATASET_INVALID,
                f"{uri} has no directory {name!r}: a model with several inputs takes one sub-directory per input",
            )
        listings[name] = _list_files(directory, TENSOR_EXTENSIONS, _natural_key, _join(uri, folder))
    (first, files), *others = listings.items()
    if not files:
        raise StageError(StageReason.DATASET_EMPTY, f"{_join(uri, folders[first])} has no .npy or .bin files")
    for name, other in others:
        if other != files:
            differing = sorted(set(files) ^ set(other), key=_natural_key)
            raise StageError(
                StageReason.DATASET_INVALID,
                f"{_join(uri, folders[name])} and {_join(uri, folders[first])} must hold the same files; "
                f"differing: {_listed(differing)}",
            )
    return files


def _file_sample_counts(root: Path, folder: str, tensor: Tensor, files: Sequence[str], uri: str) -> list[int]:
    return [_sample_count(root / folder / name, tensor, _join(uri, folder, name)) for name in files]


def _tensor_samples(
    root: Path, folders: Mapping[str, str], tensors: Sequence[Tensor], files: Sequence[str], uri: str
) -> Iterator[Sample]:
    for name in files:
        arrays = {
            tensor.name: _read_tensors(root / folders[tensor.name] / name, tensor, _join(uri, folders[tensor.name], name))
            for tensor in tensors
        }
        for index in range(len(arrays[tensors[0].name])):
            yield {tensor.name: np.asarray(arrays[tensor.name][index], dtype=tensor.dtype) for tensor in tensors}


def _random(rng: np.random.Generator, tensor: Tensor) -> np.ndarray:
    if tensor.dtype.kind == "f":
        return rng.standard_normal(tensor.shape, dtype=np.float32).astype(tensor.dtype)
    return rng.integers(0, 10, size=tensor.shape, dtype=tensor.dtype)


def _synthetic(context: StageContext, dataset: Config, variant: str, inputs: Sequence[Config]) -> Source:
    tensors = [_tensor(model_input, "synthetic") for model_input in inputs]
    count = dataset.get("limit", SYNTHETIC_SAMPLES)
    rng = np.random.default_rng(dataset.get("seed", 0))
    samples = ({tensor.name: _random(rng, tensor) for tensor in tensors} for _ in range(count))
    return Source(_sample_names(count), None, samples)


LOADERS: dict[str, Callable[[StageContext, Config, str, Sequence[Config]], Source]] = {
    "imagenet": _imagenet,
    "cifar100": _cifar100,
    "digits": _digits,
    "tensors": _tensors,
    "synthetic": _synthetic,
}
