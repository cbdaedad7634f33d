"""What every stage implementation receives and returns.

A stage is a function `run(context: StageContext) -> StageResult`. It reads its inputs from
`context.inputs` (already downloaded and sha256-verified), writes its outputs under
`context.outputs_dir`, and returns them with the metrics worth keeping. A problem with what
the user gave us (weights, model, data) raises `StageError` with a reason and a message
that names the file and the problem; the entrypoint records it and exits without retrying.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeldeploy.manifest import Manifest


class StageError(Exception):
    """A failure that retrying cannot fix: bad weights, a broken model, unusable data."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason  # CamelCase, e.g. WeightsMismatch, DatasetInvalid
        self.message = message


@dataclass(frozen=True)
class StageInput:
    """The committed outputs of an upstream task, downloaded and verified."""

    key: str
    manifest: Manifest
    directory: Path

    def path(self, name: str) -> Path:
        if name not in self.manifest.outputs:
            raise StageError("InputMissing", f"input task {self.key[:12]} has no output {name!r}")
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
    artifact_uri: Callable[[str, str], str]  # (task key, output name) -> the output's URI in the store


@dataclass(frozen=True)
class StageResult:
    outputs: Mapping[str, Path]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    toolchain: Mapping[str, str] = field(default_factory=dict)
