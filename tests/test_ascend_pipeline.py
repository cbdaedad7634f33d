"""Ascend targets end to end through `modeldeploy run`, with the test stand-ins for atc, amct_onnx,
ais_bench and npu-smi (tests/ascend_toolchain) on PATH. The stand-ins run the ONNX on CPU, so the
accuracy they report is real."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from modeldeploy.manifest import Manifest, fetch_bytes, read_failure, read_manifest
from modeldeploy.planner import Plan, plan
from modeldeploy.runner import localize
from modeldeploy.store import open_store
from modeldeploy.validation import load_resource
from test_pipeline import quickstart, results_of, run

TOOLCHAIN = Path(__file__).resolve().parent / "ascend_toolchain"
NPU = {"name": "npu", "backend": "ascend", "device": "Ascend310P3"}


def ascend_environment(**settings: str) -> dict[str, str]:
    """This environment with the stand-ins first on PATH, as a CANN image's entrypoint would set it up."""
    path = os.pathsep.join([str(TOOLCHAIN / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]])
    return {**os.environ, "PATH": path, "PYTHONPATH": str(TOOLCHAIN), **settings}


def planned(spec: Path) -> Plan:
    return plan(localize(load_resource(yaml.safe_load(spec.read_text())), spec.parent).spec)


def committed(store: Any, key: str) -> Manifest:
    manifest = read_manifest(store, key)
    assert manifest is not None, f"task {key[:12]} is not committed"
    return manifest


