"""Test stand-in for `magicmind.python.runtime.parser` (docs/magicmind.md §1.2): ONNX only."""

from __future__ import annotations

from pathlib import Path

import onnx

from magicmind.python.runtime._network import Network
from magicmind.python.runtime._status import Code, Status, invalid
from magicmind.python.runtime._types import ModelKind


class Parser:
    """`Parser(ModelKind.kOnnx).parse(network, path)`; the Caffe, PyTorch and TensorFlow parsers are not emulated."""

    def __init__(self, kind: ModelKind) -> None:
        self._kind = kind

    def parse(self, network: Network, path: str | Path) -> Status:
        if self._kind is not ModelKind.kOnnx:
            return Status(Code.UNIMPLEMENTED, f"the stand-in parses ONNX models only, not {self._kind.name}")
        if not Path(path).is_file():
            return invalid(f"model file {path} does not exist")
        try:
            model = onnx.load(str(path))
            onnx.checker.check_model(model)
        except Exception as error:  # noqa: BLE001 - protobuf's DecodeError, ValidationError, ...: no ONNX model
            return invalid(f"{path} is not a valid ONNX model: {error}")
        return network._load(model)
