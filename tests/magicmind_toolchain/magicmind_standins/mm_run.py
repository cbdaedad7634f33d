"""Test stand-in for `mm_run`, MagicMind's benchmark (docs/magicmind.md §3): runs a stand-in model file
(mm_file.py) with onnxruntime on zero-filled inputs and prints the recorded report layout.

`MAGICMIND_STANDIN_VERSION` picks the emulated release (default 1.7.0): 1.x takes the §3.2 flags (`--batch_size`)
and writes the §3.5 report to stderr; 0.x takes the §3.3 flags (`--batch`) and writes the §3.4 report to stdout
(the stream of the old report is unrecorded, §8). Command-line errors print the message and the synopsis on
stderr (mm_run_args.py). The run needs: a readable model file, devices that exist among the emulated cards
(cards.py) and whose arch the model was built for, and input dims: `--input_dims`, else the model's dims with
`--batch_size`/`--batch` replacing dim 0 (a shape-mutable model keeps the dims it was built with as hints), which
the model must accept (engine.py). `--run_config`, `--input_files`, `--output_path`, `--plugin`, `--trace_path`,
`--debug_path`, `--perf_path` and `--trace_pmu` are not emulated and are refused; `--bind_cluster`,
`--host_async`, `--buffer_depth`, `--infer_depth`, `--kernel_capture`, `--datatransfer_opt` and `--avg_runs`
are checked and printed but change nothing. Failures print one ERROR log line on stderr and exit with status 1
(the real tool's status is unrecorded).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import numpy_helper

from magicmind_standins import log, magicmind_version, mm_file
from magicmind_standins.cards import installed_cards
from magicmind_standins.engine import ONNXRUNTIME_ERRORS, CompiledModel, InputError, arch_mismatch
from magicmind_standins.mm_file import ModelInfo
from magicmind_standins.mm_run_args import (
    NEW_FLAGS,
    OLD_FLAGS,
    OLD_SYNOPSIS,
    TRACE_TIMES,
    UNEMULATED_FLAGS,
    ArgumentError,
    Arguments,
    HelpRequested,
    new_synopsis,
    parse,
)
from magicmind_standins.mm_run_bench import Benchmark, Engine, RunPlan, host_usage, run_devices, zero_inputs
from magicmind_standins.mm_run_report import new_report, old_report

LOG_SOURCE = "samples/cc/mm_run/run.cc:0"
MIN_DEPTH = 2


class MmRunError(Exception):
    """A run that cannot happen; the message is logged as an ERROR."""


@dataclass(frozen=True)
class RunOptions:
    model: Path
    input_dims: list[list[int]]
    batch_sizes: list[int | None]
    devices: list[int]
    threads: int
    iterations: int
    warmup_ms: int
    duration_ms: int
    copy_data: bool


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        version = magicmind_version()
    except ValueError as error:
        print(f"mm_run stand-in: {error}", file=sys.stderr)
        return 1
    old = version[0] == 0
    synopsis = OLD_SYNOPSIS if old else new_synopsis()
    try:
        args = parse(arguments, OLD_FLAGS if old else NEW_FLAGS)
    except HelpRequested:
        print(synopsis)
        return 0
    except ArgumentError as error:
        print(f"{error}\n{synopsis}", file=sys.stderr)
        return 1
    try:
        bench = benchmark(run_options(args, old))
    except MmRunError as error:
        log("ERROR", LOG_SOURCE, str(error))
        return 1
    if old:
        print(old_report(bench, args), flush=True)
    else:
        print(new_report(bench, args, version), file=sys.stderr, flush=True)
    return 0


def run_options(args: Arguments, old: bool) -> RunOptions:
    for name in sorted(UNEMULATED_FLAGS & args.values.keys()):
        if args.values[name] not in (None, [], False):
            raise MmRunError(f"--{name} is not emulated by the mm_run stand-in")
    for name, minimum in (("threads", 1), ("iterations", 1), ("warmup", 0), ("duration", 0)):
        _require_at_least(args, name, minimum)
    if not old:
        for name in ("buffer_depth", "infer_depth"):
            _require_at_least(args, name, MIN_DEPTH)
        if args.text("trace_time") not in TRACE_TIMES:
            raise MmRunError(f"--trace_time {args.text('trace_time')} is not one of {', '.join(TRACE_TIMES)}")
    devices = args.integers("devices")
    if not devices or None in devices:
        raise MmRunError("--devices needs one or more device ids")
    return RunOptions(
        model=Path(args.text("magicmind_model") or ""),
        input_dims=args.groups("input_dims"),
        batch_sizes=args.integers("batch" if old else "batch_size"),
        devices=[device for device in devices if device is not None],
        threads=args.integer("threads"),
        iterations=args.integer("iterations"),
        warmup_ms=args.integer("warmup"),
        duration_ms=args.integer("duration"),
        copy_data=not args.flag("disable_data_copy"),
    )


def _require_at_least(args: Arguments, name: str, minimum: int) -> None:
    if args.integer(name) < minimum:
        raise MmRunError(f"--{name} must be at least {minimum}, got {args.integer(name)}")


def benchmark(options: RunOptions) -> Benchmark:
    started = time.perf_counter()
    try:
        onnx_bytes, info = mm_file.read(options.model)
    except (OSError, mm_file.MmFormatError) as error:
        raise MmRunError(f"failed to deserialize the model {options.model}: {error}") from None
    deserialize_seconds = time.perf_counter() - started
    input_dims = run_dims(info, options.input_dims, options.batch_sizes)
    engines = _engines(onnx_bytes, info, options.devices)
    probe = _probe(engines[0].compiled, input_dims)
    plan = RunPlan(input_dims, options.threads, options.iterations, options.warmup_ms / 1000,
                   options.duration_ms / 1000, options.copy_data)
    times_before, run_start = os.times(), time.perf_counter()
    devices = run_devices(engines, plan)
    host = host_usage(times_before, os.times(), time.perf_counter() - run_start)
    return Benchmark(
        model_path=str(options.model),
        model_size=options.model.stat().st_size,
        info=info,
        const_bytes=sum(numpy_helper.to_array(tensor).nbytes
                        for tensor in onnx.load_from_string(onnx_bytes).graph.initializer),
        input_dims=input_dims,
        output_dims=probe,
        batch=max((dims[0] for dims in input_dims if dims), default=1),
        deserialize_seconds=deserialize_seconds,
        devices=devices,
        host=host,
    )


def run_dims(info: ModelInfo, input_dims: list[list[int]], batch_sizes: list[int | None]) -> list[list[int]]:
    """The dims to run: --input_dims, else the model's (hint) dims; then the batch sizes replace dim 0."""
    inputs = info["inputs"]
    if input_dims and len(input_dims) != len(inputs):
        raise MmRunError(f"--input_dims gives {len(input_dims)} inputs, but the model has {len(inputs)}")
    dims = [list(group) for group in input_dims] or [list(entry["dims"]) for entry in inputs]
    if batch_sizes:
        if len(batch_sizes) not in (1, len(inputs)):
            raise MmRunError(f"{len(batch_sizes)} batch sizes given, but the model has {len(inputs)} inputs")
        sizes = batch_sizes * len(inputs) if len(batch_sizes) == 1 else batch_sizes
        dims = [[size, *group[1:]] if size is not None and group else group for group, size in zip(dims, sizes)]
    open_inputs = [entry["name"] for entry, group in zip(inputs, dims) if -1 in group]
    if open_inputs:
        raise MmRunError(f"the dims of inputs {open_inputs} are open in the model; give them with --input_dims")
    return dims


