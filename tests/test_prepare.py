"""The prepare stage end to end on small real datasets, and the prepared-data reader."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hostile import ALLOCATING_PAYLOADS, Payload, cifar_pickle, command_payload, open_payload
from modeldeploy_jobs import prepare
from modeldeploy_jobs.data import PreparedData, digits_split, write_prepared
from modeldeploy_jobs.stage import StageContext, StageError, StageResult
from PIL import Image

IMAGE_INPUT = [{"name": "image", "shape": [-1, 3, 224, 224], "dtype": "float32", "layout": "NCHW"}]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# name, (width, height), labels-file label
IMAGES = [
    ("ILSVRC2012_val_00000001.JPEG", (300, 400), 65),
    ("ILSVRC2012_val_00000002.png", (400, 260), 970),
    ("ILSVRC2012_val_00000003.bmp", (256, 256), 230),
]


def preprocess(**overrides: Any) -> dict[str, Any]:
    """A `preprocess` config as the planner dumps it: every defaulted key present."""
    return {
        "resizeMode": "shorter",
        "interpolation": "bilinear",
        "scale": 1 / 255,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "channelOrder": "RGB",
        "layout": "NCHW",
        "dtype": "float32",
    } | overrides


def imagenet_preprocess(**overrides: Any) -> dict[str, Any]:
    return preprocess(resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, **overrides)


def run_prepare(
    tmp_path: Path, dataset: dict[str, Any], variant: str = "tensors", inputs: list[dict[str, Any]] | None = None,
    **config: Any,
) -> StageResult:
    run_dir = Path(tempfile.mkdtemp(dir=tmp_path, prefix="run-"))
    (run_dir / "out").mkdir()
    (run_dir / "work").mkdir()
    context = StageContext(
        key="0" * 64,
        kind="prepare",
        config={"dataset": {"seed": 0, "labelOffset": 0} | dataset, "variant": variant, "inputs": inputs or IMAGE_INPUT,
                **config},
        inputs={},
        workdir=run_dir / "work",
        outputs_dir=run_dir / "out",
        fetch_source=lambda uri, path, sha256: Path(uri),
        fetch_tree=lambda uri, path: Path(uri),
        artifact_uri=lambda manifest, name: f"file:///store/{manifest.key}/{name}",
    )
    return prepare.run(context)


def opened(result: StageResult) -> PreparedData:
    return PreparedData.open(result.outputs["meta.json"].parent)


def read_bins(result: StageResult) -> dict[str, bytes]:
    with tarfile.open(result.outputs["bins.tar"]) as tar:
        return {member.name: tar.extractfile(member).read() for member in tar.getmembers()}


def write_image(path: Path, size: tuple[int, int], seed: int) -> None:
    width, height = size
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 255, width)[np.newaxis, :, np.newaxis] * np.ones((height, 1, 3))
    pixels = np.clip(gradient + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def write_labels(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture
def imagenet(tmp_path: Path) -> dict[str, Any]:
    """An imagenet-style dataset config: three images of different sizes and formats, and val_label.txt."""
    images = tmp_path / "val"
    images.mkdir()
    for seed, (name, size, _) in enumerate(IMAGES):
        write_image(images / name, size, seed)
    (images / "notes.txt").write_text("not an image")
    labels = write_labels(tmp_path / "val_label.txt", [f"{name} {label}" for name, _, label in IMAGES])
    return {"kind": "imagenet", "uri": str(images), "labels": str(labels)}


def decoded(dataset: dict[str, Any], name: str) -> Image.Image:
    return Image.open(Path(dataset["uri"]) / name).convert("RGB")


# ---------------------------------------------------------------- imagenet


def test_imagenet_tensors_match_torchvision(tmp_path: Path, imagenet: dict[str, Any]) -> None:
    from torchvision import transforms

    result = run_prepare(tmp_path, imagenet | {"preprocess": imagenet_preprocess()})

    data = opened(result)
    expected = transforms.Compose([
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    images = data.take(range(len(IMAGES)))["image"]
    assert images.shape == (3, 3, 224, 224) and images.dtype == np.float32
    for image, (name, _, _) in zip(images, IMAGES):
        assert np.allclose(image, expected(decoded(imagenet, name)).numpy(), atol=1e-6)
    assert data.labels.tolist() == [label for _, _, label in IMAGES]
    assert data.labels.dtype == np.int64
    assert result.metrics == {
        "count": 3, "labelled": True, "numClasses": 971, "variant": "tensors", "sampleShape": [3, 224, 224]
    }
    assert set(result.toolchain) == {"numpy", "pillow"}
    assert set(result.outputs) == {"meta.json", "shard-00000.npz", "labels.npy"}
    meta = json.loads(result.outputs["meta.json"].read_text())
    assert meta["inputs"] == [{"name": "image", "shape": [3, 224, 224], "dtype": "float32"}]
    assert meta["shards"] == [{"name": "shard-00000.npz", "count": 3}]


def test_imagenet_bgr_nhwc_float16(tmp_path: Path, imagenet: dict[str, Any]) -> None:
    reference = opened(run_prepare(tmp_path, imagenet | {"preprocess": imagenet_preprocess()})).take([0, 1, 2])
    nhwc_input = [{"name": "image", "shape": [-1, 224, 224, 3], "dtype": "float16", "layout": "NHWC"}]
    config = imagenet_preprocess(channelOrder="BGR", layout="NHWC", dtype="float16")

    result = run_prepare(tmp_path, imagenet | {"preprocess": config}, inputs=nhwc_input)

    images = opened(result).take([0, 1, 2])["image"]
    assert images.dtype == np.float16 and images.shape == (3, 224, 224, 3)
    expected = reference["image"].transpose(0, 2, 3, 1)[..., ::-1].astype(np.float16)
    assert np.array_equal(images, expected)


def test_imagenet_limit_and_label_offset(tmp_path: Path, imagenet: dict[str, Any]) -> None:
    dataset = imagenet | {"preprocess": imagenet_preprocess(), "limit": 2, "labelOffset": 1}

    result = run_prepare(tmp_path, dataset)

    data = opened(result)
    assert data.count == 2
    assert data.labels.tolist() == [66, 971]
    assert result.metrics["numClasses"] == 972


def test_imagenet_without_preprocess_is_scaled_pixels(tmp_path: Path, imagenet: dict[str, Any]) -> None:
    dataset = imagenet | {"limit": 1}
    image_input = [{"name": "image", "shape": [-1, 3, 400, 300], "dtype": "float32", "layout": "NCHW"}]

    images = opened(run_prepare(tmp_path, dataset, inputs=image_input)).take([0])["image"]

    pixels = np.asarray(decoded(imagenet, IMAGES[0][0]))
    assert np.allclose(images[0], pixels.transpose(2, 0, 1) / 255, atol=1e-6)


def test_raw_uint8_bins_are_resized_cropped_pixels(tmp_path: Path, imagenet: dict[str, Any]) -> None:
    dataset = imagenet | {"preprocess": imagenet_preprocess(channelOrder="BGR", interpolation="bicubic")}

    result = run_prepare(tmp_path, dataset, variant="raw-uint8-bins")

    members = read_bins(result)
    stems = [Path(name).stem for name, _, _ in IMAGES]
    assert sorted(members) == sorted(f"image/{stem}.bin" for stem in stems)
    for (name, (width, height), _), stem in zip(IMAGES, stems):
        short = min(width, height)
        resized = decoded(imagenet, name).resize((256 * width // short, 256 * height // short), Image.Resampling.BICUBIC)
        pixels = np.asarray(resized)
        top, left = round((pixels.shape[0] - 224) / 2), round((pixels.shape[1] - 224) / 2)
        expected = pixels[top : top + 224, left : left + 224, ::-1]
        assert members[f"image/{stem}.bin"] == expected.tobytes()
    assert result.outputs["labels.txt"].read_text().splitlines() == [
        f"{stem} {label}" for stem, (_, _, label) in zip(stems, IMAGES)
    ]
    meta = json.loads(result.outputs["meta.json"].read_text())
    assert meta["names"] == stems
    assert meta["inputs"] == [{"name": "image", "shape": [224, 224, 3], "dtype": "uint8"}]
    assert result.metrics["sampleShape"] == [224, 224, 3]
    assert set(result.outputs) == {"meta.json", "bins.tar", "labels.txt"}


def test_sample_bins_hold_the_tensor_values(tmp_path: Path, imagenet: dict[str, Any]) -> None:
    dataset = imagenet | {"preprocess": imagenet_preprocess()}
    tensors = opened(run_prepare(tmp_path, dataset)).take([0, 1, 2])["image"]

    members = read_bins(run_prepare(tmp_path, dataset, variant="sample-bins"))

    for tensor, (name, _, _) in zip(tensors, IMAGES):
        assert members[f"image/{Path(name).stem}.bin"] == tensor.tobytes()


# ---------------------------------------------------------------- cifar100


def write_cifar(path: Path, count: int, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
    labels = rng.integers(0, 100, size=count).tolist()
    content = {b"filenames": [b"x.png"] * count, b"batch_label": b"testing batch 1 of 1",
               b"fine_labels": labels, b"coarse_labels": [0] * count, b"data": data}
    path.write_bytes(pickle.dumps(content, protocol=2))
    return data, labels


def test_cifar100_normalised(tmp_path: Path) -> None:
    data, labels = write_cifar(tmp_path / "test", 5)
    mean, std = [129.304, 124.070, 112.434], [68.170, 65.392, 70.418]
    dataset = {"kind": "cifar100", "uri": str(tmp_path / "test"), "preprocess": preprocess(scale=1.0, mean=mean, std=std)}

    result = run_prepare(tmp_path, dataset, inputs=[{"name": "input", "shape": [-1, 3, 32, 32], "dtype": "float32"}])

    prepared = opened(result)
    expected = (data.reshape(5, 3, 32, 32).astype(np.float32) - np.array(mean, np.float32)[:, None, None]) / np.array(
        std, np.float32
    )[:, None, None]
    assert np.allclose(prepared.take(range(5))["input"], expected, atol=1e-5)
    assert prepared.labels.tolist() == labels


def test_cifar100_exact_resize_and_crop_bins(tmp_path: Path) -> None:
    data, labels = write_cifar(tmp_path / "test", 3)
    dataset = {"kind": "cifar100", "uri": str(tmp_path / "test"),
               "preprocess": preprocess(resize=40, resizeMode="exact", crop=36, interpolation="nearest")}

    result = run_prepare(tmp_path, dataset, "raw-uint8-bins", [{"name": "x", "shape": [-1, 3, 36, 36]}])

    members = read_bins(result)
    image = Image.fromarray(data[1].reshape(3, 32, 32).transpose(1, 2, 0))
    expected = np.asarray(image.resize((40, 40), Image.Resampling.NEAREST))[2:38, 2:38]
    assert members["x/sample-000001.bin"] == expected.tobytes()
    assert result.outputs["labels.txt"].read_text().splitlines()[1] == f"sample-000001 {labels[1]}"


# ---------------------------------------------------------------- digits


DIGITS_INPUT = [{"name": "image", "shape": [-1, 1, 8, 8], "dtype": "float32", "layout": "NCHW"}]


def test_digits_test_split(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    dataset = {"kind": "digits", "preprocess": preprocess(scale=0.0625, mean=[0.5], std=[0.5])}

    result = run_prepare(tmp_path, dataset, inputs=DIGITS_INPUT)

    digits = load_digits()
    _, test = digits_split()
    data = opened(result)
    assert data.count == len(test) == 449
    expected = (digits.images[test][:, np.newaxis].astype(np.float32) * 0.0625 - 0.5) / 0.5
    assert np.allclose(data.take(range(data.count))["image"], expected, atol=1e-6)
    assert data.labels.tolist() == digits.target[test].tolist()
    assert result.metrics["numClasses"] == 10
    assert "scikit-learn" in result.toolchain


def test_digits_nhwc_bins_and_default_mean(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    dataset = {"kind": "digits", "limit": 2, "preprocess": preprocess(scale=1.0, layout="NHWC", dtype="uint8")}

    result = run_prepare(tmp_path, dataset, "sample-bins", [{"name": "image", "shape": [-1, 8, 8, 1], "dtype": "uint8"}])

    first = load_digits().images[digits_split()[1][0]].astype(np.uint8)[..., np.newaxis]
    assert read_bins(result)["image/sample-000000.bin"] == first.tobytes()
    assert json.loads(result.outputs["meta.json"].read_text())["names"] == ["sample-000000", "sample-000001"]


def test_digits_split_is_fixed_disjoint_and_complete() -> None:
    train, test = digits_split()
    again_train, again_test = digits_split()
    assert np.array_equal(train, again_train) and np.array_equal(test, again_test)
    assert len(test) == 1797 // 4
    assert not set(train.tolist()) & set(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(1797))


# ---------------------------------------------------------------- tensors and synthetic


def test_tensors_npy_natural_order_with_labels(tmp_path: Path) -> None:
    root = tmp_path / "tensors"
    root.mkdir()
    arrays = {f"x{index}": np.full((2, 3), index, dtype=np.float64) for index in (10, 2, 1)}
    for stem, array in arrays.items():
        np.save(root / f"{stem}.npy", array if stem != "x2" else array[np.newaxis])
    labels = write_labels(tmp_path / "labels.txt", ["x1.npy 3", "x2.npy 4", "x10.npy 5"])
    dataset = {"kind": "tensors", "uri": str(root), "labels": str(labels), "labelOffset": -1}

    result = run_prepare(tmp_path, dataset, inputs=[{"name": "features", "shape": [-1, 2, 3], "layout": "ND"}])

    data = opened(result)
    values = data.take([0, 1, 2])["features"]
    assert values.dtype == np.float32
    assert values[:, 0, 0].tolist() == [1, 2, 10]
    assert data.labels.tolist() == [2, 3, 4]


def test_tensors_bins_with_two_inputs(tmp_path: Path) -> None:
    root = tmp_path / "tensors"
    (root / "ids").mkdir(parents=True)
    (root / "mask").mkdir()
    ids = np.arange(3 * 4, dtype=np.int64).reshape(3, 4)
    ids[:2].tofile(root / "ids" / "batch_0.bin")  # two samples in one file
    ids[2:].tofile(root / "ids" / "batch_1.bin")
    (ids[:2] % 2).astype(np.int32).tofile(root / "mask" / "batch_0.bin")
    (ids[2:] % 2).astype(np.int32).tofile(root / "mask" / "batch_1.bin")
    inputs = [{"name": "ids", "shape": [-1, 4], "dtype": "int64", "layout": "ND"},
              {"name": "mask", "shape": [-1, 4], "dtype": "int32", "layout": "ND"}]

    result = run_prepare(tmp_path, {"kind": "tensors", "uri": str(root)}, "sample-bins", inputs)

    members = read_bins(result)
    meta = json.loads(result.outputs["meta.json"].read_text())
    assert meta["names"] == ["batch_0-000000", "batch_0-000001", "batch_1"]
    assert members["ids/batch_0-000001.bin"] == ids[1].tobytes()
    assert members["mask/batch_1.bin"] == (ids[2] % 2).astype(np.int32).tobytes()
    assert meta["labelled"] is False and "labels.txt" not in result.outputs


def test_synthetic_is_seeded(tmp_path: Path) -> None:
    inputs = [{"name": "x", "shape": [-1, 3, 4], "dtype": "float32"}, {"name": "n", "shape": [1, 5], "dtype": "int64"}]

    first = opened(run_prepare(tmp_path, {"kind": "synthetic", "seed": 7, "limit": 6}, inputs=inputs))
    again = opened(run_prepare(tmp_path, {"kind": "synthetic", "seed": 7, "limit": 6}, inputs=inputs))
    other = opened(run_prepare(tmp_path, {"kind": "synthetic", "seed": 8, "limit": 6}, inputs=inputs))

    samples = first.take(range(6))
    assert samples["x"].shape == (6, 3, 4) and samples["n"].shape == (6, 5)
    assert np.array_equal(samples["x"], again.take(range(6))["x"])
    assert not np.array_equal(samples["x"], other.take(range(6))["x"])
    assert samples["n"].dtype == np.int64 and samples["n"].min() >= 0 and samples["n"].max() < 10
    assert first.labels is None


def test_synthetic_defaults_to_256_samples(tmp_path: Path) -> None:
    result = run_prepare(tmp_path, {"kind": "synthetic"}, inputs=[{"name": "x", "shape": [-1, 2], "dtype": "float16"}])

    assert result.metrics == {"count": 256, "labelled": False, "numClasses": None, "variant": "tensors",
                              "sampleShape": [2]}


# ---------------------------------------------------------------- the reader


def test_prepared_data_reads_across_shards(tmp_path: Path) -> None:
    values = np.arange(10 * 2 * 3, dtype=np.float32).reshape(10, 2, 3)
    samples = ({"x": value, "y": np.int64(index)} for index, value in enumerate(values))
    labels = np.arange(10) % 4
    # 32 bytes per sample: three samples per 100-byte shard
    outputs, meta = write_prepared(tmp_path, "tensors", [str(i) for i in range(10)], samples, labels, shard_bytes=100)

    assert [shard["count"] for shard in meta["shards"]] == [3, 3, 3, 1]
    assert sorted(outputs) == ["labels.npy", "meta.json"] + [f"shard-0000{i}.npz" for i in range(4)]
    data = PreparedData.open(tmp_path)
    assert data.count == 10 and data.labels.tolist() == labels.tolist()
    taken = data.take([9, 0, 4, 3, 4])
    assert np.array_equal(taken["x"], values[[9, 0, 4, 3, 4]])
    assert taken["y"].tolist() == [9, 0, 4, 3, 4]

    batches = list(data.batches(4))
    assert [real for _, real in batches] == [4, 4, 2]
    assert batches[-1][0]["y"].tolist() == [8, 9, 9, 9]
    assert np.array_equal(np.concatenate([arrays["x"][:real] for arrays, real in batches]), values)

    assert data.calibration_indices(4).tolist() == [0, 3, 6, 9]
    assert data.calibration_indices(100).tolist() == list(range(10))
    with pytest.raises(IndexError):
        data.take([10])


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("payload", [open_payload, command_payload])
def test_malicious_cifar_pickle_is_refused(tmp_path: Path, payload: Callable[[Path], Payload]) -> None:
    marker = tmp_path / "pwned"
    uri = cifar_pickle(tmp_path / "test", payload(marker))

    with pytest.raises(StageError) as error:
        run_prepare(tmp_path, {"kind": "cifar100", "uri": str(uri)}, inputs=[{"name": "x", "shape": [-1, 3, 32, 32]}])

    assert error.value.reason == "UnsafePickle"
    assert error.value.message.startswith(f"{uri}: refused: the pickle refers to Python objects other than plain")
    assert "system" not in error.value.message and "open" not in error.value.message  # names from the file
    assert not marker.exists()


@pytest.mark.parametrize("payload", list(ALLOCATING_PAYLOADS.values()), ids=list(ALLOCATING_PAYLOADS))
def test_a_cifar_pickle_cannot_allocate_more_than_it_holds(tmp_path: Path, payload: Payload) -> None:
    uri = cifar_pickle(tmp_path / "test", payload)
    assert uri.stat().st_size < 300

    with pytest.raises(StageError) as error:
        run_prepare(tmp_path, {"kind": "cifar100", "uri": str(uri)}, inputs=[{"name": "x", "shape": [-1, 3, 32, 32]}])

    assert error.value.reason == "DatasetInvalid"
    assert error.value.message.startswith(f"{uri}: not a readable python pickle (")
    assert not isinstance(error.value.__context__, MemoryError)


def test_a_real_cifar_pickle_with_empty_bytes_still_loads(tmp_path: Path) -> None:
    pixels = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    content = {b"data": pixels, b"fine_labels": [3, 1], b"batch_label": b"", b"coarse_labels": [0, 0]}
    (tmp_path / "test").write_bytes(pickle.dumps(content, protocol=2))
    result = run_prepare(tmp_path, {"kind": "cifar100", "uri": str(tmp_path / "test")},
                         inputs=[{"name": "x", "shape": [-1, 3, 32, 32]}])
    assert opened(result).labels.tolist() == [3, 1]


Case = Callable[[Path, dict[str, Any]], tuple[dict[str, Any], str, list[dict[str, Any]]]]


def with_labels(lines: list[str]) -> Case:
    def case(tmp_path: Path, imagenet: dict[str, Any]) -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
        labels = write_labels(tmp_path / "bad_labels.txt", lines)
        return imagenet | {"labels": str(labels), "preprocess": imagenet_preprocess()}, "tensors", IMAGE_INPUT
    return case


def with_images(images: dict[str, bytes | tuple[int, int]], preprocess_config: dict[str, Any]) -> Case:
    def case(tmp_path: Path, imagenet: dict[str, Any]) -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
        folder = tmp_path / "other"
        folder.mkdir()
        for name, content in images.items():
            if isinstance(content, bytes):
                (folder / name).write_bytes(content)
            else:
                write_image(folder / name, content, 0)
        return {"kind": "imagenet", "uri": str(folder), "preprocess": preprocess_config}, "tensors", IMAGE_INPUT
    return case


def with_cifar(content: Any) -> Case:
    def case(tmp_path: Path, imagenet: dict[str, Any]) -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
        (tmp_path / "test").write_bytes(pickle.dumps(content, protocol=2))
        return {"kind": "cifar100", "uri": str(tmp_path / "test")}, "tensors", [{"name": "x", "shape": [-1, 3, 32, 32]}]
    return case


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def with_tensor_files(files: dict[str, bytes], inputs: list[dict[str, Any]], labels: str | None = None) -> Case:
    def case(tmp_path: Path, imagenet: dict[str, Any]) -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
        root = tmp_path / "tensors"
        for name, content in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(content)
        root.mkdir(exist_ok=True)
        dataset = {"kind": "tensors", "uri": str(root)} | ({"labels": str(root / labels)} if labels else {})
        return dataset, "sample-bins", inputs
    return case


def with_config(variant: str, inputs: list[dict[str, Any]], **dataset: Any) -> Case:
    def case(tmp_path: Path, imagenet: dict[str, Any]) -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
        return imagenet | {"preprocess": imagenet_preprocess()} | dataset, variant, inputs
    return case


def with_digits(preprocess_config: dict[str, Any]) -> Case:
    def case(tmp_path: Path, imagenet: dict[str, Any]) -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
        return {"kind": "digits", "preprocess": preprocess_config}, "tensors", DIGITS_INPUT
    return case


FLOAT_INPUT = [{"name": "x", "shape": [-1, 4], "dtype": "float32"}]

ERRORS: dict[str, tuple[Case, str, str]] = {
    "labels-missing": (
        with_labels([f"{IMAGES[0][0]} 1"]),
        "LabelsMissing",
        (
            "bad_labels.txt has no label for 2 of 3 images in {tmp}/val: "
            "ILSVRC2012_val_00000002.png, ILSVRC2012_val_00000003.bmp"
        ),
    ),
    "labels-mismatch": (
        with_labels([f"{name} 1" for name, _, _ in IMAGES] + ["ILSVRC2012_val_00000009.JPEG 4"]),
        "LabelsMismatch",
        "bad_labels.txt lists 4 images but {tmp}/val has 3; not there: the file named on line 4",
    ),
    "labels-malformed": (
        with_labels([f"{IMAGES[0][0]} 1", f"{IMAGES[1][0]} dog"]),
        "LabelsInvalid",
        "bad_labels.txt line 2: expected '<file> <label>' with an integer label",
    ),
    "no-images": (with_images({"readme.txt": b"x"}, imagenet_preprocess()), "DatasetEmpty", "{tmp}/other has no images"),
    "undecodable-image": (
        with_images({"a.jpg": b"not a jpeg"}, imagenet_preprocess()),
        "DatasetInvalid",
        "{tmp}/other/a.jpg: not an image Pillow can read (.jpeg, .jpg, .png, .bmp)",
    ),
    "image-smaller-than-crop": (
        with_images({"a.png": (200, 180)}, preprocess(crop=224)),
        "DatasetInvalid",
        "{tmp}/other/a.png: the 200x180 image is smaller than the 224x224 crop",
    ),
    "shape-mismatch": (
        with_config("tensors", [{"name": "image", "shape": [-1, 3, 299, 299], "layout": "NCHW"}]),
        "DatasetInvalid",
        "preprocessing produces 3x224x224 samples but input 'image' expects 3x299x299",
    ),
    "raw-shape-mismatch": (
        with_config("raw-uint8-bins", [{"name": "image", "shape": [-1, 299, 299, 3], "layout": "NHWC"}]),
        "DatasetInvalid",
        "preprocessing produces 224x224 samples but input 'image' expects 299x299",
    ),
    "two-inputs-for-images": (
        with_config("tensors", IMAGE_INPUT + [{"name": "scale", "shape": [-1, 1]}]),
        "DatasetInvalid",
        "imagenet datasets feed a single model input, but the model has 2: 'image', 'scale'",
    ),
    "limit-on-empty-tensors": (with_tensor_files({}, FLOAT_INPUT), "DatasetEmpty", "{tmp}/tensors has no .npy or .bin"),
    "bin-size": (
        with_tensor_files({"a.bin": b"\0" * 24}, FLOAT_INPUT),
        "DatasetInvalid",
        "{tmp}/tensors/a.bin: 24 bytes is not a multiple of one 4 float32 sample of input 'x' (16 bytes)",
    ),
    "npy-unreadable": (
        with_tensor_files({"a.npy": b""}, FLOAT_INPUT),
        "DatasetInvalid",
        "{tmp}/tensors/a.npy: not a readable .npy file",
    ),
    "npy-shape": (
        with_tensor_files({"a.npy": npy_bytes(np.zeros((2, 5), np.float32))}, FLOAT_INPUT),
        "DatasetInvalid",
        "{tmp}/tensors/a.npy: holds a 2x5 array; input 'x' takes 4 samples",
    ),
    "npy-dtype": (
        with_tensor_files({"a.npy": npy_bytes(np.zeros(4, np.float64))}, [{"name": "x", "shape": [-1, 4], "dtype": "int32"}]),
        "DatasetInvalid",
        "{tmp}/tensors/a.npy: holds float64 data; input 'x' takes int32",
    ),
    "input-files-differ": (
        with_tensor_files({"x/a.bin": b"\0" * 16, "x/b.bin": b"\0" * 16, "y/a.bin": b"\0" * 16},
                          FLOAT_INPUT + [{"name": "y", "shape": [-1, 4]}]),
        "DatasetInvalid",
        "{tmp}/tensors/y and {tmp}/tensors/x must hold the same files; differing: b.bin",
    ),
    "input-sample-counts-differ": (
        with_tensor_files({"x/a.bin": b"\0" * 32, "y/a.bin": b"\0" * 16}, FLOAT_INPUT + [{"name": "y", "shape": [-1, 4]}]),
        "DatasetInvalid",
        "{tmp}/tensors/y/a.bin holds 1 sample but {tmp}/tensors/x/a.bin holds 2",
    ),
    "labels-for-a-batch-file": (
        with_tensor_files({"a.bin": b"\0" * 32, "labels.txt": b"a.bin 1\n"}, FLOAT_INPUT, labels="labels.txt"),
        "DatasetInvalid",
        "{tmp}/tensors/a.bin holds 2 samples, but {tmp}/tensors/labels.txt gives one label per file",
    ),
    "mean-channels": (
        with_digits(preprocess(mean=[0.1, 0.2, 0.3])),
        "DatasetInvalid",
        "preprocess.mean has 3 values but the images have 1 channel",
    ),
    "missing-input-directory": (
        with_tensor_files({"x/a.bin": b"\0" * 16}, FLOAT_INPUT + [{"name": "y", "shape": [-1, 4]}]),
        "DatasetInvalid",
        "{tmp}/tensors has no directory 'y'",
    ),
    "cifar-not-a-dict": (with_cifar([1, 2, 3]), "DatasetInvalid", "{tmp}/test: expected the cifar-100-python dict"),
    "cifar-wrong-data": (
        with_cifar({b"data": np.zeros((2, 3072), np.float32), b"fine_labels": [0, 1]}),
        "DatasetInvalid",
        "{tmp}/test: b'data' must be a uint8 N x 3072 array, got float32 2x3072 array",
    ),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_errors(tmp_path: Path, imagenet: dict[str, Any], name: str) -> None:
    case, reason, message = ERRORS[name]
    dataset, variant, inputs = case(tmp_path, imagenet)

    with pytest.raises(StageError) as error:
        run_prepare(tmp_path, dataset, variant, inputs)

    assert error.value.reason == reason
    assert message.format(tmp=tmp_path) in error.value.message


def test_unsafe_pickle_payload_inside_an_array(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    cifar_pickle(tmp_path / "test", np.array([open_payload(marker)], dtype=object))

    with pytest.raises(StageError) as error:
        run_prepare(tmp_path, {"kind": "cifar100", "uri": str(tmp_path / "test")}, inputs=[{"name": "x", "shape": [-1, 3, 32, 32]}])

    assert error.value.reason == "UnsafePickle" and "io" not in error.value.message.removeprefix(str(tmp_path))
    assert not marker.exists()


def test_bins_tar_is_plain(tmp_path: Path) -> None:
    result = run_prepare(tmp_path, {"kind": "synthetic", "limit": 2}, "sample-bins", FLOAT_INPUT)

    with tarfile.open(result.outputs["bins.tar"], "r:") as tar:
        assert [member.name for member in tar.getmembers()] == ["x/sample-000000.bin", "x/sample-000001.bin"]
