"""The data-plane side of each backend: calibrate, compile and load a model for inference.

Every backend module offers compile and versions, calibrate unless it calibrates while it
builds, and one way to evaluate:
    calibrate(model, data, indices, config, outputs_dir) -> outputs
    compile(model, config, outputs_dir, workdir[, calibration=(data, indices)]) -> (outputs, metrics)
    versions() -> {tool: version}
    load(model, config, threads) -> Session  # the stage's harness measures accuracy in this process,
    benchmark(model, config, workdir) -> performance  # and speed too, unless the vendor's tool times it
    evaluate(model, prepared, config, workdir) -> metrics  # or: the vendor's tools measure both
A vendor backend whose targets name a toolchain release also has RELEASE_TOOL, the entry of versions()
that is the release, and DEFAULT_RELEASE, the one a target naming none expects: evaluate compares them.
`config` is the task's config from the planner (backend, options, precision, batchSize or
dynamicBatch, calibration, ...). Modules are imported on first use, so a job image carries
only its own toolchain.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from modeldeploy_jobs.stage import StageError, StageInput, StageReason

MODULES = {
    "openvino": "modeldeploy_jobs.backends.openvino",
    "onnxruntime": "modeldeploy_jobs.backends.onnxruntime",
    "ascend": "modeldeploy_jobs.backends.ascend",
    "magicmind": "modeldeploy_jobs.backends.magicmind",
}
# The file that is "the model" among a task's outputs, in order of preference.
MODEL_FILES = ("model.om", "model.mm", "model.xml", "model.onnx")


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | None, ...]  # None: a dynamic dimension
    dtype: np.dtype


@dataclass(frozen=True)
class Session:
    """A model loaded for inference: `infer(inputs)` returns the outputs in order."""

    inputs: list[InputSpec]
    infer: Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]
    properties: Mapping[str, str]  # what the runtime actually uses (precision, threads, ...)


def module(backend: str) -> ModuleType:
    if backend not in MODULES:
        raise StageError(StageReason.BACKEND_UNAVAILABLE, f"this job image has no {backend} backend")
    return importlib.import_module(MODULES[backend])


def model_file(upstream: StageInput) -> Path:
    for name in MODEL_FILES:
        if name in upstream.manifest.outputs:
            return upstream.path(name)
    raise StageError(StageReason.INPUT_MISSING,
                     f"task {upstream.key[:12]} produced no model ({', '.join(MODEL_FILES)})")


def available_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a pod's CPU limit)."""
    count = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return count
    if quota == "max":
        return count
    return max(1, min(count, math.ceil(int(quota) / int(period))))
