"""The data side of the guides (issue 15): OpenCV decoding and resampling, exact-size resizing, torchvision's
ImageFolder layout, and the choice of calibration samples; each checked against the library it imitates, on the
photos scikit-learn ships (china.jpg, flower.jpg) and images cut from them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import sklearn.datasets
import torch
from modeldeploy.planner import Plan, plan
from modeldeploy.validation import SpecError, load_resource
from modeldeploy_jobs.stage import StageError, StageResult
from PIL import Image
from specs import Doc, base
from test_prepare import opened, read_bins
from test_prepare import run_prepare as run_prepare_stage
from torchvision import datasets, transforms

PHOTOS = Path(sklearn.datasets.__file__).parent / "images"
PHOTO_NAMES = ["china.jpg", "flower.jpg"]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def model_input(side: int) -> list[dict[str, Any]]:
    return [{"name": "image", "shape": [-1, 3, side, side], "dtype": "float32", "layout": "NCHW"}]


def run_prepare(tmp_path: Path, dataset: dict[str, Any], variant: str, side: int,
                inputs: list[dict[str, Any]] | None = None, **config: Any) -> StageResult:
    """The prepare stage on local files, for a square model input of `side` unless `inputs` are given."""
    return run_prepare_stage(tmp_path, dataset, variant, inputs or model_input(side), **config)


@pytest.fixture
def photos(tmp_path: Path) -> dict[str, Any]:
    """The two photos in a flat folder with a labels file; the first also saved with an EXIF quarter turn."""
    folder = tmp_path / "val"
    folder.mkdir()
    for name in PHOTO_NAMES:
        (folder / name).write_bytes((PHOTOS / name).read_bytes())
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees clockwise
    Image.open(PHOTOS / "china.jpg").save(folder / "turned.jpg", exif=exif, quality=92)
    labels = tmp_path / "val_label.txt"
    labels.write_text("china.jpg 3\nflower.jpg 1\nturned.jpg 3\n")
    return {"kind": "imagenet", "uri": str(folder), "labels": str(labels)}


NAMES = ["china", "flower", "turned"]


# ---------------------------------------------------------------- OpenCV decoding and resampling


def test_opencv_exact_resize_equals_cv2_bit_for_bit(tmp_path: Path, photos: dict[str, Any]) -> None:
    """Guide 001's imagenet_torch_preprocess.py: imread, BGR to RGB, 256x256 with INTER_CUBIC, uint8 HWC; its AIPP
    then cuts 224x224 at load_start_pos 16, which is where the host's centre crop cuts."""
    preprocess = {"decoder": "opencv", "resize": 256, "resizeMode": "exact", "interpolation": "bicubic", "crop": 224}

    uncropped = read_bins(run_prepare(tmp_path, photos | {"preprocess": preprocess}, "raw-uint8-uncropped-bins", 224))
    result = run_prepare(tmp_path, photos | {"preprocess": preprocess}, "raw-uint8-bins", 224)

    cropped = read_bins(result)
    for name in NAMES:
        path = Path(photos["uri"]) / f"{name}.jpg"
        expected = cv2.resize(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), (256, 256),
                              interpolation=cv2.INTER_CUBIC)
        assert uncropped[f"image/{name}.bin"] == expected.tobytes()
        assert cropped[f"image/{name}.bin"] == np.ascontiguousarray(expected[16:240, 16:240]).tobytes()
    assert result.toolchain["opencv"] == cv2.__version__


def test_uncropped_samples_must_all_have_one_size(tmp_path: Path, photos: dict[str, Any]) -> None:
    preprocess = {"decoder": "opencv", "resize": 256, "crop": 224}  # the turned photo decodes upright

    with pytest.raises(StageError, match=r"turned\.jpg: preprocessing produces 383x256 pixels but 256x383 for .*"
                                         r"china\.jpg: images that AIPP crops must all be resized to one size"):
        run_prepare(tmp_path, photos | {"preprocess": preprocess}, "raw-uint8-uncropped-bins", 224)


