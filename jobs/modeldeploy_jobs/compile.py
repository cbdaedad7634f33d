"""compile: build the model for one precision and one batch size (or a dynamic batch range)."""

from __future__ import annotations

from modeldeploy_jobs import backends
from modeldeploy_jobs.data import PreparedData
from modeldeploy_jobs.stage import StageContext, StageResult


def run(context: StageContext) -> StageResult:
    config = context.config
    backend = backends.module(config["backend"])
    model = backends.model_file(context.inputs["model"])
    calibration = {}
    if "calibrationData" in context.inputs:  # backends that calibrate while they build
        data = PreparedData.open(context.inputs["calibrationData"].directory)
        calibration["calibration"] = (data, data.calibration_indices(config["calibration"]["samples"]))
    outputs, metrics = backend.compile(model, config, context.outputs_dir, context.workdir, **calibration)
    batch = config.get("dynamicBatch") or {"batchSize": config["batchSize"]}
    return StageResult(
        outputs=outputs, metrics={"precision": config["precision"], **batch, **metrics}, toolchain=backend.versions()
    )
