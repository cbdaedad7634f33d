"""Test stand-in for `python3 -m ais_bench`: runs a stand-in `.om` (see ascend_standins/om.py) with onnxruntime.

Flags, input batching, output naming, the summary JSON and the console lines follow docs/ascend.md §3.2–§3.6.
The node is emulated as npu-smi's stand-in lists it: its chips are `ASCEND_STANDIN_CHIPS` (comma-separated), else
one `ASCEND_STANDIN_CHIP` (default 310P3); device id N is the N-th chip, which must exist and match the om's
`--soc_version`. A device list (`--device 0,1,2,3`) runs one process per device at once, each on its share of the
input files, and ends with the multi-device trailer (§3.5 (d)); AIPP is applied to the uint8 NHWC input (ascend_standins/aipp.py); fp16 (bf16) precision modes
round the inputs and outputs through float16 (bfloat16); NPU_compute_time is the measured onnxruntime run time.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
from ascend_standins import aipp, om
from ascend_standins.npu_smi import chips

OUTPUT_FORMATS = ("BIN", "NPY", "TXT")
INPUT_SUFFIXES = (".bin", ".npy")
PERCENTILE = 99
MAX_DEVICE_ID = 255
SUMMARY_TITLE = "-----------------Performance Summary------------------"
SUMMARY_END = "------------------------------------------------------"
FP16_PRECISION_MODES = frozenset({
    "force_fp16", "allow_fp32_to_fp16", "allow_mix_precision", "allow_mix_precision_fp16", "cube_fp16in_fp32out",
})
BF16_PRECISION_MODES = frozenset({"allow_mix_precision_bf16", "allow_fp32_to_bf16"})
OUTPUT_TYPES = {"FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8, "INT8": np.int8}
PROGRESS_LABEL = "Inference array Processing"
PROGRESS_WIDTH = 40


class BenchError(Exception):
    """A failed run; every line of the message is printed as `[ERROR] <line>`."""


def say(level: str, message: str) -> None:
    """One line in one write, as ais_bench's logging handler writes a record: the processes of a multi-device run
    share the output, and print()'s separate write of the newline, unbuffered, lets another line in between."""
    sys.stdout.write(f"[{level}] {message}\n")
    sys.stdout.flush()


def info(message: str) -> None:
    say("INFO", message)


