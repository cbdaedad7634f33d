"""Small files that declare huge contents are refused from what they declare, before they take memory.

Each case is built for real: a 1-bit PNG whose header says 12000x12000, a checkpoint zip with one entry
that inflates far beyond its size, an ONNX model whose external data declares a terabyte. Peak memory is
measured in a child process (Pillow and protobuf allocate outside tracemalloc's view), as the growth of
its maximum resident set size over the call.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from conftest import EXAMPLES, REPO
from hostile import MIB, REFUSAL_MEMORY, external_data_model, one_bit_png, stage_in_child, zip_bomb_checkpoint
from modeldeploy.spec import Source
from modeldeploy_jobs import limits
from modeldeploy_jobs.stage import StageError, StageReason
from onnx import numpy_helper
from stages import run_stage

IMAGE_INPUT = [{"name": "image", "shape": [-1, 3, 224, 224], "dtype": "float32", "layout": "NCHW"}]
DIGITS = {
    "format": "pytorch",
    "architecture": "python:digits_cnn:DigitsCNN",
    "code": str(EXAMPLES / "digits_cnn.py"),
    "inputs": [{"name": "image", "shape": [-1, 1, 8, 8]}],
    "outputs": ["logits"],
}


def onnx_source(model: Path, features: int) -> dict[str, Any]:
    fields = {"format": "onnx", "uri": str(model), "opset": 17,
              "inputs": [{"name": "x", "shape": [-1, features], "layout": "ND"}]}
    return Source.model_validate(fields).model_dump(mode="json", by_alias=True, exclude_none=True)


def pytorch_source(**fields: Any) -> dict[str, Any]:
    return Source.model_validate({**DIGITS, **fields}).model_dump(mode="json", by_alias=True, exclude_none=True)


def prepare_config(directory: Path) -> dict[str, Any]:
    return {"dataset": {"kind": "imagenet", "uri": str(directory), "seed": 0, "labelOffset": 0},
            "variant": "tensors", "inputs": IMAGE_INPUT}


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
    model = external_data_model(tmp_path / "model", declared_length=16, dims=[4], location="../elsewhere.bin")
    with pytest.raises(StageError) as caught:
        run_stage("convert", onnx_source(model, 4), tmp_path / "work")
    assert caught.value.reason is StageReason.MODEL_INVALID
    assert "external data lies outside the model's directory" in caught.value.message


def test_a_malformed_external_data_entry_is_the_models_fault(tmp_path: Path) -> None:
    model = external_data_model(tmp_path / "model", declared_length=16, dims=[4], offset="sixteen")
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
    text = (REPO / "docs" / "limits.md").read_text()
    for limit in limits.LIMITS:
        assert f"| `{limit.variable}` | {limit.default:,} |" in text
