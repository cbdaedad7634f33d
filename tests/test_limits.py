"""Small files that declare huge contents are refused from what they declare, before they take memory.

Each case is built for real: a 1-bit PNG whose header says 12000x12000, a checkpoint zip with one entry
that inflates far beyond its size, an ONNX model whose external data declares a terabyte. Peak memory is
measured in a child process (Pillow and protobuf allocate outside tracemalloc's view), as the growth of
its maximum resident set size over the call.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from conftest import EXAMPLES
from modeldeploy.spec import Source
from modeldeploy_jobs import limits
from modeldeploy_jobs.stage import StageError, StageReason
from onnx import TensorProto, helper, numpy_helper
from stages import run_stage

TESTS = Path(__file__).resolve().parent
MIB = 1024**2
# What a refusal may cost above the child's resident set after imports: far below any decoded image or tensor.
REFUSAL_MEMORY = 64 * MIB

IMAGE_INPUT = [{"name": "image", "shape": [-1, 3, 224, 224], "dtype": "float32", "layout": "NCHW"}]
DIGITS = {
    "format": "pytorch",
    "architecture": "python:digits_cnn:DigitsCNN",
    "code": str(EXAMPLES / "digits_cnn.py"),
    "inputs": [{"name": "image", "shape": [-1, 1, 8, 8]}],
    "outputs": ["logits"],
}


def one_bit_png(path: Path, width: int, height: int) -> Path:
    """An all-black 1-bit grey PNG, written row by row: its file is a few KB whatever its size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the packed pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def zip_bomb_checkpoint(path: Path, inflated: int) -> Path:
    """A torch.save-like zip whose one tensor entry is `inflated` zero bytes, deflated to a tiny file."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/version", b"3\n")
        with archive.open("archive/data/0", "w", force_zip64=True) as entry:
            block = bytes(MIB)
            for _ in range(inflated // MIB):
                entry.write(block)
    return path


def external_data_model(directory: Path, declared_length: int, dims: list[int], stored: bytes = bytes(16)) -> Path:
    """y = x + w, with w an initializer whose data lies in w.bin and whose external-data entry declares its length."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "w.bin").write_bytes(stored)
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=dims, data_location=TensorProto.EXTERNAL)
    for key, value in {"location": "w.bin", "offset": "0", "length": str(declared_length)}.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", dims[-1]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", dims[-1]])],
        initializer=[weight],
    )
    path = directory / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def onnx_source(model: Path, features: int) -> dict[str, Any]:
    fields = {"format": "onnx", "uri": str(model), "opset": 17,
              "inputs": [{"name": "x", "shape": [-1, features], "layout": "ND"}]}
    return Source.model_validate(fields).model_dump(mode="json", by_alias=True, exclude_none=True)


def pytorch_source(**fields: Any) -> dict[str, Any]:
    return Source.model_validate({**DIGITS, **fields}).model_dump(mode="json", by_alias=True, exclude_none=True)


def prepare_config(directory: Path) -> dict[str, Any]:
    return {"dataset": {"kind": "imagenet", "uri": str(directory), "seed": 0, "labelOffset": 0},
            "variant": "tensors", "inputs": IMAGE_INPUT}


# What a stage imports as it runs, imported before the measurement starts.
WARM_IMPORTS = {"prepare": ["numpy", "PIL.Image"], "convert": ["numpy", "onnx", "onnxruntime", "torch"]}

CHILD = """
import json, resource, sys
from pathlib import Path
from stages import run_stage
from modeldeploy_jobs.stage import StageError

kind, config, workdir = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    run_stage(kind, config, workdir)
    outcome = {"reason": None, "message": None}
except StageError as error:
    outcome = {"reason": error.reason.value, "message": error.message}
outcome["grewBytes"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
print(json.dumps(outcome))
"""


