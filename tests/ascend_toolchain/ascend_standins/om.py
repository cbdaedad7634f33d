"""The stand-in `.om` written by the `atc` stand-in and run by the `ais_bench` stand-in.

A real `.om` is an NPU binary (docs/ascend.md §1.2 `--output`); this one is a zip archive holding
`model.onnx` (the ONNX model it was built from, input shapes fixed by `--input_shape`, the batch axis left
symbolic for `--dynamic_batch_size`) and `atc.json` (the parsed atc arguments, see `OmInfo`).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, TypedDict

MODEL_MEMBER = "model.onnx"
INFO_MEMBER = "atc.json"


class OmInfo(TypedDict):
    soc_version: str
    input_format: str
    input_shape: dict[str, list[int]]  # -1 marks the batch axis of a dynamic-batch model
    precision_mode: str
    dynamic_batch_size: list[int] | None  # the batch gears
    output_type: str | None
    op_select_implmode: str | None
    enable_small_channel: bool
    aipp: list[dict[str, Any]] | None  # one parsed `aipp_op` per model input it applies to
    source_sha256: str  # of the ONNX file given to --model


class OmFormatError(ValueError):
    """The file is not a stand-in `.om`."""


def write(path: Path, onnx_bytes: bytes, info: OmInfo) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(MODEL_MEMBER, onnx_bytes)
        archive.writestr(INFO_MEMBER, json.dumps(info, indent=2, sort_keys=True))


def read(path: Path) -> tuple[bytes, OmInfo]:
    """The ONNX bytes and atc arguments of a stand-in `.om`; OmFormatError if it is none."""
    if not zipfile.is_zipfile(path):
        raise OmFormatError(f"{path} is not an om file")
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        if not {MODEL_MEMBER, INFO_MEMBER} <= names:
            raise OmFormatError(f"{path} is not an om file: it lacks {MODEL_MEMBER} or {INFO_MEMBER}")
        info: OmInfo = json.loads(archive.read(INFO_MEMBER))
        return archive.read(MODEL_MEMBER), info