def _engines(onnx_bytes: bytes, info: ModelInfo, device_ids: list[int]) -> list[Engine]:
    try:
        cards = installed_cards()
    except ValueError as error:
        raise MmRunError(str(error)) from None
    engines: list[Engine] = []
    for device_id in device_ids:
        if not 0 <= device_id < len(cards):
            raise MmRunError(f"MLU device {device_id} does not exist; there are {len(cards)} devices")
        card = cards[device_id]
        mismatch = arch_mismatch(info, card)
        if mismatch is not None:
            raise MmRunError(f"failed to create the engine: {mismatch}")
        started = time.perf_counter()
        try:
            compiled = CompiledModel(onnx_bytes, info)
        except ONNXRUNTIME_ERRORS as error:
            raise MmRunError(f"failed to create the engine: {error}") from None
        engines.append(Engine(card, compiled, time.perf_counter() - started))
    return engines


def _probe(compiled: CompiledModel, input_dims: list[list[int]]) -> list[list[int]]:
    """The output dims for these input dims; MmRunError if the model refuses them."""
    inputs = zero_inputs(compiled.info, input_dims)
    try:
        compiled.check_inputs(inputs)
        return [list(output.shape) for output in compiled.run(inputs).outputs]
    except InputError as error:
        raise MmRunError(str(error)) from None
