"""The planner: a pure function from a ModelDeployment spec to a DAG of stage tasks.

Every task's key is sha256 over (stage kind, its config, the keys of its inputs, the
toolchain id), so a key names the work exactly: equal keys are the same work, planned
once, and a finished task is found in the store by its key. Configs hold only what
changes the result (placement and names do not), with defaults filled in, so writing a
default explicitly does not change any key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from modeldeploy import backends
from modeldeploy.backends import TENSORS, Backend
from modeldeploy.manifest import TaskDocument
from modeldeploy.spec import QUANTIZED_PRECISIONS, Calibration, ModelDeploymentSpec, Target

StageKind = Literal["convert", "prepare", "calibrate", "compile", "evaluate", "report"]
STAGES: tuple[StageKind, ...] = ("convert", "prepare", "calibrate", "compile", "evaluate", "report")

# Versions of the stage implementations that are not a backend's: bump one when its output changes.
STAGE_TOOLCHAINS: Mapping[str, str] = {
    "convert": "convert-1+torch-2.14.1",
    "prepare": "prepare-1",
    "report": "report-1",
}
REFERENCE_BACKEND = "onnxruntime"  # runs the converted fp32 model for the source model's reference accuracy
REFERENCE_BATCH_SIZE = 32


@dataclass(frozen=True)
class Task:
    key: str
    kind: StageKind
    name: str
    config: Mapping[str, Any]
    inputs: Mapping[str, str]  # role -> key of the task that produces it
    toolchain: str
    backend: str | None = None
    target: str | None = None  # the first target that needs it; shared tasks serve several
    needs_device: bool = False
    commands: tuple[tuple[str, ...], ...] = ()  # the tool command lines it runs, as `modeldeploy plan` shows them
    files: Mapping[str, str] = field(default_factory=dict)  # config files it generates for those tools

    @property
    def short_key(self) -> str:
        return self.key[:12]

    def document(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "name": self.name,
            "config": self.config,
            "inputs": dict(self.inputs),
            "toolchain": self.toolchain,
            "backend": self.backend,
        }

    def task_document(self, store: str) -> TaskDocument:
        """The task as the stage entrypoint reads it, working in the store at `store`."""
        return TaskDocument(
            key=self.key,
            stage=self.kind,
            name=self.name,
            config=dict(self.config),
            inputs=dict(self.inputs),
            toolchain=self.toolchain,
            backend=self.backend,
            store=store,
        )


@dataclass(frozen=True)
class Cell:
    target: str
    precision: str
    batch_size: int
    compile: str
    evaluate: str

    @property
    def label(self) -> str:
        return f"{self.target}/{self.precision}/bs{self.batch_size}"


@dataclass(frozen=True)
class Plan:
    tasks: tuple[Task, ...]  # dependency order: every task after its inputs
    cells: tuple[Cell, ...]
    report: str

    def task(self, key: str) -> Task:
        return self._by_key[key]

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    @cached_property
    def _by_key(self) -> dict[str, Task]:
        return {task.key: task for task in self.tasks}

    def to_json(self) -> dict[str, Any]:
        return {
            "tasks": [
                {**task.document(), "target": task.target, "needsDevice": task.needs_device,
                 "commands": [list(command) for command in task.commands], "files": dict(task.files)}
                for task in self.tasks
            ],
            "cells": [
                {
                    "target": cell.target,
                    "precision": cell.precision,
                    "batchSize": cell.batch_size,
                    "compile": cell.compile,
                    "evaluate": cell.evaluate,
                }
                for cell in self.cells
            ],
            "report": self.report,
        }


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def task_key(kind: str, config: Mapping[str, Any], inputs: Mapping[str, str], toolchain: str) -> str:
    payload = {"kind": kind, "config": config, "inputs": inputs, "toolchain": toolchain}
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


class _Builder:
    """Accumulates tasks, keeping one per key."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}

    def add(
        self,
        kind: StageKind,
        name: str,
        config: Mapping[str, Any],
        inputs: Mapping[str, str],
        toolchain: str,
        **extra: Any,
    ) -> str:
        key = task_key(kind, config, inputs, toolchain)
        if key not in self.tasks:
            self.tasks[key] = Task(key, kind, name, config, dict(inputs), toolchain, **extra)
        return key


