"""Test stand-in for `magicmind.python.runtime` (`import magicmind.python.runtime as mm`), never shipped.

The build API of docs/magicmind.md §1 (Parser → Network → BuilderConfig → Calibrator → Builder → Model) and
the runtime API of §4 (System, Device, Model.create_i_engine → IEngine → IContext → IRTTensor), emulated on the
CPU with onnxruntime; see magicmind_standins/__init__.py for the emulated machine and the module docstrings here
for what each object checks.
"""

from magicmind.python.runtime import parser
from magicmind.python.runtime._builder import Builder
from magicmind.python.runtime._calibration import CalibDataInterface, Calibrator
from magicmind.python.runtime._config import BuilderConfig
from magicmind.python.runtime._model import IContext, IEngine, IRTTensor, Model
from magicmind.python.runtime._network import ITensor, Network
from magicmind.python.runtime._status import Code, Status
from magicmind.python.runtime._system import Device, Queue, System
from magicmind.python.runtime._types import DataType, Dims, ModelKind, QuantizationAlgorithm
from magicmind.python.runtime.parser import Parser

__all__ = [
    "Builder", "BuilderConfig", "CalibDataInterface", "Calibrator", "Code", "DataType", "Device", "Dims",
    "IContext", "IEngine", "IRTTensor", "ITensor", "Model", "ModelKind", "Network", "Parser",
    "QuantizationAlgorithm", "Queue", "Status", "System", "parser",
]