def cells_by_key(results: dict[str, Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {(cell["target"], cell["precision"], cell["batchSize"]): cell for cell in results["cells"]}


@pytest.fixture(scope="module")
def digits_on_ascend(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, subprocess.CompletedProcess[str]]:
    directory = tmp_path_factory.mktemp("ascend")
    targets = [
        {"name": "cpu", "backend": "onnxruntime", "precisions": ["fp32"], "batchSizes": [8]},
        {**NPU, "precisions": ["fp16", "int8"], "batchSizes": [1, 8]},
    ]
    spec = quickstart(directory, targets=targets)
    store = (directory / "store").as_uri()
    return spec, store, run(spec, store, env=ascend_environment(), cwd=directory)


def test_fp16_and_amct_int8_on_ascend_match_the_cpu(digits_on_ascend: tuple[Path, str, Any]) -> None:
    spec, store, result = digits_on_ascend
    assert result.returncode == 0, result.stdout + result.stderr
    cells = cells_by_key(results_of(store, spec))
    cpu = cells["cpu", "fp32", 8]
    for size in (1, 8):
        fp16, int8 = cells["npu", "fp16", size], cells["npu", "int8", size]
        assert abs(fp16["top1"] - cpu["top1"]) <= 0.005  # fp16 rounding flips at most a near tie or two
        assert int8["top1"] > cpu["top1"] - 0.03 and int8["gate"] == "Passed"
        for cell in (fp16, int8):
            assert cell["throughput"] > 0 and cell["latencyMs"]["p90"] is not None
            assert cell["artifact"].endswith("/model.om")


def test_the_om_is_built_for_the_targets_chip_from_the_amct_deploy_model(digits_on_ascend: tuple[Path, str, Any]) -> None:
    spec, store_uri, _ = digits_on_ascend
    result = planned(spec)
    store = open_store(store_uri)
    (calibrate,) = [task for task in result.tasks if task.kind == "calibrate"]
    compiled = next(task for task in result.tasks if task.kind == "compile" and task.config["precision"] == "int8")
    with zipfile.ZipFile(io.BytesIO(fetch_bytes(store, committed(store, compiled.key), "model.om"))) as om:
        atc = json.loads(om.read("atc.json"))
    assert atc["soc_version"] == "Ascend310P3"
    deployed = fetch_bytes(store, committed(store, calibrate.key), "model.onnx")
    assert atc["source_sha256"] == hashlib.sha256(deployed).hexdigest()
    quant_cfg = fetch_bytes(store, committed(store, calibrate.key), "quant.cfg")
    assert b"batch_num : 4" in quant_cfg  # 64 calibration samples, 16 per AMCT batch


def test_an_atc_error_fails_compile_with_its_code_and_message(tmp_path: Path) -> None:
    spec = quickstart(tmp_path, targets=[{**NPU, "precisions": ["fp16"], "batchSizes": [1]}])
    store = (tmp_path / "store").as_uri()
    result = run(spec, store, env=ascend_environment(ATC_STANDIN_FAIL="E10001"), cwd=tmp_path)
    assert result.returncode == 1
    assert "FAILED  compile npu/fp16/bs1: CompileRejected: atc failed (exit 255): E10001: Value [-1] for parameter" in result.stdout
    assert "not run because of them" in result.stderr


def test_a_chip_the_node_does_not_have_fails_evaluate(tmp_path: Path) -> None:
    spec = quickstart(tmp_path, targets=[{**NPU, "device": "Ascend310", "precisions": ["fp16"], "batchSizes": [1]}])
    result = run(spec, (tmp_path / "store").as_uri(), env=ascend_environment(ASCEND_STANDIN_CHIP="310P3"), cwd=tmp_path)
    assert result.returncode == 1
    assert "FAILED  evaluate npu/fp16/bs1: EvaluationFailed: ais_bench (accuracy) failed" in result.stdout


def test_devices_measure_on_every_chip_of_a_card_and_say_what_the_throughput_covers(tmp_path: Path) -> None:
    target = {**NPU, "device": "Ascend310", "precisions": ["fp16"], "batchSizes": [2], "options": {"devices": 4}}
    spec = quickstart(tmp_path, targets=[target])
    store = (tmp_path / "store").as_uri()
    atlas_300i = ascend_environment(ASCEND_STANDIN_CHIPS="310,310,310,310", ASCEND_STANDIN_CHIPS_PER_NPU="4")
    result = run(spec, store, env=atlas_300i, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (cell,) = results_of(store, spec)["cells"]
    covers = cell["throughputCovers"]
    assert (covers["devices"], covers["chips"], covers["chip"], covers["cards"], covers["wholeCards"]) == (
        4, 4, "Ascend310", 1, True)
    assert [entry["device"] for entry in covers["perDevice"]] == [0, 1, 2, 3]
    assert cell["throughput"] == pytest.approx(sum(entry["throughput"] for entry in covers["perDevice"]))
    assert covers["summary"].startswith("sum of 4 devices (4 Ascend310 chips, 1 whole card); per device: ")
    evaluate = next(task for task in planned(spec).tasks if task.name == "evaluate npu/fp16/bs2")
    manifest = committed(open_store(store), evaluate.key)
    assert manifest.metrics["runtime"]["speedDevices"] == "0,1,2,3"
    assert manifest.metrics["performance"]["iterations"] == 4 * 20  # every device's timed inferences
    report = next(task for task in planned(spec).tasks if task.kind == "report")
    html = fetch_bytes(open_store(store), committed(open_store(store), report.key), "report.html").decode()
    assert "<th>throughput covers</th>" in html and "sum of 4 devices (4 Ascend310 chips, 1 whole card)" in html
    # The same target on a node (or in a pod) with one chip: evaluate says why instead of measuring less.
    one_chip = quickstart(tmp_path / "one", targets=[target])
    result = run(one_chip, (tmp_path / "one-store").as_uri(), env=ascend_environment(ASCEND_STANDIN_CHIP="310"),
                 cwd=tmp_path)
    assert result.returncode == 1
    assert ("FAILED  evaluate npu/fp16/bs2: DeviceMissing: options.devices is 4, but npu-smi lists 1 NPU(s) in "
            "this pod") in result.stdout


def test_device_auto_compiles_for_the_chip_npu_smi_reports(tmp_path: Path) -> None:
    spec = quickstart(tmp_path, targets=[{**NPU, "device": "auto", "precisions": ["fp16"], "batchSizes": [4]}])
    store = (tmp_path / "store").as_uri()
    result = run(spec, store, env=ascend_environment(ASCEND_STANDIN_CHIP="910B3"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (cell,) = results_of(store, spec)["cells"]
    assert cell["top1"] > 0.95


def test_a_batch_larger_than_the_dataset_fails_that_evaluation_only(tmp_path: Path) -> None:
    spec = quickstart(tmp_path, **{"dataset.limit": 6, "calibration.samples": 4,
                                   "targets": [{**NPU, "precisions": ["fp16"], "batchSizes": [4, 8]}]})
    store = (tmp_path / "store").as_uri()
    result = run(spec, store, env=ascend_environment(), cwd=tmp_path)
    assert result.returncode == 1
    assert "FAILED  evaluate npu/fp16/bs8: DatasetTooSmall: the prepared dataset" in result.stdout
    assert "done    evaluate npu/fp16/bs4" in result.stdout
    failed = next(task for task in planned(spec).tasks if task.kind == "evaluate" and task.name.endswith("bs8"))
    assert read_failure(open_store(store), failed.key).reason == "DatasetTooSmall"


TINY_CNN = '''
from torch import nn


def tiny_cnn(num_classes: int = 100) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(64, num_classes))
'''
CIFAR_MEAN, CIFAR_STD = [129.304, 124.070, 112.434], [68.170, 65.392, 70.418]


def saved_model(directory: Path, name: str, source: str) -> Any:
    """The module `source` written as directory/<name>.py, its callable <name>() built with seed 0, and its state_dict
    saved as directory/<name>.pt: the code and weights a spec's python: architecture loads."""
    import torch

    (directory / f"{name}.py").write_text(source)
    location = importlib.util.spec_from_file_location(name, directory / f"{name}.py")
    assert location is not None and location.loader is not None
    module = importlib.util.module_from_spec(location)
    location.loader.exec_module(module)
    torch.manual_seed(0)
    model = getattr(module, name)().eval()
    torch.save(model.state_dict(), directory / f"{name}.pt")
    return model


def write_tiny_cifar(directory: Path, targets: list[dict[str, Any]]) -> Path:
    """A spec over 48 CIFAR-style images labelled with a small CNN's own predictions on CPU-normalised pixels."""
    import pickle

    import numpy as np
    import torch

    model = saved_model(directory, "tiny_cnn", TINY_CNN)
    pixels = np.random.default_rng(0).integers(0, 256, size=(48, 3072), dtype=np.uint8)
    images = (pixels.reshape(-1, 3, 32, 32).astype(np.float32) - np.float32(CIFAR_MEAN)[:, None, None]) / np.float32(
        CIFAR_STD)[:, None, None]
    with torch.no_grad():
        labels = model(torch.from_numpy(images)).argmax(1).tolist()
    cifar = {b"filenames": [b"x.png"] * 48, b"batch_label": b"testing batch 1 of 1", b"fine_labels": labels,
             b"coarse_labels": [0] * 48, b"data": pixels}
    (directory / "test").write_bytes(pickle.dumps(cifar, protocol=2))
    document = {
        "apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "tiny"},
        "spec": {
            "source": {"format": "pytorch", "architecture": "python:tiny_cnn:tiny_cnn", "code": "tiny_cnn.py",
                       "weights": "tiny_cnn.pt", "inputs": [{"name": "input", "shape": [-1, 3, 32, 32]}]},
            "dataset": {"kind": "cifar100", "uri": "test",
                        "preprocess": {"scale": 1.0, "mean": CIFAR_MEAN, "std": CIFAR_STD}},
            "calibration": {"samples": 32},
            "targets": targets,
            "performance": {"warmup": 1, "iterations": 3},
        },
    }
    spec = directory / "tiny.yaml"
    spec.write_text(yaml.safe_dump(document))
    return spec


def test_aipp_normalises_on_the_device_as_prepare_does_on_the_cpu(tmp_path: Path) -> None:
    """Labels are the model's own predictions on CPU-normalised images, so a wrong AIPP mean or scale shows."""
    spec = write_tiny_cifar(tmp_path, [
        {"name": "cpu", "backend": "onnxruntime", "precisions": ["fp32"], "batchSizes": [4]},
        {**NPU, "name": "aipp", "precisions": ["fp16"], "batchSizes": [4], "options": {"aipp": True}},
        {**NPU, "precisions": ["fp16"], "batchSizes": [4]},
    ])
    store = (tmp_path / "store").as_uri()
    result = run(spec, store, env=ascend_environment(), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    cells = cells_by_key(results_of(store, spec))
    assert cells["cpu", "fp32", 4]["top1"] == 1.0
    assert cells["aipp", "fp16", 4]["top1"] >= 46 / 48  # fp16 may flip a near tie
    assert cells["npu", "fp16", 4]["top1"] >= 46 / 48