def test_opencv_and_pillow_bicubic_differ_so_the_choice_matters(tmp_path: Path, photos: dict[str, Any]) -> None:
    exact = {"resize": 256, "resizeMode": "exact", "interpolation": "bicubic"}
    dataset = photos | {"limit": 1}

    opencv = read_bins(run_prepare(tmp_path, dataset | {"preprocess": exact | {"decoder": "opencv"}}, "raw-uint8-bins",
                                   256))
    pillow = read_bins(run_prepare(tmp_path, dataset | {"preprocess": exact}, "raw-uint8-bins", 256))

    opencv_pixels, pillow_pixels = (np.frombuffer(found["image/china.bin"], np.uint8).astype(int)
                                    for found in (opencv, pillow))
    expected = np.asarray(Image.open(PHOTOS / "china.jpg").convert("RGB").resize((256, 256), Image.Resampling.BICUBIC))
    assert pillow["image/china.bin"] == expected.tobytes()
    assert np.count_nonzero(opencv_pixels != pillow_pixels) > opencv_pixels.size // 10


@pytest.mark.parametrize("interpolation, flag", [("bilinear", cv2.INTER_LINEAR), ("nearest", cv2.INTER_NEAREST)])
def test_opencv_shorter_side_and_center_crop_normalised(
    tmp_path: Path, photos: dict[str, Any], interpolation: str, flag: int
) -> None:
    preprocess = {"decoder": "opencv", "resize": 256, "crop": 224, "interpolation": interpolation,
                  "mean": IMAGENET_MEAN, "std": IMAGENET_STD}

    images = opened(run_prepare(tmp_path, photos | {"preprocess": preprocess}, "tensors", 224)).take([0, 1, 2])["image"]

    for image, name in zip(images, NAMES):
        rgb = cv2.cvtColor(cv2.imread(str(Path(photos["uri"]) / f"{name}.jpg")), cv2.COLOR_BGR2RGB)
        height, width = rgb.shape[:2]
        size = (256, int(256 * height / width)) if width <= height else (int(256 * width / height), 256)
        resized = cv2.resize(rgb, size, interpolation=flag)
        top, left = round((resized.shape[0] - 224) / 2), round((resized.shape[1] - 224) / 2)
        cropped = resized[top : top + 224, left : left + 224]
        expected = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)(torch.from_numpy(cropped).permute(2, 0, 1) / 255)
        assert np.allclose(image, expected.numpy(), atol=1e-6)


def test_opencv_turns_the_image_as_its_exif_says_like_imread(tmp_path: Path, photos: dict[str, Any]) -> None:
    """cv2.imread applies the EXIF orientation: the 640x427 header of the turned photo decodes 427 wide, 640 high,
    which the size checks made from the header must expect."""
    folder = tmp_path / "turned"
    folder.mkdir()
    (Path(photos["uri"]) / "turned.jpg").rename(folder / "turned.jpg")
    upright = [{"name": "image", "shape": [-1, 3, 640, 427], "dtype": "float32", "layout": "NCHW"}]
    dataset = {"kind": "imagenet", "uri": str(folder), "preprocess": {"decoder": "opencv"}}

    result = run_prepare(tmp_path, dataset, "raw-uint8-bins", 0, inputs=upright)

    expected = cv2.cvtColor(cv2.imread(str(folder / "turned.jpg")), cv2.COLOR_BGR2RGB)
    assert Image.open(folder / "turned.jpg").size == (640, 427) and expected.shape == (640, 427, 3)
    assert read_bins(result)["image/turned.bin"] == expected.tobytes()


def test_opencv_refuses_a_damaged_image_naming_it(tmp_path: Path, photos: dict[str, Any]) -> None:
    path = Path(photos["uri"]) / "flower.jpg"
    path.write_bytes(path.read_bytes()[:2000])
    preprocess = {"decoder": "opencv", "resize": 256, "resizeMode": "exact"}

    with pytest.raises(StageError, match=r"flower\.jpg: the image is damaged"):
        opened(run_prepare(tmp_path, photos | {"preprocess": preprocess}, "raw-uint8-bins", 256))


