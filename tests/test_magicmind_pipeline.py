"""MLU targets end to end through `modeldeploy run`, with the test stand-ins for the MagicMind Python API,
mm_run and cnmon (tests/magicmind_toolchain) on the paths. The stand-ins run the ONNX on CPU (quantized
from the calibration samples for the qint modes), so the accuracy they report is real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_ascend_pipeline import cells_by_key, write_tiny_cifar
from test_pipeline import quickstart, results_of, run

TOOLCHAIN = Path(__file__).resolve().parent / "magicmind_toolchain"
MLU = {"name": "mlu", "backend": "magicmind", "device": "MLU370-X4"}


def magicmind_environment(**settings: str) -> dict[str, str]:
    """This environment with the stand-ins on the paths, as the MagicMind image sets them up."""
    path = os.pathsep.join([str(TOOLCHAIN / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]])
    return {**os.environ, "PATH": path, "PYTHONPATH": str(TOOLCHAIN), "MAGICMIND_STANDIN_CARDS": "MLU370-X4",
            **settings}


@pytest.fixture(scope="module")
def digits_on_mlu(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, subprocess.CompletedProcess[str]]:
    directory = tmp_path_factory.mktemp("mlu")
    targets = [
        {"name": "cpu", "backend": "onnxruntime", "precisions": ["fp32"], "batchSizes": [8]},
        {**MLU, "precisions": ["fp32", "fp16", "int8"], "batchSizes": [1, 8]},
        {**MLU, "name": "mutable", "precisions": ["fp16"], "dynamicBatch": {"min": 1, "max": 16, "evaluate": [2, 16]}},
    ]
    spec = quickstart(directory, targets=targets)
    store = (directory / "store").as_uri()
    return spec, store, run(spec, store, env=magicmind_environment(), cwd=directory)


def test_every_mode_on_the_mlu_matches_the_cpu(digits_on_mlu: tuple[Path, str, Any]) -> None:
    spec, store, result = digits_on_mlu
    assert result.returncode == 0, result.stdout + result.stderr
    cells = cells_by_key(results_of(store, spec))
    cpu = cells["cpu", "fp32", 8]["top1"]
    for size in (1, 8):
        assert cells["mlu", "fp32", size]["top1"] == cpu
        assert abs(cells["mlu", "fp16", size]["top1"] - cpu) <= 0.005
        assert cells["mlu", "int8", size]["top1"] > cpu - 0.03
    for size in (2, 16):
        assert abs(cells["mutable", "fp16", size]["top1"] - cpu) <= 0.005
    for cell in cells.values():
        assert cell["throughput"] > 0
        if cell["target"] != "cpu":
            assert cell["artifact"].endswith("/model.mm") and cell["latencyMs"]["p99"] is not None


def test_a_card_of_another_arch_cannot_run_the_model(tmp_path: Path) -> None:
    spec = quickstart(tmp_path, targets=[{**MLU, "precisions": ["fp32"], "batchSizes": [1]}])
    result = run(spec, (tmp_path / "store").as_uri(), env=magicmind_environment(MAGICMIND_STANDIN_CARDS="MLU590-H8"),
                 cwd=tmp_path)
    assert result.returncode == 1
    assert "FAILED  evaluate mlu/fp32/bs1: EvaluationFailed: model.mm does not run on this MLU" in result.stdout


def test_insert_bn_normalises_on_the_mlu_as_prepare_does_on_the_cpu(tmp_path: Path) -> None:
    """Labels are the model's own predictions on CPU-normalised images, so wrong means or vars show."""
    spec = write_tiny_cifar(tmp_path, [
        {"name": "cpu", "backend": "onnxruntime", "precisions": ["fp32"], "batchSizes": [4]},
        {**MLU, "precisions": ["fp32", "int8"], "batchSizes": [4], "options": {"insertBn": True}},
    ])
    store = (tmp_path / "store").as_uri()
    result = run(spec, store, env=magicmind_environment(), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    cells = cells_by_key(results_of(store, spec))
    assert cells["cpu", "fp32", 4]["top1"] == 1.0
    assert cells["mlu", "fp32", 4]["top1"] == 1.0
    assert cells["mlu", "int8", 4]["top1"] >= 0.75


def test_fewer_calibration_samples_than_the_batch_fail_the_build_clearly(tmp_path: Path) -> None:
    spec = quickstart(tmp_path, **{"calibration.samples": 4,
                                   "targets": [{**MLU, "precisions": ["int8"], "batchSizes": [8]}]})
    result = run(spec, (tmp_path / "store").as_uri(), env=magicmind_environment(), cwd=tmp_path)
    assert result.returncode == 1
    assert ("FAILED  compile mlu/int8/bs8: CompileRejected: the MagicMind build failed (exit 3): "
            in result.stdout)
    assert "4 calibration samples for input 'image', fewer than its batch 8" in result.stdout
