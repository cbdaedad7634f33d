"""aippCrop end to end through `modeldeploy run` on the Ascend stand-ins: the host resizes, AIPP crops on the
device, and the model sees what the host's own centre crop gives the CPU target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image
from test_ascend_pipeline import NPU, ascend_environment, cells_by_key, saved_model
from test_pipeline import results_of, run

IMAGES = 16
RESIZE, CROP = 37, 32  # (37 - 32) / 2 = 2.5: the host and AIPP must round the window's start alike (to 2)
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# No pooling before the classifier: every pixel's place counts, so a window one pixel off changes predictions.
PLACED_CNN = f'''
from torch import nn


def placed_cnn(num_classes: int = 100) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * {CROP} * {CROP}, num_classes))
'''
SIZES = [(40, 30), (30, 44), (50, 50), (37, 61)]  # (width, height): exact resize squashes each to 37x37


def _normalised_crop(images: np.ndarray, start: int) -> np.ndarray:
    window = images[:, start:start + CROP, start:start + CROP, :].astype(np.float32) / 255
    return np.ascontiguousarray(((window - np.float32(MEAN)) / np.float32(STD)).transpose(0, 3, 1, 2))


def write_tiny_imagenet(directory: Path) -> tuple[Path, list[int], list[int]]:
    """A spec over images of several sizes, labelled with a small CNN's predictions on the host's centre crop;
    also the predictions for the window one pixel off, which a misplaced device crop would give."""
    import torch

    model = saved_model(directory, "placed_cnn", PLACED_CNN)
    rng = np.random.default_rng(0)
    (directory / "val").mkdir()
    resized = []
    for index in range(IMAGES):
        width, height = SIZES[index % len(SIZES)]
        image = Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))
        image.save(directory / "val" / f"img_{index:03d}.png")
        resized.append(np.asarray(image.resize((RESIZE, RESIZE), Image.Resampling.BILINEAR)))
    pixels = np.stack(resized)
    with torch.no_grad():
        labels = model(torch.from_numpy(_normalised_crop(pixels, 2))).argmax(1).tolist()
        shifted = model(torch.from_numpy(_normalised_crop(pixels, 3))).argmax(1).tolist()
    (directory / "val_label.txt").write_text("".join(f"img_{i:03d}.png {label}\n" for i, label in enumerate(labels)))
    document = {
        "apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "tiny-imagenet"},
        "spec": {
            "source": {"format": "pytorch", "architecture": "python:placed_cnn:placed_cnn",
                       "code": "placed_cnn.py", "weights": "placed_cnn.pt", "inputs": [{"name": "image", "shape": [-1, 3, CROP, CROP]}]},
            "dataset": {"kind": "imagenet", "uri": "val", "labels": "val_label.txt",
                        "preprocess": {"resize": RESIZE, "resizeMode": "exact", "crop": CROP, "mean": MEAN,
                                       "std": STD}},
            "targets": [
                {"name": "cpu", "backend": "onnxruntime", "precisions": ["fp32"], "batchSizes": [4]},
                {**NPU, "name": "crop-on-npu", "precisions": ["fp16"], "batchSizes": [4],
                 "options": {"aipp": True, "aippCrop": True, "enableSmallChannel": True}},
            ],
            "performance": {"warmup": 1, "iterations": 3},
        },
    }
    spec = directory / "tiny.yaml"
    spec.write_text(yaml.safe_dump(document))
    return spec, labels, shifted


def test_aipp_crop_on_the_device_gives_the_model_the_hosts_centre_crop(tmp_path: Path) -> None:
    spec, labels, shifted = write_tiny_imagenet(tmp_path)
    # the test could see a window one pixel off: most predictions would change
    assert sum(a != b for a, b in zip(labels, shifted, strict=True)) >= IMAGES // 2
    store = (tmp_path / "store").as_uri()
    result = run(spec, store, env=ascend_environment(), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "prepare raw-uint8-uncropped-bins" in result.stdout
    cells: dict[tuple[str, str, int], dict[str, Any]] = cells_by_key(results_of(store, spec))
    assert cells["cpu", "fp32", 4]["top1"] == 1.0
    assert cells["crop-on-npu", "fp16", 4]["top1"] >= (IMAGES - 1) / IMAGES  # fp16 may flip a near tie