def stage_in_child(kind: str, config: dict[str, Any], workdir: Path, **environment: str) -> dict[str, Any]:
    """Runs a stage in a fresh interpreter (stage modules and their libraries imported first, so the measured growth
    is the call's own); its StageError's reason and message and how much its peak resident set grew."""
    workdir.mkdir(parents=True, exist_ok=True)
    warm = f"import modeldeploy_jobs.{kind}, {', '.join(WARM_IMPORTS[kind])}\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           **environment}
    result = subprocess.run([sys.executable, "-c", warm + CHILD, kind, json.dumps(config), str(workdir)],
                            capture_output=True, text=True, timeout=300, check=False, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


# ---------------------------------------------------------------- images


def test_a_tiny_png_declaring_144_megapixels_is_refused_before_decoding(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    png = one_bit_png(images / "huge.png", 12000, 12000)
    assert png.stat().st_size < 32 * 1024
    outcome = stage_in_child("prepare", prepare_config(images), tmp_path / "work")
    assert outcome["reason"] == "LimitExceeded"
    assert outcome["message"].startswith(f"{images}/huge.png has more than")
    assert "MODELDEPLOY_MAX_IMAGE_PIXELS" in outcome["message"] and f"{limits.IMAGE_PIXELS.default:,}" in outcome["message"]
    # Decoding it would take 144 MB as 1-bit, 432 MB as RGB and 1.7 GB as float32.
    assert outcome["grewBytes"] < REFUSAL_MEMORY


def test_an_image_over_a_lowered_pixel_cap_names_its_size(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    one_bit_png(images / "big.png", 3000, 2000)
    outcome = stage_in_child("prepare", prepare_config(images), tmp_path / "work",
                             MODELDEPLOY_MAX_IMAGE_PIXELS="4000000")
    assert outcome["reason"] == "LimitExceeded"
    assert outcome["message"] == (
        f"{images}/big.png (3000x2000) has 6,000,000 pixels, more than the 4,000,000 this installation allows "
        "(an administrator can raise it with $MODELDEPLOY_MAX_IMAGE_PIXELS)"
    )


def test_within_the_cap_a_shape_the_model_cannot_take_is_refused_from_the_header(tmp_path: Path) -> None:
    """No resize or crop: the 12000x12000 image would become a 3x12000x12000 sample; the header says so already."""
    images = tmp_path / "images"
    images.mkdir()
    one_bit_png(images / "huge.png", 12000, 12000)
    outcome = stage_in_child("prepare", prepare_config(images), tmp_path / "work",
                             MODELDEPLOY_MAX_IMAGE_PIXELS=str(200_000_000))
    assert outcome["reason"] == "DatasetInvalid"
    assert "preprocessing produces 3x12000x12000 samples but input 'image' expects 3x224x224" in outcome["message"]
    assert outcome["grewBytes"] < REFUSAL_MEMORY


def test_an_image_within_every_cap_is_prepared(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    one_bit_png(images / "a.png", 300, 250)
    config = prepare_config(images)
    config["dataset"]["preprocess"] = {"resize": 256, "crop": 224}
    result = run_stage("prepare", config, tmp_path / "work")
    assert result.metrics["count"] == 1 and result.metrics["sampleShape"] == [3, 224, 224]


def test_the_dataset_file_count_and_size_caps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        one_bit_png(images / name, 8, 8)
    monkeypatch.setenv("MODELDEPLOY_MAX_DATASET_FILES", "2")
    with pytest.raises(StageError) as caught:
        run_stage("prepare", prepare_config(images), tmp_path / "work-files")
    assert caught.value.reason is StageReason.LIMIT_EXCEEDED
    assert caught.value.message.startswith(f"{images} holds 3 files, more than the 2 this installation allows")
    monkeypatch.delenv("MODELDEPLOY_MAX_DATASET_FILES")
    monkeypatch.setenv("MODELDEPLOY_MAX_DATASET_BYTES", "100")
    with pytest.raises(StageError) as caught:
        run_stage("prepare", prepare_config(images), tmp_path / "work-bytes")
    assert caught.value.reason is StageReason.LIMIT_EXCEEDED and "$MODELDEPLOY_MAX_DATASET_BYTES" in caught.value.message


# ---------------------------------------------------------------- weights and models


def test_a_zip_bomb_checkpoint_is_refused_from_its_central_directory(tmp_path: Path) -> None:
    bomb = zip_bomb_checkpoint(tmp_path / "bomb.pth", 256 * MIB)
    assert bomb.stat().st_size < MIB
    # The entry really inflates to that much: reading it whole checks its size and CRC.
    with zipfile.ZipFile(bomb) as archive, archive.open("archive/data/0") as entry:
        assert sum(len(block) for block in iter(lambda: entry.read(16 * MIB), b"")) == 256 * MIB
    outcome = stage_in_child("convert", pytorch_source(weights=str(bomb)), tmp_path / "work",
                             MODELDEPLOY_MAX_MODEL_BYTES=str(64 * MIB))
    assert outcome["reason"] == "LimitExceeded"
    assert outcome["message"].startswith(f"{bomb} unpacks to 268,435,4")
    assert f"more than the {64 * MIB:,} this installation allows" in outcome["message"]
    assert "$MODELDEPLOY_MAX_MODEL_BYTES" in outcome["message"]
    assert outcome["grewBytes"] < REFUSAL_MEMORY


def test_a_checkpoint_within_the_cap_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = EXAMPLES / "digits_cnn.pt"
    monkeypatch.setenv("MODELDEPLOY_MAX_MODEL_BYTES", str(weights.stat().st_size * 2))
    result = run_stage("convert", pytorch_source(weights=str(weights)), tmp_path)
    assert result.metrics["parity"]["cosine"] > 0.9999


def test_a_text_file_given_as_weights_is_named_as_no_checkpoint(tmp_path: Path) -> None:
    text = tmp_path / "weights.pth"
    text.write_text("epoch 12 loss 0.31\nsecret-looking line\n")
    with pytest.raises(StageError) as caught:
        run_stage("convert", pytorch_source(weights=str(text)), tmp_path / "work")
    assert caught.value.reason is StageReason.WEIGHTS_INVALID
    assert caught.value.message == (f"{text}: not a readable PyTorch checkpoint: the file is not a whole zip archive "
                                    "as torch.save writes (nor the pickle it wrote before 1.6)")


def test_external_data_declaring_a_terabyte_is_refused_before_it_is_read(tmp_path: Path) -> None:
    model = external_data_model(tmp_path / "model", declared_length=2**40, dims=[2**18, 2**20])
    outcome = stage_in_child("convert", onnx_source(model, 2**20), tmp_path / "work")
    assert outcome["reason"] == "LimitExceeded"
    assert outcome["message"].startswith(f"{model} and its external data declare 1,099,511,6")
    assert f"more than the {limits.MODEL_BYTES.default:,}" in outcome["message"]
    assert outcome["grewBytes"] < REFUSAL_MEMORY


def test_external_data_declaring_more_than_its_file_holds(tmp_path: Path) -> None:
    model = external_data_model(tmp_path / "model", declared_length=64 * MIB, dims=[16 * MIB])
    with pytest.raises(StageError) as caught:
        run_stage("convert", onnx_source(model, 16 * MIB), tmp_path / "work")
    assert caught.value.reason is StageReason.MODEL_INVALID
    assert caught.value.message == (f"{model}: a tensor declares 67,108,864 bytes of external data where its file "
                                    "holds 16")


def test_external_data_outside_the_models_directory_is_refused(tmp_path: Path) -> None:
    model = external_data_model(tmp_path / "model", declared_length=16, dims=[4])
    loaded = onnx.load(str(model), load_external_data=False)
    loaded.graph.initializer[0].external_data[0].value = "../elsewhere.bin"
    (tmp_path / "elsewhere.bin").write_bytes(bytes(16))
    onnx.save(loaded, str(model))
    with pytest.raises(StageError) as caught:
        run_stage("convert", onnx_source(model, 4), tmp_path / "work")
    assert caught.value.reason is StageReason.MODEL_INVALID
    assert "external data lies outside the model's directory" in caught.value.message


def test_a_malformed_external_data_entry_is_the_models_fault(tmp_path: Path) -> None:
    model = external_data_model(tmp_path / "model", declared_length=16, dims=[4])
    loaded = onnx.load(str(model), load_external_data=False)
    loaded.graph.initializer[0].external_data[2].value = "sixteen"
    onnx.save(loaded, str(model))
    with pytest.raises(StageError) as caught:
        run_stage("convert", onnx_source(model, 4), tmp_path / "work")
    assert caught.value.reason is StageReason.MODEL_INVALID
    assert caught.value.message == f"{model}: a tensor's external-data entry is malformed"


def test_a_model_with_external_data_within_the_cap_converts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = np.arange(4, dtype=np.float32)
    model = external_data_model(tmp_path / "model", declared_length=16, dims=[4], stored=weights.tobytes())
    monkeypatch.setenv("MODELDEPLOY_MAX_MODEL_BYTES", str(64 * 1024))
    result = run_stage("convert", onnx_source(model, 4), tmp_path / "work")
    converted = onnx.load(str(result.outputs["model.onnx"]))
    assert np.array_equal(numpy_helper.to_array(converted.graph.initializer[0]), weights)


# ---------------------------------------------------------------- the caps themselves


def test_every_cap_has_a_default_and_refuses_a_bad_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert {limit.variable for limit in limits.LIMITS} == {
        "MODELDEPLOY_MAX_IMAGE_PIXELS", "MODELDEPLOY_MAX_MODEL_BYTES", "MODELDEPLOY_MAX_DATASET_BYTES",
        "MODELDEPLOY_MAX_DATASET_FILES",
    }
    for limit in limits.LIMITS:
        monkeypatch.delenv(limit.variable, raising=False)
        assert limit.value() == limit.default > 0
        monkeypatch.setenv(limit.variable, "12")
        assert limit.value() == 12
        for bad in ("0", "-5", "lots"):
            monkeypatch.setenv(limit.variable, bad)
            with pytest.raises(ValueError, match=f"\\${limit.variable} must be a positive integer"):
                limit.value()


def test_the_documented_defaults_are_the_codes() -> None:
    text = (TESTS.parent / "docs" / "limits.md").read_text()
    for limit in limits.LIMITS:
        assert f"| `{limit.variable}` | {limit.default:,} |" in text
