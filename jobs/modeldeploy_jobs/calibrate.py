"""calibrate: quantize the converted model on a subset of the prepared data."""

from __future__ import annotations

from modeldeploy_jobs import backends
from modeldeploy_jobs.data import PreparedData
from modeldeploy_jobs.stage import StageContext, StageResult


def run(context: StageContext) -> StageResult:
    config = context.config
    backend = backends.module(config["backend"])
    data = PreparedData.open(context.inputs["data"].directory)
    indices = data.calibration_indices(config["calibration"]["samples"])
    model = backends.model_file(context.inputs["model"])
    outputs = backend.calibrate(model, data, indices, config, context.outputs_dir)
    metrics = {"samples": len(indices), "method": config["calibration"]["method"], "precision": config["precision"]}
    return StageResult(outputs=outputs, metrics=metrics, toolchain=backend.versions())