def str2bool(text: str) -> bool:
    """The bool flag values ais_bench accepts (§3.2)."""
    lowered = text.lower()
    if lowered in ("1", "true", "t", "yes", "y"):
        return True
    if lowered in ("0", "false", "f", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"Boolean value expected, got {text!r}")


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum`."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    return parse


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ais_bench", description="ais_bench stand-in (CPU, onnxruntime)")
    parser.add_argument("--model", "-m", required=True, help="the .om model")
    parser.add_argument("--input", "-i", help="comma-separated input files or directories, one per model input")
    parser.add_argument("--output", "-o", help="parent directory of the outputs")
    parser.add_argument("--output_dirname", help="output subdirectory (needs --output)")
    parser.add_argument("--outfmt", choices=OUTPUT_FORMATS, default="BIN", help="output file format")
    parser.add_argument("--loop", "-l", type=_count(1), default=1, help="inferences per input")
    parser.add_argument("--debug", type=str2bool, default=False, help="print the model description and run times")
    parser.add_argument("--device", "-d", default="0", help="device id, or ids separated by commas")
    parser.add_argument("--dymBatch", type=int, default=0, help="batch gear of a dynamic-batch model")
    parser.add_argument("--batchsize", type=_count(1), help="batch size for the throughput")
    parser.add_argument("--warmup_count", "--warmup-count", type=_count(0), default=1, help="warm-up inferences")
    parser.add_argument("--display_all_summary", type=str2bool, default=False, help="also print H2D and D2H")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class InputDesc:
    """One model input as the device is fed: with AIPP, uint8 NHWC source images."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    aipp_op: aipp.AippOp | None = None
    model_hw: tuple[int, int] = (0, 0)

    @property
    def size(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class LoadedModel:
    session: onnxruntime.InferenceSession
    info: om.OmInfo
    inputs: list[InputDesc]
    output_names: list[str]

    @property
    def batch(self) -> int:
        return self.inputs[0].shape[0] if self.inputs[0].shape else 1


@dataclass
class Timings:
    npu_ms: list[float] = field(default_factory=list)
    h2d_ms: list[float] = field(default_factory=list)
    d2h_ms: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Batch:
    """The files of one inference, per model input; the last batch is padded with each input's first file."""

    files: list[list[Path]]
    real_samples: int


@dataclass(frozen=True)
class DeviceRun:
    throughput: float
    start_time: float
    end_time: float


def main(argv: Sequence[str] | None = None) -> int:
    command_line = list(sys.argv if argv is None else ["ais_bench", *argv])
    args = parse_args(command_line[1:])
    try:
        devices = _device_ids(args.device)
        _check_args(args)
        result_dir = _result_dir(args)
        if len(devices) == 1:
            run_device(args, devices[0], result_dir, command_line)
            return 0
        return run_devices(args, devices, result_dir, command_line)
    except BenchError as failure:
        _print_error(failure)
        return 1


def _print_error(failure: BenchError) -> None:
    for line in str(failure).splitlines():
        say("ERROR", line)


def _device_ids(text: str) -> list[int]:
    try:
        devices = [int(part) for part in text.split(",")]
    except ValueError:
        raise BenchError(f"--device {text} must be device ids separated by commas") from None
    if any(not 0 <= device <= MAX_DEVICE_ID for device in devices):
        raise BenchError(f"--device {text}: device ids must be in [0, {MAX_DEVICE_ID}]")
    return devices


def _check_args(args: argparse.Namespace) -> None:
    if not Path(args.model).is_file():
        raise BenchError(f"model path:{args.model} does not exist")
    if args.output_dirname and not args.output:
        raise BenchError("--output_dirname needs --output")


def _result_dir(args: argparse.Namespace) -> str | None:
    if not args.output:
        return None
    return os.path.join(args.output, args.output_dirname or time.strftime("%Y_%m_%d-%H_%M_%S"))


def run_devices(args: argparse.Namespace, devices: list[int], result_dir: str | None, command_line: list[str]) -> int:
    """One process per device, all at once, each on its share of the input files; then the multi-device trailer
    (§3.5 (d)), in the order the devices finished; 1 if any device failed."""
    shares = split_inputs(args.input, len(devices)) if args.input else [None] * len(devices)
    sys.stdout.flush()
    with multiprocessing.get_context("fork").Pool(len(devices)) as pool:
        pending = []
        for index, (device, share) in enumerate(zip(devices, shares, strict=True)):
            device_dir = os.path.join(result_dir, f"device{device}_{index}") if result_dir else None
            device_args = argparse.Namespace(**{**vars(args), "input": share})
            pending.append((index, device, pool.apply_async(_run_subprocess,
                                                            (device_args, device, device_dir, command_line))))
        outcomes = [(index, device, run.get()) for index, device, run in pending]
    finished = sorted(((index, device, run) for index, device, run in outcomes if run is not None),
                      key=lambda each: each[2].end_time)
    result = 0 if len(finished) == len(devices) else 1
    info(f"multidevice run end qsize:{2 * len(finished)} result:{result}")
    for index, device, run in finished:
        info(f"i:{index} device_{device} throughput:{run.throughput} start_time:{run.start_time} "
             f"end_time:{run.end_time}")
    info(f"summary throughput:{sum(run.throughput for _, _, run in finished)}")
    return result


def _run_subprocess(args: argparse.Namespace, device: int, result_dir: str | None, command_line: list[str]
                    ) -> DeviceRun | None:
    """One device's run in a pool process; None, after the error line ais_bench's error callback prints, if it
    failed."""
    try:
        return run_device(args, device, result_dir, command_line)
    except BenchError as failure:
        say("ERROR", f"subprocess run failed error_callback:{failure}")
        return None


def split_inputs(input_arg: str, jobs: int) -> list[str]:
    """Each device's share of the input files, as comma-separated files: the files of every input directory in
    turn, each input's files cut into `jobs` consecutive shares, the first ones a file longer when they do not
    divide evenly."""
    paths = [Path(part.strip()) for part in input_arg.split(",") if part.strip()]
    files = [file for path in paths for file in _input_files(path)] if paths[0].is_dir() else paths
    per_input = math.ceil(len(files) / len(paths)) if paths[0].is_dir() else len(files)
    shares: list[list[Path]] = [[] for _ in range(jobs)]
    for start in range(0, len(files), per_input):
        chunk = files[start:start + per_input]
        size, left = divmod(len(chunk), jobs)
        head = 0
        for job in range(jobs):
            taken = size + (1 if job < left else 0)
            shares[job] += chunk[head:head + taken]
            head += taken
    return [",".join(str(file) for file in share) for share in shares]


def run_device(args: argparse.Namespace, device: int, result_dir: str | None, command_line: list[str]) -> DeviceRun:
    start_time = time.time()
    info("acl init success")
    node = chips()
    if device >= len(node):
        raise BenchError(f"open device {device} failed: the node has {len(node)} NPU(s), devices 0 to {len(node) - 1}")
    info(f"open device {device} success")
    info("create new context")
    model = load_model(Path(args.model), args.dymBatch, node[device])
    info(f"load model {args.model} success")
    info("create model description success")
    if args.debug:
        _print_description(model)
    if args.batchsize is None:
        info(f"try get model batchsize:{model.batch}")
    batchsize = args.batchsize or model.batch
    if result_dir:
        os.makedirs(result_dir, exist_ok=True)
        info(f"output path:{result_dir}")
    timings = Timings()
    if args.input:
        files_info = _infer_files(args, model, result_dir, timings)
    else:
        files_info = _infer_pure(args, model, result_dir, timings)
    throughput = _print_summary(timings, batchsize, args.display_all_summary)
    if result_dir:
        _write_summary(Path(result_dir), timings, throughput, files_info, command_line)
    info("unload model success, model Id is 1")
    info(f"end to reset device {device}")
    info("end to finalize acl")
    return DeviceRun(throughput, start_time, time.time())


def load_model(path: Path, dym_batch: int, chip: str) -> LoadedModel:
    """Load the om on an emulated device with this chip; the errors of a failed model load otherwise."""
    try:
        onnx_bytes, om_info = om.read(path)
    except om.OmFormatError as error:
        raise BenchError(f"load model from file failed, model file is {path}\n{error}") from None
    if om_info["soc_version"] != f"Ascend{chip}":
        raise BenchError(f"load model from file failed, model file is {path}\n"
                         f"the model was built for {om_info['soc_version']}, the device is Ascend{chip}")
    batch = _batch_for(om_info, dym_batch)
    try:
        session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - onnxruntime's InvalidGraph, Fail, ... derive from Exception only
        raise BenchError(f"load model from file failed, model file is {path}\n{error}") from None
    graph = onnx.load_from_string(onnx_bytes).graph
    dtypes = {value.name: onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
              for value in graph.input}
    aipp_ops = {op["related_input_rank"]: op for op in om_info["aipp"] or []}
    inputs = []
    for rank, value in enumerate(session.get_inputs()):
        dims = tuple(batch if dim == -1 and batch else dim for dim in om_info["input_shape"][value.name])
        inputs.append(_input_desc(value.name, dims, np.dtype(dtypes[value.name]), aipp_ops.get(rank)))
    return LoadedModel(session, om_info, inputs, [output.name for output in session.get_outputs()])


def _batch_for(om_info: om.OmInfo, dym_batch: int) -> int | None:
    """The batch of a dynamic-batch model (its --dymBatch gear); None for a static one."""
    gears = om_info["dynamic_batch_size"]
    if gears is None:
        if dym_batch:
            raise BenchError(f"--dymBatch {dym_batch} is set, but the model has no dynamic batch gears")
        return None
    if dym_batch not in gears:
        raise BenchError(f"--dymBatch {dym_batch} is not one of the model's batch gears {gears}")
    return dym_batch


def _input_desc(name: str, dims: tuple[int, ...], dtype: np.dtype, aipp_op: aipp.AippOp | None) -> InputDesc:
    if aipp_op is None:
        return InputDesc(name, dims, dtype)
    model_hw = (dims[2], dims[3])
    try:
        shape = aipp.runtime_input_shape(aipp_op, dims[0], model_hw)
    except aipp.AippUnsupported as error:
        raise BenchError(str(error)) from None
    return InputDesc(name, shape, np.dtype(np.uint8), aipp_op, model_hw)


def _print_description(model: LoadedModel) -> None:
    outputs = _run(model, _zeros(model), Timings())
    print("  input:")
    for index, desc in enumerate(model.inputs):
        print(f"    #{index}    {desc.name}  {desc.shape}  {desc.dtype}  {desc.size}  {desc.size}")
    print("  output:")
    for index, (name, array) in enumerate(zip(model.output_names, outputs)):
        print(f"    #{index}    {name}  {array.shape}  {array.dtype}  {array.nbytes}  {array.nbytes}")


def _zeros(model: LoadedModel) -> list[np.ndarray]:
    return [np.zeros(desc.shape, desc.dtype) for desc in model.inputs]


def _run(model: LoadedModel, tensors: list[np.ndarray], timings: Timings, debug: bool = False) -> list[np.ndarray]:
    """One inference: host→device conversion (AIPP, precision), the model, device→host conversion."""
    precision_mode = model.info["precision_mode"]
    started = time.perf_counter()
    feeds = {}
    for desc, tensor in zip(model.inputs, tensors):
        array = aipp.apply(desc.aipp_op, tensor, desc.model_hw) if desc.aipp_op else tensor
        feeds[desc.name] = emulate_precision(array, precision_mode)
    copied_in = time.perf_counter()
    raw_outputs = model.session.run(model.output_names, feeds)
    computed = time.perf_counter()
    output_type = OUTPUT_TYPES.get(model.info["output_type"] or "")
    outputs = [_to_output_type(emulate_precision(array, precision_mode), output_type) for array in raw_outputs]
    copied_out = time.perf_counter()
    timings.h2d_ms.append((copied_in - started) * 1000)
    timings.npu_ms.append((computed - copied_in) * 1000)
    timings.d2h_ms.append((copied_out - computed) * 1000)
    if debug:
        say("DEBUG", f"model aclExec cost : {timings.npu_ms[-1]}")
    return outputs


def emulate_precision(array: np.ndarray, precision_mode: str) -> np.ndarray:
    """Round float tensors through the precision the NPU computes in."""
    if not np.issubdtype(array.dtype, np.floating):
        return array
    if precision_mode in FP16_PRECISION_MODES:
        return array.astype(np.float16).astype(array.dtype)
    if precision_mode in BF16_PRECISION_MODES:
        bits = array.astype(np.float32).view(np.uint32)
        rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & 1)) & np.uint32(0xFFFF0000)
        return rounded.astype(np.uint32).view(np.float32).astype(array.dtype)
    return array


def _to_output_type(array: np.ndarray, output_type: type | None) -> np.ndarray:
    if output_type is None:
        return array
    if np.issubdtype(output_type, np.integer):
        limits = np.iinfo(output_type)
        array = np.clip(np.rint(array), limits.min, limits.max)
    return array.astype(output_type)


def _warm_up(args: argparse.Namespace, model: LoadedModel, tensors: list[np.ndarray]) -> None:
    for _ in range(args.warmup_count):
        _run(model, tensors, Timings())
    if args.warmup_count:
        info(f"warm up {args.warmup_count} done")


def _infer_pure(args: argparse.Namespace, model: LoadedModel, result_dir: str | None,
                timings: Timings) -> dict[str, Any]:
    """No --input: zeros, --loop times; `pure_infer_data_<i>` outputs when --output is given."""
    tensors = _zeros(model)
    _warm_up(args, model, tensors)
    outputs: list[np.ndarray] = []
    for _ in range(args.loop):
        outputs = _run(model, tensors, timings, args.debug)
    if not result_dir:
        return {}
    written = [_save(Path(result_dir) / f"pure_infer_data_{index}", array, args.outfmt)
               for index, array in enumerate(outputs)]
    return {"0": {"infiles": [], "outfiles": written}}


def _infer_files(args: argparse.Namespace, model: LoadedModel, result_dir: str | None,
                 timings: Timings) -> dict[str, Any]:
    batches, files_per_batch = plan_batches(args.input, model)
    _warm_up(args, model, _read_batch(model, batches[0]))
    files_info: dict[str, Any] = {}
    progress = _Progress(len(batches))
    for index, batch in enumerate(batches):
        tensors = _read_batch(model, batch)
        outputs: list[np.ndarray] = []
        for _ in range(args.loop):
            outputs = _run(model, tensors, timings, args.debug)
        written = _save_outputs(Path(result_dir), batch, outputs, files_per_batch, args.outfmt) if result_dir else []
        files_info[str(index)] = {
            "infiles": [str(path) for files in batch.files for path in files[:batch.real_samples]],
            "outfiles": written,
        }
        progress.update(index + 1)
    progress.close()
    return files_info


def plan_batches(input_arg: str, model: LoadedModel) -> tuple[list[Batch], int]:
    """Files per model input → batches of files_per_batch files each (§3.3)."""
    paths = [Path(part.strip()) for part in input_arg.split(",") if part.strip()]
    count = len(model.inputs)
    if paths and all(path.is_file() for path in paths) and len(paths) % count == 0:
        # files, as a device's share of a multi-device run: the first input's files, then the next input's ...
        per_input = len(paths) // count
        file_lists = [paths[index * per_input:(index + 1) * per_input] for index in range(count)]
    elif len(paths) != count:
        raise BenchError(f"--input has {len(paths)} paths, but the model has {count} inputs")
    else:
        file_lists = [_input_files(path) for path in paths]
    if len({len(files) for files in file_lists}) != 1:
        raise BenchError("the inputs hold different numbers of files: "
                         + ", ".join(f"{path}:{len(files)}" for path, files in zip(paths, file_lists)))
    file_size = _data_size(file_lists[0][0])
    tensor_size = model.inputs[0].size
    if tensor_size % file_size:
        raise BenchError(f"arg0 tensorsize: {tensor_size} filesize: {file_size} not match")
    files_per_batch = tensor_size // file_size
    for index, (desc, files) in enumerate(zip(model.inputs, file_lists)):
        for path in files:
            if _data_size(path) * files_per_batch != desc.size:
                raise BenchError(f"arg{index} tensorsize: {desc.size} filesize: {_data_size(path)} not match")
    run_count = math.ceil(len(file_lists[0]) / files_per_batch)
    info(f"get filesperbatch files0 size:{file_size} tensor0size:{tensor_size} "
         f"filesperbatch:{files_per_batch} runcount:{run_count}")
    batches = []
    for run in range(run_count):
        chunks = [files[run * files_per_batch:(run + 1) * files_per_batch] for files in file_lists]
        real_samples = len(chunks[0])
        padded = [chunk + [files[0]] * (files_per_batch - len(chunk)) for chunk, files in zip(chunks, file_lists)]
        batches.append(Batch(padded, real_samples))
    return batches, files_per_batch


def _input_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted((child for child in path.iterdir() if child.suffix.lower() in INPUT_SUFFIXES),
                       key=_natural_key)
        if not files:
            raise BenchError(f"input dir {path} holds no .bin or .npy files")
        return files
    if not path.is_file() or path.suffix.lower() not in INPUT_SUFFIXES:
        raise BenchError(f"input {path} is neither a directory nor a .bin/.npy file")
    return [path]


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _data_size(path: Path) -> int:
    if path.suffix.lower() == ".npy":
        return int(np.load(path, mmap_mode="r").nbytes)
    return path.stat().st_size


def _read_data(path: Path) -> bytes:
    if path.suffix.lower() == ".npy":
        return np.load(path).tobytes()
    return path.read_bytes()


def _read_batch(model: LoadedModel, batch: Batch) -> list[np.ndarray]:
    return [
        np.frombuffer(b"".join(_read_data(path) for path in files), dtype=desc.dtype).reshape(desc.shape)
        for desc, files in zip(model.inputs, batch.files)
    ]


def _save_outputs(result_dir: Path, batch: Batch, outputs: list[np.ndarray], files_per_batch: int,
                  outfmt: str) -> list[str]:
    """One file per real sample and output, named after the sample's first input file (§3.4)."""
    written = []
    for index, array in enumerate(outputs):
        splittable = array.ndim > 0 and array.shape[0] % files_per_batch == 0
        chunks = np.split(array, files_per_batch) if splittable else [array]
        for sample, chunk in enumerate(chunks[:batch.real_samples]):
            stem = batch.files[0][sample].name.split(".")[0]
            written.append(_save(result_dir / f"{stem}_{index}", chunk, outfmt))
    return written


def _save(stem: Path, array: np.ndarray, outfmt: str) -> str:
    path = stem.with_name(f"{stem.name}.{outfmt.lower()}")
    if outfmt == "NPY":
        np.save(path, array)
    elif outfmt == "TXT":
        _write_txt(path, array)
    else:
        array.tofile(path)
    return str(path)


def _write_txt(path: Path, array: np.ndarray) -> None:
    """Rows of the last axis, values space-separated with a trailing space (§3.4)."""
    rows = array.reshape(-1, array.shape[-1]) if array.ndim else array.reshape(1, 1)
    value_format = "%f" if np.issubdtype(array.dtype, np.floating) else "%d"
    with path.open("w") as text:
        for row in rows:
            text.write("".join(value_format % value + " " for value in row) + "\n")


class _Progress:
    """A tqdm-like progress line, redrawn with a carriage return."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = time.perf_counter()
        self.update(0)

    def update(self, done: int) -> None:
        elapsed = time.perf_counter() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        remaining = (self.total - done) / rate if rate else 0.0
        filled = PROGRESS_WIDTH * done // self.total
        bar = "█" * filled + " " * (PROGRESS_WIDTH - filled)
        sys.stdout.write(f"\r{PROGRESS_LABEL}: {100 * done // self.total:3d}%|{bar}| {done}/{self.total} "
                         f"[{_clock(elapsed)}<{_clock(remaining)}, {rate:.2f}it/s]")
        sys.stdout.flush()

    def close(self) -> None:
        sys.stdout.write("\n")
        sys.stdout.flush()


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes:02d}:{seconds:02d}"


def time_statistics(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0, f"percentile({PERCENTILE}%)": 0.0, "count": 0}
    array = np.array(values, dtype=np.float64)
    return {
        "min": float(array.min()),
        "max": float(array.max()),
        "mean": float(array.mean()),
        "median": float(np.median(array)),
        f"percentile({PERCENTILE}%)": float(np.percentile(array, PERCENTILE)),
        "count": len(values),
    }


def _statistics_line(name: str, values: list[float]) -> str:
    stats = time_statistics(values)
    return (f"{name} (ms): min = {stats['min']}, max = {stats['max']}, mean = {stats['mean']}, "
            f"median = {stats['median']}, percentile({PERCENTILE}%) = {stats[f'percentile({PERCENTILE}%)']}")


def _print_summary(timings: Timings, batchsize: int, display_all: bool) -> float:
    """The Performance Summary block (§3.5); returns the throughput."""
    mean = time_statistics(timings.npu_ms)["mean"]
    throughput = 1000 * batchsize / mean if mean else 0.0
    lines = [SUMMARY_TITLE]
    if display_all:
        lines.append(_statistics_line("H2D_latency", timings.h2d_ms))
    lines.append(_statistics_line("NPU_compute_time", timings.npu_ms))
    if display_all:
        lines.append(_statistics_line("D2H_latency", timings.d2h_ms))
    lines += [f"throughput 1000*batchsize.mean({batchsize})/NPU_compute_time.mean({mean}): {throughput}", SUMMARY_END]
    # One write: the block is printed in one go, so the processes of a multi-device run do not interleave inside it.
    sys.stdout.write("".join(f"[INFO] {line}\n" for line in lines))
    sys.stdout.flush()
    return throughput


def _write_summary(result_dir: Path, timings: Timings, throughput: float, files_info: dict[str, Any],
                   command_line: list[str]) -> None:
    """`<result dir>_summary.json`, a sibling of the result directory (§3.4)."""
    summary = {
        "filesinfo": files_info,
        "args": command_line,
        "NPU_compute_time": time_statistics(timings.npu_ms),
        "H2D_latency": time_statistics(timings.h2d_ms),
        "D2H_latency": time_statistics(timings.d2h_ms),
        "throughput": throughput,
        "npu_compute_time_list": timings.npu_ms,
        "pid": os.getpid(),
    }
    (result_dir.parent / f"{result_dir.name}_summary.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
