"""What every stage implementation receives and returns.

A stage is a function `run(context: StageContext) -> StageResult`. It reads its inputs from
`context.inputs` (already downloaded and sha256-verified), writes its outputs under
`context.outputs_dir`, and returns them with the metrics worth keeping. A failure it can name
raises `StageError` with a `StageReason` and a message that names the field or file and the
problem, never quoting what the file holds. The reason says whose fault it is: the entrypoint
exits 3 (no retry) when the user's input is at fault, 1 (retried) when a tool, a device or the
network failed (docs/failures.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

from modeldeploy.manifest import Manifest


class StageReason(StrEnum):
    """Why a stage failed, as its failure record and the resource's status name it (CamelCase)."""

    user_fault: bool  # the user's input is at fault: retrying cannot help

    def __new__(cls, value: str, user_fault: bool) -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member.user_fault = user_fault
        return member

    # Where the model and the data come from
    SOURCE_NOT_FOUND = "SourceNotFound", True
    SOURCE_INVALID = "SourceInvalid", True
    CHECKSUM_MISMATCH = "ChecksumMismatch", True
    SOURCE_UNREACHABLE = "SourceUnreachable", False
    # The model
    CODE_INVALID = "CodeInvalid", True
    ARCHITECTURE_INVALID = "ArchitectureInvalid", True
    WEIGHTS_INVALID = "WeightsInvalid", True
    UNSAFE_WEIGHTS = "UnsafeWeights", True
    WEIGHTS_MISMATCH = "WeightsMismatch", True
    MODEL_INVALID = "ModelInvalid", True
    INPUTS_MISMATCH = "InputsMismatch", True
    OPSET_CONVERSION_FAILED = "OpsetConversionFailed", True
    EXPORT_FAILED = "ExportFailed", True
    SIMPLIFY_FAILED = "SimplifyFailed", True
    PARITY_FAILED = "ParityFailed", True
    MODEL_UNSUPPORTED = "ModelUnsupported", True
    COMPILE_REJECTED = "CompileRejected", True
    # The data
    DATASET_EMPTY = "DatasetEmpty", True
    DATASET_INVALID = "DatasetInvalid", True
    DATASET_TOO_SMALL = "DatasetTooSmall", True
    LABELS_INVALID = "LabelsInvalid", True
    LABELS_MISSING = "LabelsMissing", True
    LABELS_MISMATCH = "LabelsMismatch", True
    UNSAFE_PICKLE = "UnsafePickle", True
    LIMIT_EXCEEDED = "LimitExceeded", True
    # The pipeline, the job image, the node and its devices
    INPUT_MISSING = "InputMissing", False
    INPUT_CORRUPT = "InputCorrupt", False
    BACKEND_UNAVAILABLE = "BackendUnavailable", False
    TOOLCHAIN_MISSING = "ToolchainMissing", False
    DEVICE_MISSING = "DeviceMissing", False
    PRECISION_UNSUPPORTED = "PrecisionUnsupported", False
    CALIBRATION_FAILED = "CalibrationFailed", False
    COMPILE_FAILED = "CompileFailed", False
    EVALUATION_FAILED = "EvaluationFailed", False
    OUT_OF_MEMORY = "OutOfMemory", False
    STAGE_CRASHED = "StageCrashed", False


class StageError(Exception):
    """A failure the stage can name; `reason.user_fault` tells whether retrying may help."""

    def __init__(self, reason: StageReason, message: str):
        super().__init__(message)
        self.reason = StageReason(reason)  # also takes the reason's name as a string, and refuses unknown ones
        self.message = message


@dataclass(frozen=True)
class StageInput:
    """The committed outputs of an upstream task, downloaded and verified."""

    key: str
    manifest: Manifest
    directory: Path

    def path(self, name: str) -> Path:
        if name not in self.manifest.outputs:
            raise StageError(StageReason.INPUT_MISSING, f"input task {self.key[:12]} has no output {name!r}")
        return self.directory / name


# Downloads a source URI (s3://, file://, http(s)://) to a local file; verifies sha256 when given.
FetchSource = Callable[[str, Path, "str | None"], Path]
# Makes a directory URI (s3://bucket/prefix/, file:///dir) available locally: downloads every object
# under it into the given directory, or returns a local directory as it is. Returns the local path.
FetchTree = Callable[[str, Path], Path]


@dataclass(frozen=True)
class StageContext:
    key: str
    kind: str
    config: Mapping[str, Any]
    inputs: Mapping[str, StageInput]
    workdir: Path  # scratch space, removed afterwards
    outputs_dir: Path  # every file placed here and returned in StageResult.outputs is uploaded
    fetch_source: FetchSource
    fetch_tree: FetchTree
    artifact_uri: Callable[[Manifest, str], str]  # (an input's manifest, output name) -> the output's URI


@dataclass(frozen=True)
class StageResult:
    outputs: Mapping[str, Path]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    toolchain: Mapping[str, str] = field(default_factory=dict)
