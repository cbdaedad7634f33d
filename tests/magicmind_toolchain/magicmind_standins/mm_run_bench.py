"""The measurement behind the `mm_run` stand-in's reports (docs/magicmind.md §3.2, §3.6).

Every (device, thread) pair runs in its own Python thread on the device's engine (one onnxruntime session per
device, like one MagicMind engine per device): warm-up inferences until `--warmup` ms have passed, then
inferences until both `--iterations` and `--duration` ms are reached. One inference step is timed in three
parts: H2D (copying the zero-filled host inputs; nothing with `--disable_data_copy`), compute (the engine's
`run`: its own measure of the emulated device work is the "dev clock", the time around the call the "host
clock"), and D2H (copying the outputs). The stand-in's enqueue is synchronous, so enqueue/interface durations
are the host-clock compute times.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from magicmind_standins import dtypes
from magicmind_standins.cards import Card
from magicmind_standins.engine import CompiledModel
from magicmind_standins.mm_file import ModelInfo

PROC_STATUS = Path("/proc/self/status")
KIB_PER_GIB = 1024 * 1024


@dataclass(frozen=True)
class Step:
    """One inference, in seconds."""

    h2d: float
    compute_host: float
    compute_device: float
    d2h: float


@dataclass(frozen=True)
class ThreadRun:
    thread: int
    context_seconds: float  # allocating the thread's input buffers
    warmup_seconds: float
    start: float  # time.perf_counter() after warm-up
    end: float
    steps: list[Step]


@dataclass(frozen=True)
class DeviceRun:
    card: Card
    engine_seconds: float  # creating the onnxruntime session
    threads: list[ThreadRun]

    @property
    def steps(self) -> list[Step]:
        return [step for thread in self.threads for step in thread.steps]

    @property
    def wall_seconds(self) -> float:
        """From the earliest thread start to the latest thread end (§3.6)."""
        return max(thread.end for thread in self.threads) - min(thread.start for thread in self.threads)


@dataclass(frozen=True)
class RunPlan:
    input_dims: list[list[int]]
    threads: int
    iterations: int
    warmup_seconds: float
    duration_seconds: float
    copy_data: bool


@dataclass(frozen=True)
class HostUsage:
    user_percent: float  # CPU time in user mode over the run, as a share of all CPUs
    kernel_percent: float
    virtual_gb: float
    resident_gb: float


@dataclass(frozen=True)
class Engine:
    card: Card
    compiled: CompiledModel
    create_seconds: float


def zero_inputs(info: ModelInfo, input_dims: Sequence[Sequence[int]]) -> list[np.ndarray]:
    return [np.zeros(dims, dtypes.numpy_type(entry["data_type"])) for entry, dims in zip(info["inputs"], input_dims)]


def run_devices(engines: Sequence[Engine], plan: RunPlan) -> list[DeviceRun]:
    """All devices' threads at once; an engine error in a thread is raised here."""
    with ThreadPoolExecutor(max_workers=len(engines) * plan.threads) as pool:
        futures = [[pool.submit(_run_thread, engine.compiled, plan, thread) for thread in range(plan.threads)]
                   for engine in engines]
        return [DeviceRun(engine.card, engine.create_seconds, [future.result() for future in device_futures])
                for engine, device_futures in zip(engines, futures)]


def _run_thread(compiled: CompiledModel, plan: RunPlan, thread: int) -> ThreadRun:
    created = time.perf_counter()
    inputs = zero_inputs(compiled.info, plan.input_dims)
    warmup_start = time.perf_counter()
    while time.perf_counter() - warmup_start < plan.warmup_seconds:
        _step(compiled, inputs, plan.copy_data)
    start = time.perf_counter()
    steps: list[Step] = []
    while len(steps) < plan.iterations or time.perf_counter() - start < plan.duration_seconds:
        steps.append(_step(compiled, inputs, plan.copy_data))
    end = time.perf_counter()
    return ThreadRun(thread, warmup_start - created, start - warmup_start, start, end, steps)


def _step(compiled: CompiledModel, inputs: list[np.ndarray], copy_data: bool) -> Step:
    begin = time.perf_counter()
    device_inputs = [array.copy() for array in inputs] if copy_data else inputs
    launched = time.perf_counter()
    inference = compiled.run(device_inputs)
    computed = time.perf_counter()
    if copy_data:
        _ = [array.copy() for array in inference.outputs]  # D2H; the host copies are not looked at
    copied = time.perf_counter()
    return Step(launched - begin, computed - launched, inference.seconds, copied - computed)


def host_usage(before: os.times_result, after: os.times_result, wall_seconds: float) -> HostUsage:
    cpu_seconds = wall_seconds * (os.cpu_count() or 1)
    memory = _proc_status_kib()
    return HostUsage(
        user_percent=100 * (after.user - before.user) / cpu_seconds,
        kernel_percent=100 * (after.system - before.system) / cpu_seconds,
        virtual_gb=memory.get("VmSize", 0) / KIB_PER_GIB,
        resident_gb=memory.get("VmRSS", 0) / KIB_PER_GIB,
    )


def _proc_status_kib() -> dict[str, int]:
    """The `kB` fields of /proc/self/status (empty where there is none)."""
    try:
        lines = PROC_STATUS.read_text().splitlines()
    except OSError:
        return {}
    fields = (line.split(":", 1) for line in lines if line.endswith(" kB"))
    return {name: int(value.split()[0]) for name, value in fields}


@dataclass(frozen=True)
class Benchmark:
    model_path: str  # as given to --magicmind_model
    model_size: int  # bytes of the model file
    info: ModelInfo
    const_bytes: int  # the ONNX initializers
    input_dims: list[list[int]]  # as run
    output_dims: list[list[int]]
    batch: int  # the largest dim 0 among the inputs (§3.6)
    deserialize_seconds: float
    devices: list[DeviceRun]
    host: HostUsage
