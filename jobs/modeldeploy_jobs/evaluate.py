"""evaluate: accuracy over the whole prepared dataset, then speed at one batch size.

Accuracy runs every sample through the compiled model batch by batch (the last batch padded),
so it does not depend on the batch size. Speed: warm-up, then a fixed number of iterations or a
time budget on one real batch, each inference timed on its own.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from modeldeploy_jobs import backends
from modeldeploy_jobs.backends import Session
from modeldeploy_jobs.data import PreparedData
from modeldeploy_jobs.stage import StageContext, StageError, StageReason, StageResult

PRECISION_NAMES = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}


def run(context: StageContext) -> StageResult:
    config = context.config
    backend = backends.module(config["backend"])
    upstream = context.inputs["model"]
    model = backends.model_file(upstream)
    if hasattr(backend, "evaluate"):
        measured = backend.evaluate(model, context.inputs.get("data"), config, context.workdir)
        environment = measured.pop("environment")
        return _result(context, backend, model, measured, environment)
    threads = backends.available_cpus()
    session = backend.load(model, config, threads)
    _check_precision(session, config["precision"])
    data = PreparedData.open(context.inputs["data"].directory) if "data" in context.inputs else None
    batch = config["batchSize"]
    timed = config.get("role") != "reference"  # the reference run measures accuracy only
    if timed and data is not None and data.count < batch:
        raise StageError(
            StageReason.DATASET_TOO_SMALL,
            f"the prepared dataset (task {context.inputs['data'].key[:12]}) has {data.count} samples, "
            f"fewer than batch size {batch}; add samples or drop the batch size",
        )
    accuracy = None
    if config.get("accuracy") and data is not None and data.labels is not None:
        accuracy = measure_accuracy(session, data, batch)
    performance = None
    if timed and hasattr(backend, "benchmark"):  # the vendor's benchmark tool times the device
        performance = backend.benchmark(model, config, context.workdir)
    elif timed:
        inputs = data.take(range(batch)) if data is not None else random_inputs(session, batch)
        performance = measure_speed(session, inputs, config["performance"], batch, threads)
    measured = {"accuracy": accuracy, "performance": performance, "runtime": dict(session.properties)}
    return _result(context, backend, model, measured, {"cores": threads})


def _result(
    context: StageContext, backend: ModuleType, model: Path, measured: Mapping[str, Any],
    environment: Mapping[str, Any],
) -> StageResult:
    config = context.config
    upstream = context.inputs["model"]
    found = backend.versions()
    metrics: dict[str, Any] = {
        "target": None,
        "precision": config["precision"],
        "batchSize": config["batchSize"],
        "backend": config["backend"],
        "device": config.get("device"),
        **measured,
        "artifact": {"uri": context.artifact_uri(upstream.manifest, model.name),
                     "sha256": upstream.manifest.outputs[model.name].sha256},
        "environment": {"cpu": cpu_model(), **environment, "toolchain": found},
    }
    check = toolchain_check(backend, config, found)
    if check is not None:
        metrics["toolchain"] = check
        if not check["match"]:
            print(f"warning: {config['backend']} toolchain {check['actual'] or 'of unknown release'} ran, but the "
                  f"target expects {check['expected']} (targets[].toolchain.version): these results are not "
                  f"{check['expected']}'s", file=sys.stderr, flush=True)
    return StageResult(outputs={"result.json": _write(context.outputs_dir / "result.json", metrics)},
                       metrics=metrics, toolchain=found)


def toolchain_check(backend: ModuleType, config: Mapping[str, Any], found: Mapping[str, str]) -> dict[str, Any] | None:
    """The release the target expects against the one that ran, for a backend with releases; releases compare
    without case (6.0.RC1 is 6.0.rc1)."""
    if not hasattr(backend, "RELEASE_TOOL"):
        return None
    expected = config.get("toolchainVersion") or backend.DEFAULT_RELEASE
    actual = found.get(backend.RELEASE_TOOL)
    actual = None if actual in (None, "unknown") else actual
    return {"expected": expected, "actual": actual,
            "match": actual is not None and actual.lower() == expected.lower()}


def _check_precision(session: Session, precision: str) -> None:
    effective = session.properties.get("inferencePrecision")
    wanted = PRECISION_NAMES.get(precision)
    if effective and wanted and not effective.startswith(wanted):
        raise StageError(StageReason.PRECISION_UNSUPPORTED,
                         f"{cpu_model()} does not run {precision}: the runtime falls back to {effective}")


def measure_accuracy(session: Session, data: PreparedData, batch: int) -> dict[str, Any]:
    assert data.labels is not None
    top1 = top5 = 0
    ranked_five = True
    seen = 0
    for inputs, real in data.batches(batch):
        scores = np.asarray(session.infer(inputs)[0])[:real].reshape(real, -1)
        labels = data.labels[seen : seen + real]
        seen += real
        top1 += int(np.sum(scores.argmax(axis=1) == labels))
        if scores.shape[1] >= 5:
            best_five = np.argpartition(-scores, 4, axis=1)[:, :5]
            top5 += int(np.sum(np.any(best_five == labels[:, None], axis=1)))
        else:
            ranked_five = False
    return {"top1": top1 / seen, "top5": top5 / seen if ranked_five else None, "samples": seen}


def measure_speed(
    session: Session, inputs: Mapping[str, np.ndarray], budget: Mapping[str, Any], batch: int, threads: int
) -> dict[str, Any]:
    for _ in range(budget["warmup"]):
        session.infer(inputs)
    iterations, duration = budget.get("iterations"), budget.get("durationSeconds")
    latencies = []
    clock = time.perf_counter
    start = clock()
    while True:
        began = clock()
        session.infer(inputs)
        latencies.append(clock() - began)
        if (iterations is not None and len(latencies) >= iterations) or (
            duration is not None and clock() - start >= duration
        ):
            break
    seconds = clock() - start
    milliseconds = np.asarray(latencies) * 1000
    return {
        "throughput": batch * len(latencies) / seconds,
        "latencyMs": {
            "mean": float(milliseconds.mean()),
            "p50": float(np.percentile(milliseconds, 50)),
            "p90": float(np.percentile(milliseconds, 90)),
            "p99": float(np.percentile(milliseconds, 99)),
        },
        "iterations": len(latencies),
        "seconds": seconds,
        "warmup": budget["warmup"],
        "threads": threads,
    }


def random_inputs(session: Session, batch: int) -> dict[str, np.ndarray]:
    generator = np.random.default_rng(0)
    inputs = {}
    for spec in session.inputs:
        shape = [batch, *(dim or 1 for dim in spec.shape[1:])]
        if np.issubdtype(spec.dtype, np.floating):
            inputs[spec.name] = generator.standard_normal(shape).astype(spec.dtype)
        else:
            inputs[spec.name] = generator.integers(0, 10, shape).astype(spec.dtype)
    return inputs


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _write(path: Path, metrics: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return path