def plan(spec: ModelDeploymentSpec) -> Plan:
    """The DAG of stage tasks for a validated spec."""
    builder = _Builder()
    convert = builder.add("convert", "convert", _dump(spec.source), {}, STAGE_TOOLCHAINS["convert"])

    prepared: dict[str, str] = {}

    def prepare(variant: str) -> str | None:
        if spec.dataset is None:
            return None
        if variant not in prepared:
            config = _prepare_config(spec, variant)
            prepared[variant] = builder.add("prepare", f"prepare {variant}", config, {}, STAGE_TOOLCHAINS["prepare"])
        return prepared[variant]

    def calibration_data() -> str | None:
        config = _calibration_prepare_config(spec)
        if config is None:
            return prepare(TENSORS)
        return builder.add("prepare", "prepare calibration", config, {}, STAGE_TOOLCHAINS["prepare"])

    labelled = spec.dataset is not None and spec.dataset.kind != "synthetic"
    reference = None
    if spec.accuracy is not None and spec.accuracy.reference == "source":
        reference_backend = backends.get(REFERENCE_BACKEND)
        reference = builder.add(
            "evaluate",
            "reference",
            {"role": "reference", "backend": REFERENCE_BACKEND, "precision": "fp32",
             "batchSize": REFERENCE_BATCH_SIZE, "accuracy": True},
            _inputs(model=convert, data=prepare(TENSORS)),
            reference_backend.toolchain,
            backend=REFERENCE_BACKEND,
        )

    cells: list[Cell] = []
    calibration = _dump(spec.calibration or Calibration())
    for target in spec.targets:
        backend = backends.get(target.backend)
        common = _target_config(target, backend)
        build = {**_build_config(target, backend), **backend.build_config(target, spec)}
        device_data = prepare(backend.data_variant(target))
        stage = _StagePlanner(builder, target, backend, spec)
        for precision in target.precisions:
            quantized = precision in QUANTIZED_PRECISIONS
            compile_inputs = _inputs(model=convert)
            compile_config: dict[str, Any] = {**build, "precision": precision}
            if quantized and backend.calibrates_in_compile:
                compile_inputs = _inputs(model=convert, calibrationData=calibration_data())
                compile_config["calibration"] = calibration
            elif quantized:
                calibrated = stage.add(
                    "calibrate",
                    f"{target.name}/{precision}",
                    {**build, "precision": precision, "calibration": calibration},
                    _inputs(model=convert, data=calibration_data()),
                )
                compile_inputs = _inputs(model=calibrated)
            evaluate_config = {
                **common,
                "precision": precision,
                "performance": spec.performance.budget(),
                "accuracy": labelled,
            }
            if target.dynamic_batch is not None:
                dynamic = target.dynamic_batch
                gears = {"min": dynamic.min, "max": dynamic.max, "gears": dynamic.evaluated()}
                evaluate_config["dynamicBatch"] = gears
                compiled = stage.add(
                    "compile", f"{target.name}/{precision}/dynamic", {**compile_config, "dynamicBatch": gears},
                    compile_inputs,
                )
                artifacts = {size: compiled for size in dynamic.evaluated()}
            else:
                artifacts = {
                    size: stage.add(
                        "compile", f"{target.name}/{precision}/bs{size}", {**compile_config, "batchSize": size},
                        compile_inputs,
                    )
                    for size in target.evaluated_batch_sizes()
                }
            for size, compiled in artifacts.items():
                evaluated = stage.add(
                    "evaluate",
                    f"{target.name}/{precision}/bs{size}",
                    {**evaluate_config, "batchSize": size},
                    _inputs(model=compiled, data=device_data),
                )
                cells.append(Cell(target.name, precision, size, compiled, evaluated))

    report_inputs = {f"cell:{cell.label}": cell.evaluate for cell in cells}
    if reference is not None:
        report_inputs["reference"] = reference
    report_config: dict[str, Any] = {
        "accuracy": _dump(spec.accuracy) if spec.accuracy else None,
        "cells": [
            {"target": c.target, "precision": c.precision, "batchSize": c.batch_size, "evaluate": c.evaluate}
            for c in cells
        ],
    }
    # Expected throughputs and the speed gate, only when the spec has them, so that other specs keep their key.
    speed = spec.performance.model_dump(
        mode="json", by_alias=True, exclude_none=True, include={"expected", "min_ratio", "int8_must_be_faster"}
    )
    if speed:
        report_config["performance"] = speed
    report = builder.add(
        "report",
        "report",
        report_config,
        report_inputs,
        STAGE_TOOLCHAINS["report"],
    )
    return Plan(tuple(builder.tasks.values()), tuple(cells), report)


