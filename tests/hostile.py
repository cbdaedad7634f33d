"""Hostile inputs, built for real, and a child process to measure what a stage spends refusing them.

The tests that show each input refused and `bench/security.py`, which counts them, build them here: pickles that run
a command or allocate a terabyte, archives whose members lead out of them or inflate far beyond their size, images
and ONNX models that declare more than they hold, manifests naming files outside their task.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy._core.multiarray import _reconstruct

TESTS = Path(__file__).resolve().parent
MIB = 1024**2
TERABYTE = 2**40
# What a refusal may cost above the child's resident set after imports: far below any decoded image or tensor.
REFUSAL_MEMORY = 64 * MIB


class Payload:
    """Pickles as a call to `function(*arguments)`."""

    def __init__(self, function: Callable[..., Any], *arguments: Any):
        self.function = function
        self.arguments = arguments

    def __reduce__(self) -> tuple[Any, ...]:
        return self.function, self.arguments


def command_payload(marker: Path) -> Payload:
    """Runs a shell command when unpickled: `touch marker`."""
    return Payload(os.system, f"touch {marker}")


def open_payload(marker: Path) -> Payload:
    """Creates `marker` when unpickled, without a shell."""
    return Payload(open, str(marker), "w")


# Each allocates a terabyte when unpickled, from a pickle of a few hundred bytes.
ALLOCATING_PAYLOADS = {
    "bytes": Payload(bytes, TERABYTE),  # b'' is pickled as bytes(); with an argument it allocates that many zeros
    "ndarray": Payload(np.ndarray, (TERABYTE,)),  # the type numpy's pickles pass to _reconstruct, called directly
    "reconstruct": Payload(_reconstruct, np.ndarray, (TERABYTE,), b"b"),  # an uninitialised terabyte
}


def cifar_pickle(path: Path, data: Any) -> Path:
    """A CIFAR-100 batch file (a pickled dict) whose `data` is `data` and which labels one sample."""
    path.write_bytes(pickle.dumps({b"data": data, b"fine_labels": [0]}, protocol=2))
    return path


def checkpoint_with_payload(path: Path, marker: Path) -> Path:
    """A torch.save checkpoint holding a tensor and, beside it, a pickle that runs `touch marker` when loaded."""
    import torch  # here, not at the top: the tests of datasets that import this module need no torch

    torch.save({"conv.weight": torch.zeros(1), "payload": command_payload(marker)}, path)
    return path


def code_zip(path: Path, members: dict[str, str]) -> Path:
    """A `source.code` archive with these members (names as given, `../` included) and their text."""
    with zipfile.ZipFile(path, "w") as bundle:
        for name, text in members.items():
            bundle.writestr(name, text)
    return path


def one_bit_png(path: Path, width: int, height: int) -> Path:
    """An all-black 1-bit grey PNG, written row by row: its file is a few KB whatever its size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the packed pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def zip_bomb_checkpoint(path: Path, inflated: int) -> Path:
    """A torch.save-like zip whose one tensor entry is `inflated` zero bytes (whole MiB), deflated to a tiny file."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/version", b"3\n")
        with archive.open("archive/data/0", "w", force_zip64=True) as entry:
            block = bytes(MIB)
            for _ in range(inflated // MIB):
                entry.write(block)
    return path


def external_data_model(directory: Path, declared_length: int, dims: list[int], stored: bytes = bytes(16),
                        location: str = "w.bin", offset: str = "0") -> Path:
    """y = x + w, with w an initializer whose data lies in the file `location` (relative to the model, where
    `stored` is written) and whose external-data entry declares `offset` and `length`."""
    import onnx  # here, not at the top: the tests of datasets that import this module need no onnx
    from onnx import TensorProto, helper

    directory.mkdir(parents=True, exist_ok=True)
    (directory / location).write_bytes(stored)
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=dims, data_location=TensorProto.EXTERNAL)
    for key, value in {"location": location, "offset": offset, "length": str(declared_length)}.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", dims[-1]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", dims[-1]])],
        initializer=[weight],
    )
    path = directory / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def forged_manifest(key: str, output: str) -> bytes:
    """A result manifest for task `key`, well formed but for naming one output `output`."""
    return json.dumps({
        "apiVersion": "modeldeploy.io/v1alpha1", "kind": "StageResult", "key": key, "stage": "convert",
        "attempt": "20260101T000000Z-0123456789abcdef", "outputs": {output: {"sha256": "0" * 64, "size": 1}},
        "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:00Z",
    }).encode()


# ---------------------------------------------------------------- peak memory, in a child process

# What a stage imports as it runs, imported before the measurement starts.
WARM_IMPORTS = {"prepare": ["numpy", "PIL.Image"], "convert": ["numpy", "onnx", "onnxruntime", "torch"]}

CHILD = """
import json, sys
from pathlib import Path
from stages import run_stage
from modeldeploy_jobs.stage import StageError

def high_water():
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024

kind, config, workdir = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
Path("/proc/self/clear_refs").write_text("5")  # the peak so far (the imports') becomes the current resident set
before = high_water()
try:
    run_stage(kind, config, workdir)
    outcome = {"reason": None, "message": None}
except StageError as error:
    outcome = {"reason": error.reason.value, "message": error.message}
peak = high_water()
outcome["grewBytes"], outcome["peakBytes"] = peak - before, peak
print(json.dumps(outcome))
"""


def stage_in_child(kind: str, config: dict[str, Any], workdir: Path, **environment: str) -> dict[str, Any]:
    """Runs a stage in a fresh interpreter (stage modules and their libraries imported first, so the measured growth
    is the call's own); its StageError's reason and message (None when it succeeded), the peak resident set during
    the call and how far it rose above the resident set before it. Pillow and protobuf allocate outside
    tracemalloc's view, hence a process of its own; and its peak is read as VmHWM, which the kernel resets on
    request, where ru_maxrss keeps the peak of the forked parent across exec. Raises
    RuntimeError when the child fails otherwise (another exception, killed)."""
    workdir.mkdir(parents=True, exist_ok=True)
    warm = f"import modeldeploy_jobs.{kind}, {', '.join(WARM_IMPORTS[kind])}\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           **environment}
    result = subprocess.run([sys.executable, "-c", warm + CHILD, kind, json.dumps(config), str(workdir)],
                            capture_output=True, text=True, timeout=300, check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"the {kind} stage's process exited {result.returncode}: {result.stderr[-2000:]}")
    return json.loads(result.stdout.splitlines()[-1])
