"""calibrate, compile and evaluate on OpenVINO and ONNX Runtime, stage by stage on the digits model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openvino
import pytest
from conftest import EXAMPLES
from modeldeploy.backends import get
from modeldeploy.spec import Dataset, Source, Target
from modeldeploy_jobs.stage import StageError, StageInput
from stages import as_input, run_stage

SOURCE = Source.model_validate({
    "format": "pytorch", "architecture": "python:digits_cnn:DigitsCNN", "code": str(EXAMPLES / "digits_cnn.py"),
    "weights": str(EXAMPLES / "digits_cnn.pt"), "inputs": [{"name": "image", "shape": [-1, 1, 8, 8]}],
    "outputs": ["logits"],
}).model_dump(mode="json", by_alias=True, exclude_none=True)
DATASET = Dataset.model_validate({"kind": "digits", "preprocess": {"scale": 0.0625, "mean": [0.5], "std": [0.5]}})
BUDGET = {"warmup": 1, "iterations": 5}


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> StageInput:
    return as_input(run_stage("convert", SOURCE, tmp_path_factory.mktemp("convert")), key="c" * 64)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> StageInput:
    config = {"dataset": DATASET.model_dump(mode="json", by_alias=True, exclude_none=True), "variant": "tensors",
              "inputs": SOURCE["inputs"]}
    return as_input(run_stage("prepare", config, tmp_path_factory.mktemp("prepare")), key="d" * 64)


def target_config(backend: str, precision: str, **options: Any) -> dict[str, Any]:
    target = Target(name="t", backend=backend, precisions=[precision], batch_sizes=[1], options=options)
    return {"backend": backend, "precision": precision,
            "options": get(backend).parse_options(target).model_dump(mode="json", by_alias=True)}


def build(tmp_path: Path, converted: StageInput, digits: StageInput, backend: str, precision: str,
          batch: dict[str, Any], method: str = "auto", **options: Any) -> StageInput:
    config = target_config(backend, precision, **options)
    model = converted
    if precision == "int8":
        calibration = {**config, "calibration": {"samples": 32, "method": method}}
        model = as_input(run_stage("calibrate", calibration, tmp_path / "calibrate", {"model": converted,
                                                                                      "data": digits}), key="a" * 64)
    return as_input(run_stage("compile", {**config, **batch}, tmp_path / "compile", {"model": model}), key="b" * 64)


def evaluate(tmp_path: Path, compiled: StageInput, digits: StageInput, backend: str, precision: str, batch: int,
             **options: Any) -> dict[str, Any]:
    config = {**target_config(backend, precision, **options), "batchSize": batch, "performance": BUDGET,
              "accuracy": True}
    result = run_stage("evaluate", config, tmp_path / f"evaluate-{batch}", {"model": compiled, "data": digits})
    return dict(result.metrics)


def supports(capability: str) -> bool:
    return capability in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.parametrize(("precision", "capability", "runtime_type"), [("fp16", "FP16", "f16"), ("bf16", "BF16", "bf16")])
def test_openvino_half_precisions_run_as_asked_or_say_why_not(
    tmp_path: Path, converted: StageInput, digits: StageInput, precision: str, capability: str, runtime_type: str
) -> None:
    compiled = build(tmp_path, converted, digits, "openvino", precision, {"batchSize": 8})
    if not supports(capability):
        with pytest.raises(StageError) as caught:
            evaluate(tmp_path, compiled, digits, "openvino", precision, 8)
        assert caught.value.reason == "PrecisionUnsupported"
        return
    metrics = evaluate(tmp_path, compiled, digits, "openvino", precision, 8)
    assert metrics["runtime"]["inferencePrecision"] == runtime_type
    assert metrics["accuracy"]["top1"] > 0.95 and metrics["accuracy"]["samples"] == 449


def test_openvino_int8_is_a_quantized_ir(tmp_path: Path, converted: StageInput, digits: StageInput) -> None:
    compiled = build(tmp_path, converted, digits, "openvino", "int8", {"batchSize": 4}, method="minmax")
    assert "FakeQuantize" in compiled.path("model.xml").read_text()
    metrics = evaluate(tmp_path, compiled, digits, "openvino", "int8", 4)
    assert metrics["accuracy"]["top1"] > 0.95


def test_onnxruntime_qoperator_with_entropy_calibration(tmp_path: Path, converted: StageInput,
                                                        digits: StageInput) -> None:
    compiled = build(tmp_path, converted, digits, "onnxruntime", "int8", {"batchSize": 2}, method="entropy",
                     quantFormat="QOperator")
    metrics = evaluate(tmp_path, compiled, digits, "onnxruntime", "int8", 2, intraOpThreads=1)
    assert metrics["runtime"]["threads"] == "1"
    assert metrics["accuracy"]["top1"] > 0.9


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_a_dynamic_batch_model_serves_every_batch_with_the_same_accuracy(
    tmp_path: Path, converted: StageInput, digits: StageInput, backend: str
) -> None:
    compiled = build(tmp_path, converted, digits, backend, "fp32", {"dynamicBatch": {"min": 1, "max": 16}})
    small = evaluate(tmp_path, compiled, digits, backend, "fp32", 1)
    large = evaluate(tmp_path, compiled, digits, backend, "fp32", 16)
    assert small["accuracy"] == large["accuracy"]
    performance = large["performance"]
    assert performance["iterations"] == BUDGET["iterations"] and performance["throughput"] > 0
    assert set(performance["latencyMs"]) == {"mean", "p50", "p90", "p99"}
    assert large["environment"]["cpu"] and large["environment"]["cores"] >= 1
    assert large["artifact"]["sha256"] == compiled.manifest.outputs[Path(large["artifact"]["uri"]).name].sha256


def test_a_time_budget_instead_of_iterations(tmp_path: Path, converted: StageInput, digits: StageInput) -> None:
    compiled = build(tmp_path, converted, digits, "onnxruntime", "fp32", {"batchSize": 4})
    config = {**target_config("onnxruntime", "fp32"), "batchSize": 4, "accuracy": False,
              "performance": {"warmup": 0, "durationSeconds": 0.3}}
    metrics = run_stage("evaluate", config, tmp_path / "timed", {"model": compiled, "data": digits}).metrics
    assert metrics["accuracy"] is None
    assert metrics["performance"]["seconds"] >= 0.3 and metrics["performance"]["iterations"] > 1