def _prepare_config(spec: ModelDeploymentSpec, variant: str) -> dict[str, Any]:
    assert spec.dataset is not None
    return {
        "dataset": _dump(spec.dataset),
        "variant": variant,
        "inputs": [_dump(tensor) for tensor in spec.source.inputs],
    }


def _calibration_prepare_config(spec: ModelDeploymentSpec) -> dict[str, Any] | None:
    """The prepare config of exactly the samples calibration takes, in order, or None when it spreads its samples
    over the evaluation's tensors. The calibrate stage spreads `samples` over what it is given, which for these
    is all of it: `first` prepares the dataset as if limited to `samples`, `files` prepares the listed files."""
    calibration = spec.calibration or Calibration()
    if spec.dataset is None or calibration.select == "spread":
        return None
    config = _prepare_config(spec, TENSORS)
    if calibration.select == "first":
        config["dataset"]["limit"] = min(calibration.samples, spec.dataset.limit or calibration.samples)
    else:
        assert calibration.files is not None
        config["files"] = list(calibration.files)
    return config


def _inputs(**roles: str | None) -> dict[str, str]:
    """Input roles of a task; a role without a producer (no dataset) is left out."""
    return {role: key for role, key in roles.items() if key is not None}


def _target_config(target: Target, backend: Backend) -> dict[str, Any]:
    """What about a target changes its measurements: backend, device, options (defaults filled in), image, and the
    toolchain release it names when that is not the backend's (the stages compare it with the one that runs)."""
    config: dict[str, Any] = {
        "backend": backend.name,
        "options": backend.parse_options(target).model_dump(mode="json", by_alias=True),
    }
    if target.device is not None:
        config["device"] = target.device
    if target.image is not None:
        config["image"] = target.image
    release = backend.named_release(target)
    if release is not None:
        config["toolchainVersion"] = release
    return config


def _build_config(target: Target, backend: Backend) -> dict[str, Any]:
    """What changes a calibrated or compiled artifact: as above, with the device's build target for the device."""
    config = _target_config(target, backend)
    if target.device is not None:
        config["device"] = backend.build_target(target.device)
    return config


@dataclass
class _StagePlanner:
    builder: _Builder
    target: Target
    backend: Backend
    spec: ModelDeploymentSpec

    def add(self, kind: StageKind, label: str, config: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
        return self.builder.add(
            kind,
            f"{kind} {label}",
            config,
            inputs,
            self.backend.target_toolchain(self.target),
            backend=self.backend.name,
            target=self.target.name,
            needs_device=self.backend.needs_device(kind, self.target.device),
            commands=tuple(tuple(command) for command in self.backend.commands(kind, config, self.spec.source.inputs)),
            files=dict(self.backend.files(kind, config)),
        )
