"""Spec documents shared by the tests: a valid base touching every section, and ways to break it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Doc = dict[str, Any]


def base() -> Doc:
    """A valid spec touching every section, so each case breaks exactly one thing."""
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "cases"},
        "spec": {
            "source": {
                "format": "pytorch",
                "architecture": "timm:resnet18",
                "weights": "s3://models/resnet18.pth",
                "numClasses": 10,
                "inputs": [{"name": "input", "shape": [-1, 3, 32, 32]}],
            },
            "dataset": {
                "kind": "cifar100",
                "uri": "s3://data/cifar-100-python/test",
                "limit": 1000,
                "preprocess": {"crop": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
            },
            "calibration": {"samples": 64},
            "targets": [
                {"name": "cpu", "backend": "openvino", "precisions": ["fp32", "int8"], "batchSizes": [1, 8]},
                {"name": "ort", "backend": "onnxruntime", "precisions": ["fp32", "int8"], "batchSizes": [1]},
                {
                    "name": "npu",
                    "backend": "ascend",
                    "device": "Ascend310P3",
                    "precisions": ["fp16", "int8"],
                    "batchSizes": [4],
                    "options": {"aipp": True},
                },
                {
                    "name": "mlu",
                    "backend": "magicmind",
                    "device": "MLU370-X4",
                    "precisions": ["fp32", "int8"],
                    "dynamicBatch": {"min": 1, "max": 16},
                },
            ],
            "accuracy": {"reference": "source", "maxDrop": 0.01},
            "artifacts": {"uri": "s3://artifacts/cases", "secretRef": {"name": "s3-credentials"}},
            "performance": {"warmup": 5, "iterations": 50},
        },
    }


def at(doc: Doc, path: str) -> tuple[Any, str | int]:
    """The container and key that `path` (dots and [index]) names in doc."""
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in path.replace("[", ".").replace("]", "").split(".")]
    node: Any = doc
    for part in parts[:-1]:
        node = node[part]
    return node, parts[-1]


def setting(path: str, value: Any) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        node, key = at(doc, path)
        node[key] = value

    return change


def removing(*paths: str) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        for path in paths:
            node, key = at(doc, path)
            del node[key]

    return change


def both(*changes: Callable[[Doc], None]) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        for each in changes:
            each(doc)

    return change
