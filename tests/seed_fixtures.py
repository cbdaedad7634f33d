"""What the five guides' specs (examples/seeds/000-004) point at, for moto's S3 server.

The specs run as written: the guide's architecture with seeded random weights in the checkpoint
layout the spec expects (prefixes and all) or as the ONNX file it names, and a small dataset in the
guide's format. Only the
scale is cut for the test suite (`scaled_down`): 8 samples of ImageNet (32 for the batch-32
guide), 48 of CIFAR-100, two timed iterations, batch sizes up to 4 where a guide has several, and
an Ascend target's `devices` down to the chips of the test's emulated node (one unless asked).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import yaml
from conftest import EXAMPLES
from PIL import Image

BUCKETS = ("modeldeploy-models", "modeldeploy-datasets", "modeldeploy-artifacts")
IMAGES = 32  # seeds/001 runs batch 32 only


def _random_state(build: Callable[[], torch.nn.Module]) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build().state_dict()


def resnet50_cifar_checkpoint() -> dict[str, Any]:
    """mmcls's layout: {"state_dict": {"backbone.<torchvision name>", "head.fc.*"}}."""
    import importlib.util

    location = importlib.util.spec_from_file_location("resnet_cifar", EXAMPLES / "seeds" / "resnet_cifar.py")
    assert location is not None and location.loader is not None
    module = importlib.util.module_from_spec(location)
    location.loader.exec_module(module)
    state = _random_state(lambda: module.resnet50_cifar(num_classes=100))
    return {"state_dict": {("head." if key.startswith("fc.") else "backbone.") + key: value
                           for key, value in state.items()}, "meta": {"mmcls_version": "0.12.0"}}


def timm_state(name: str, num_classes: int, rename: tuple[str, str] | None = None) -> dict[str, torch.Tensor]:
    import timm

    state = _random_state(lambda: timm.create_model(name, num_classes=num_classes, pretrained=False))
    if rename is None:
        return state
    old, new = rename
    return {(new + key.removeprefix(old) if key.startswith(old) else key): value for key, value in state.items()}


def cifar_test_pickle(count: int) -> bytes:
    rng = np.random.default_rng(0)
    content = {b"filenames": [f"img{i}.png".encode() for i in range(count)], b"batch_label": b"testing batch 1 of 1",
               b"fine_labels": rng.integers(0, 100, count).tolist(), b"coarse_labels": [0] * count,
               b"data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)}
    return pickle.dumps(content, protocol=2)


def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(375, 500, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def torch_file(build: Callable[[], Any]) -> Callable[[], bytes]:
    def saved() -> bytes:
        buffer = io.BytesIO()
        torch.save(build(), buffer)
        return buffer.getvalue()

    return saved


def resnet50_v1_onnx() -> bytes:
    """The ONNX model zoo's resnet50-v1-7 layout: input `data`, dynamic batch, torchvision's ResNet-50."""
    import torchvision

    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.onnx.export(torchvision.models.resnet50().eval(), (torch.zeros(1, 3, 224, 224),), buffer,
                      input_names=["data"], output_names=["resnetv17_dense0_fwd"], opset_version=11,
                      dynamic_axes={"data": {0: "N"}}, dynamo=False)
    return buffer.getvalue()


# What each seed's source points at, by key in the modeldeploy-models bucket.
MODELS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "000": ("resnet50_b16x8_cifar100_20210528-67b58a1b.pth", torch_file(resnet50_cifar_checkpoint)),
    "001": ("se_resnet50-ce0d4300.pth", torch_file(lambda: timm_state("legacy_seresnet50", 1000))),
    "002": ("resnet50-v1-7.onnx", resnet50_v1_onnx),
    "003": ("inceptionresnetv2-520b38e4.pth",
            torch_file(lambda: timm_state("inception_resnet_v2", 1001, rename=("classif.", "last_linear.")))),
    "004": ("pnasnet5large-bf079911.pth", torch_file(lambda: timm_state("pnasnet5large", 1001))),  # row 0: background
}


def upload_seed_inputs(s3: Any) -> None:
    """The datasets and code every seed reads; each seed's model by `upload_model`."""
    for name in BUCKETS:
        s3.create_bucket(Bucket=name)
    names = [f"ILSVRC2012_val_{index:08d}.JPEG" for index in range(1, IMAGES + 1)]
    labels = "".join(f"{name} {index * 97 % 1000}\n" for index, name in enumerate(names))
    for folder in ("val", "val_union"):
        for index, name in enumerate(names):
            s3.put_object(Bucket="modeldeploy-datasets", Key=f"imagenet/{folder}/{name}", Body=jpeg(index))
    s3.put_object(Bucket="modeldeploy-datasets", Key="imagenet/val_label.txt", Body=labels.encode())
    s3.put_object(Bucket="modeldeploy-datasets", Key="cifar-100-python/test", Body=cifar_test_pickle(48))
    s3.put_object(Bucket="modeldeploy-models", Key="code/resnet_cifar.py",
                  Body=(EXAMPLES / "seeds" / "resnet_cifar.py").read_bytes())


def upload_model(s3: Any, seed: str) -> None:
    name, content = MODELS[seed]
    s3.put_object(Bucket="modeldeploy-models", Key=name, Body=content())


def scaled_down(seed: str, chips: int = 1) -> dict[str, Any]:
    (path,) = EXAMPLES.glob(f"seeds/{seed}-*.yaml")
    document = yaml.safe_load(path.read_text())
    spec = document["spec"]
    spec["performance"]["iterations"] = 2
    sizes = []
    for target in spec["targets"]:
        options = target.get("options") or {}
        if "devices" in options:
            options["devices"] = min(options["devices"], chips)
        listed = target.get("dynamicBatch", target)
        key = "evaluate" if "dynamicBatch" in target else "batchSizes"
        listed[key] = [size for size in listed[key] if size <= 4] or listed[key][:1]
        sizes += listed[key]
    for section in ("accuracy", "performance"):  # the guide's figures for the batch sizes still measured
        figures = spec.get(section) or {}
        if "expected" in figures:
            figures["expected"] = [entry for entry in figures["expected"] if entry.get("batchSize", sizes[0]) in sizes]
            if not figures["expected"]:
                del figures["expected"]
    if spec["dataset"]["kind"] == "imagenet":
        spec["dataset"]["limit"] = max(8, *sizes, spec.get("calibration", {}).get("samples", 0))
    return document