# ---------------------------------------------------------------- Pillow against torchvision


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_pillow_shorter_side_and_center_crop_equal_torchvision(
    tmp_path: Path, photos: dict[str, Any], interpolation: str
) -> None:
    """Guide 002's gen_model_preprocess.py: Resize(256) with an int, CenterCrop(224), normalised on the host."""
    preprocess = {"resize": 256, "crop": 224, "interpolation": interpolation}
    mode = transforms.InterpolationMode(interpolation)
    crop = transforms.Compose([transforms.Resize(256, interpolation=mode), transforms.CenterCrop(224)])
    normalised = transforms.Compose([crop, transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    raw = read_bins(run_prepare(tmp_path, photos | {"preprocess": preprocess}, "raw-uint8-bins", 224))
    tensors = opened(run_prepare(tmp_path, photos | {"preprocess": preprocess | {
        "mean": IMAGENET_MEAN, "std": IMAGENET_STD}}, "tensors", 224)).take([0, 1, 2])["image"]

    for name, image in zip(NAMES, tensors):
        photo = Image.open(Path(photos["uri"]) / f"{name}.jpg").convert("RGB")
        assert raw[f"image/{name}.bin"] == np.asarray(crop(photo)).tobytes()
        assert np.allclose(image, normalised(photo).numpy(), atol=1e-6)


# ---------------------------------------------------------------- torchvision's ImageFolder layout


def cut(photo: str, box: tuple[int, int, int, int]) -> Image.Image:
    return Image.open(PHOTOS / photo).convert("RGB").crop(box)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Class folders in an order that tests the sort: upper case before lower, a class with nested folders whose
    paths sort 'sub' < 'sub-x' < 'sub/deeper', extensions in either case, and files ImageFolder passes over."""
    root = tmp_path / "val"
    files = {
        "n02/b.JPEG": ("china.jpg", (0, 0, 300, 260)),
        "n02/a.png": ("flower.jpg", (40, 10, 330, 300)),
        "n02/sub/c.jpg": ("china.jpg", (100, 50, 400, 400)),
        "n02/sub-x/d.bmp": ("flower.jpg", (200, 0, 500, 280)),
        "n02/sub/deeper/e.jpeg": ("china.jpg", (300, 100, 640, 427)),
        "N01/f.jpg": ("flower.jpg", (0, 100, 256, 427)),
        "a_class/g.JPG": ("china.jpg", (50, 150, 350, 427)),
        "a_class/h.jpg": ("flower.jpg", (320, 60, 640, 400)),
    }
    for relative, (photo, box) in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        cut(photo, box).save(path, format={".jpeg": "JPEG", ".jpg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[
            path.suffix.lower()])
    (root / "n02" / "notes.txt").write_text("not an image")
    cut("china.jpg", (0, 0, 260, 260)).save(root / "outside.jpg")  # beside the classes: no class, not a sample
    return root


def test_image_folder_labels_and_order_equal_torchvision(tmp_path: Path, image_folder: Path) -> None:
    reference = datasets.ImageFolder(str(image_folder))
    preprocess = {"resize": 256, "crop": 224, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    dataset = {"kind": "imagenet", "uri": str(image_folder), "folderLayout": "imageFolder", "preprocess": preprocess}

    result = run_prepare(tmp_path, dataset, "sample-bins", 224)

    data = opened(result)
    assert reference.class_to_idx == {"N01": 0, "a_class": 1, "n02": 2}
    assert [Path(path).stem for path, _ in reference.samples] == ["f", "g", "h", "a", "b", "c", "d", "e"]
    assert data.names == [Path(path).stem for path, _ in reference.samples]
    assert data.labels.tolist() == [label for _, label in reference.samples]
    transform = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                    transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    images = data.take(range(data.count))["image"]
    for image, (path, _) in zip(images, reference.samples, strict=True):
        assert np.allclose(image, transform(reference.loader(path)).numpy(), atol=1e-6)
    assert result.metrics["numClasses"] == 3


def test_image_folder_refuses_an_empty_class(tmp_path: Path, image_folder: Path) -> None:
    (image_folder / "m_empty").mkdir()
    (image_folder / "m_empty" / "readme.txt").write_text("no images")
    dataset = {"kind": "imagenet", "uri": str(image_folder), "folderLayout": "imageFolder"}

    with pytest.raises(StageError, match=r"m_empty holds no images .* would still take a class index"):
        run_prepare(tmp_path, dataset | {"preprocess": {"resize": 224, "crop": 224}}, "tensors", 224)


def test_image_folder_refuses_one_name_in_two_classes(tmp_path: Path, image_folder: Path) -> None:
    cut("china.jpg", (0, 0, 300, 300)).save(image_folder / "N01" / "g.png")
    dataset = {"kind": "imagenet", "uri": str(image_folder), "folderLayout": "imageFolder"}

    with pytest.raises(StageError, match=r"holds both N01/g\.png and a_class/g\.JPG"):
        run_prepare(tmp_path, dataset | {"preprocess": {"resize": 224, "crop": 224}}, "tensors", 224)


def test_image_folder_refuses_a_folder_without_classes(tmp_path: Path, photos: dict[str, Any]) -> None:
    dataset = {"kind": "imagenet", "uri": photos["uri"], "folderLayout": "imageFolder"}

    with pytest.raises(StageError, match="has no class folders"):
        run_prepare(tmp_path, dataset, "tensors", 224)


# ---------------------------------------------------------------- the spec


def imagenet_spec(**dataset: Any) -> Doc:
    doc = base()
    doc["spec"]["source"]["inputs"] = [{"name": "input", "shape": [-1, 3, 224, 224]}]
    doc["spec"]["dataset"] = {"kind": "imagenet", "uri": "s3://data/imagenet/val", "limit": 1000,
                              "labels": "s3://data/imagenet/val_label.txt",
                              "preprocess": {"resize": 256, "crop": 224}} | dataset
    return doc


def errors(doc: Doc) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as caught:
        load_resource(doc)
    return [(error.path, error.message) for error in caught.value.errors]


@pytest.mark.parametrize("change, path, message", [
    (lambda spec: spec["dataset"] | {"folderLayout": "imageFolder"}, "spec.dataset.labels",
     "the class folders are the labels"),
    (lambda spec: {**spec["dataset"], "kind": "cifar100", "folderLayout": "imageFolder",
                   "preprocess": {"crop": 32}}, "spec.dataset.folderLayout", "a layout of imagenet datasets"),
    (lambda spec: {key: value for key, value in spec["dataset"].items() if key != "labels"}, "spec.dataset.labels",
     "or folderLayout: imageFolder"),
    (lambda spec: spec["dataset"] | {"preprocess": {"decoder": "cv2"}}, "spec.dataset.preprocess.decoder", ""),
])
def test_dataset_fields_are_checked_naming_the_field(change: Any, path: str, message: str) -> None:
    doc = imagenet_spec()
    doc["spec"]["dataset"] = change(doc["spec"])

    found = errors(doc)

    assert any(where == path and message in text for where, text in found), found


def test_an_image_folder_spec_needs_no_labels_file() -> None:
    doc = imagenet_spec(folderLayout="imageFolder")
    del doc["spec"]["dataset"]["labels"]

    load_resource(doc)


@pytest.mark.parametrize("calibration, path, message", [
    ({"samples": 2, "files": ["a.JPEG", "b.JPEG"]}, "spec.calibration.files", "for select: files only"),
    ({"samples": 2, "select": "files"}, "spec.calibration.files", "select: files needs files"),
    ({"samples": 3, "select": "files", "files": ["a.JPEG", "b.JPEG"]}, "spec.calibration.samples",
     "samples must be the number of files"),
    ({"samples": 2, "select": "files", "files": ["a.JPEG", "../b.JPEG"]}, "spec.calibration.files[1]", ""),
    ({"samples": 2, "select": "files", "files": ["a.JPEG", "a.JPEG"]}, "spec.calibration.files[1]", "duplicate"),
    ({"samples": 2, "select": "last"}, "spec.calibration.select", ""),
])
def test_calibration_fields_are_checked_naming_the_field(calibration: dict[str, Any], path: str, message: str) -> None:
    doc = imagenet_spec()
    doc["spec"]["calibration"] = calibration

    found = errors(doc)

    assert any(where == path and message in text.lower() for where, text in found), found


# ---------------------------------------------------------------- calibration samples in the plan


def calibration_sources(result: Plan) -> set[str]:
    """The prepare tasks that calibrate and calibrating compile tasks draw from."""
    return {task.inputs.get("data") or task.inputs["calibrationData"] for task in result.tasks
            if task.kind == "calibrate" or (task.kind == "compile" and "calibrationData" in task.inputs)}


def prepare_task(result: Plan, name: str) -> Any:
    return next(task for task in result.tasks if task.name == name)


def test_spread_calibrates_on_the_evaluations_tensors() -> None:
    result = plan(load_resource(imagenet_spec()).spec)

    assert calibration_sources(result) == {prepare_task(result, "prepare tensors").key}
    calibrations = [task.config["calibration"] for task in result.tasks if "calibration" in task.config]
    assert calibrations and all(config == {"samples": 64, "method": "auto"} for config in calibrations)


def test_first_calibrates_on_the_dataset_cut_to_the_samples() -> None:
    spread = plan(load_resource(imagenet_spec()).spec)
    doc = imagenet_spec()
    doc["spec"]["calibration"] = {"samples": 10, "select": "first"}

    result = plan(load_resource(doc).spec)

    calibration = prepare_task(result, "prepare calibration")
    tensors = prepare_task(result, "prepare tensors")
    assert calibration_sources(result) == {calibration.key}
    assert calibration.config == {**tensors.config, "dataset": {**tensors.config["dataset"], "limit": 10}}
    assert tensors.key == prepare_task(spread, "prepare tensors").key
    assert all(task.config["calibration"]["select"] == "first" for task in result.tasks
               if "calibration" in task.config)


def test_files_calibrates_on_the_listed_files() -> None:
    doc = imagenet_spec()
    doc["spec"]["calibration"] = {"samples": 2, "select": "files", "files": ["b.JPEG", "a.JPEG"]}

    result = plan(load_resource(doc).spec)

    calibration = prepare_task(result, "prepare calibration")
    assert calibration_sources(result) == {calibration.key}
    assert calibration.config == {**prepare_task(result, "prepare tensors").config, "files": ["b.JPEG", "a.JPEG"]}


def test_specs_without_the_new_fields_dump_the_configs_they_dumped_before() -> None:
    """The prepare config a key is computed from, as it was before decoder, folderLayout and select existed;
    writing the new fields' defaults changes no key."""
    doc = imagenet_spec()
    explicit = copy.deepcopy(doc)
    explicit["spec"]["dataset"] |= {"folderLayout": "flat"}
    explicit["spec"]["dataset"]["preprocess"] |= {"decoder": "pil"}
    explicit["spec"]["calibration"] |= {"select": "spread"}

    result = plan(load_resource(doc).spec)

    assert prepare_task(result, "prepare tensors").config["dataset"] == {
        "kind": "imagenet", "uri": "s3://data/imagenet/val", "labels": "s3://data/imagenet/val_label.txt",
        "limit": 1000, "labelOffset": 0, "seed": 0,
        "preprocess": {"resize": 256, "resizeMode": "shorter", "crop": 224, "interpolation": "bilinear",
                       "scale": 1 / 255, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "channelOrder": "RGB",
                       "layout": "NCHW", "dtype": "float32"},
    }
    assert [task.key for task in plan(load_resource(explicit).spec).tasks] == [task.key for task in result.tasks]


# ---------------------------------------------------------------- calibration samples prepared


def test_files_prepares_exactly_the_listed_images_in_their_order(tmp_path: Path, photos: dict[str, Any]) -> None:
    preprocess = {"resize": 256, "crop": 224}

    result = run_prepare(tmp_path, photos | {"preprocess": preprocess}, "tensors", 224,
                         files=["turned.jpg", "china.jpg"])

    data = opened(result)
    everything = opened(run_prepare(tmp_path, photos | {"preprocess": preprocess}, "tensors", 224))
    assert data.labels.tolist() == [3, 3]
    assert data.calibration_indices(2).tolist() == [0, 1]
    assert np.array_equal(data.take([0, 1])["image"], everything.take([2, 0])["image"])


def test_files_in_an_image_folder_are_class_paths(tmp_path: Path, image_folder: Path) -> None:
    dataset = {"kind": "imagenet", "uri": str(image_folder), "folderLayout": "imageFolder",
               "preprocess": {"resize": 224, "crop": 224}}

    data = opened(run_prepare(tmp_path, dataset, "tensors", 224, files=["n02/sub/deeper/e.jpeg", "N01/f.jpg"]))

    assert data.labels.tolist() == [2, 0]


def test_files_not_in_the_dataset_are_refused_naming_them(tmp_path: Path, photos: dict[str, Any]) -> None:
    with pytest.raises(StageError, match=r"calibration\.files names 2 files that .* does not hold as images: "
                                         r"china\.JPG, missing\.jpg"):
        run_prepare(tmp_path, photos, "tensors", 0, files=["china.JPG", "flower.jpg", "missing.jpg"])


def test_files_of_a_dataset_without_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="calibration.files names image files, and a digits dataset has none"):
        run_prepare(tmp_path, {"kind": "digits"}, "tensors", 0, files=["a.png"])


def test_first_prepares_the_leading_samples(tmp_path: Path, photos: dict[str, Any]) -> None:
    preprocess = {"resize": 256, "crop": 224}
    everything = opened(run_prepare(tmp_path, photos | {"preprocess": preprocess}, "tensors", 224))

    first = opened(run_prepare(tmp_path, photos | {"preprocess": preprocess, "limit": 2}, "tensors", 224))

    assert first.calibration_indices(2).tolist() == [0, 1]
    assert np.array_equal(first.take([0, 1])["image"], everything.take([0, 1])["image"])
