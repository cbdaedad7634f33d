"""The four Ascend guides' specs (examples/seeds/000, 001, 003, 004) run to the end with `modeldeploy run`.

The specs run as written, against moto's S3 server holding what they point at: the guide's
architecture with seeded random weights in the checkpoint layout the spec expects (prefixes and
all), and a small dataset in the guide's format. Only the scale is cut for the test suite: 8 samples
of ImageNet (32 for the batch-32 guide), 48 of CIFAR-100, two timed iterations, and batch sizes up to 4 where a guide has several.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import torch
import yaml
from conftest import EXAMPLES
from PIL import Image
from test_ascend_pipeline import ascend_environment
from test_pipeline import MODELDEPLOY

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


@pytest.fixture(scope="module")
def s3(moto_endpoint: str) -> Iterator[Any]:
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                          aws_access_key_id="modeldeploy-test", aws_secret_access_key="modeldeploy-test-secret")
    for name in BUCKETS:
        client.create_bucket(Bucket=name)
    names = [f"ILSVRC2012_val_{index:08d}.JPEG" for index in range(1, IMAGES + 1)]
    labels = "".join(f"{name} {index * 97 % 1000}\n" for index, name in enumerate(names))
    for folder in ("val", "val_union"):
        for index, name in enumerate(names):
            client.put_object(Bucket="modeldeploy-datasets", Key=f"imagenet/{folder}/{name}", Body=jpeg(index))
    client.put_object(Bucket="modeldeploy-datasets", Key="imagenet/val_label.txt", Body=labels.encode())
    client.put_object(Bucket="modeldeploy-datasets", Key="cifar-100-python/test", Body=cifar_test_pickle(48))
    client.put_object(Bucket="modeldeploy-models", Key="code/resnet_cifar.py",
                      Body=(EXAMPLES / "seeds" / "resnet_cifar.py").read_bytes())
    yield client


WEIGHTS: dict[str, tuple[str, Callable[[], Any]]] = {
    "000": ("resnet50_b16x8_cifar100_20210528-67b58a1b.pth", resnet50_cifar_checkpoint),
    "001": ("se_resnet50-ce0d4300.pth", lambda: timm_state("legacy_seresnet50", 1000)),
    "003": ("inceptionresnetv2-520b38e4.pth",
            lambda: timm_state("inception_resnet_v2", 1001, rename=("classif.", "last_linear."))),
    "004": ("pnasnet5large-bf079911.pth", lambda: timm_state("pnasnet5large", 1000)),
}


def scaled_down(seed: str, directory: Path) -> Path:
    (path,) = EXAMPLES.glob(f"seeds/{seed}-*.yaml")
    document = yaml.safe_load(path.read_text())
    spec = document["spec"]
    spec["performance"]["iterations"] = 2
    for target in spec["targets"]:
        target["batchSizes"] = [size for size in target["batchSizes"] if size <= 4] or target["batchSizes"][:1]
    if spec["dataset"]["kind"] == "imagenet":
        spec["dataset"]["limit"] = max(8, *(max(target["batchSizes"]) for target in spec["targets"]))
    scaled = directory / path.name
    scaled.write_text(yaml.safe_dump(document))
    return scaled


@pytest.mark.parametrize("seed", sorted(WEIGHTS))
def test_seed_spec_runs_to_the_end_on_the_stand_ins(seed: str, s3: Any, moto_endpoint: str, tmp_path: Path) -> None:
    name, checkpoint = WEIGHTS[seed]
    buffer = io.BytesIO()
    torch.save(checkpoint(), buffer)
    s3.put_object(Bucket="modeldeploy-models", Key=name, Body=buffer.getvalue())
    spec = scaled_down(seed, tmp_path)
    (device,) = {target["device"] for target in yaml.safe_load(spec.read_text())["spec"]["targets"]}
    environment = ascend_environment(AWS_ENDPOINT_URL_S3=moto_endpoint, AWS_ACCESS_KEY_ID="modeldeploy-test",
                                     AWS_SECRET_ACCESS_KEY="modeldeploy-test-secret", AWS_REGION="us-east-1",
                                     ASCEND_STANDIN_CHIP=device.removeprefix("Ascend"))
    result = subprocess.run([str(MODELDEPLOY), "run", str(spec), "--jobs", "2"], capture_output=True, text=True,
                            env=environment, cwd=tmp_path, timeout=1200, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "report: s3://modeldeploy-artifacts/" in result.stdout
    for line in result.stdout.splitlines():
        if line.startswith("atlas-"):
            assert "%" in line, line  # every cell has an accuracy
    assert os.environ.get("AWS_ENDPOINT_URL_S3") != moto_endpoint  # nothing leaked into this process
