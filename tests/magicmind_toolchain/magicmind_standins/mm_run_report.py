"""The reports of the `mm_run` stand-in, in the recorded layouts of docs/magicmind.md §3.4 (MagicMind
0.13/0.14) and §3.5 (1.x), filled with the measurements of mm_run_bench.py.

Layout facts used: labels padded to 30 columns; statistics `min: … max: … mean: … median: … percentile: (90%) …
(95%) … (99%) …` with values left-aligned in 10 columns and 5 significant digits, summary scalars with 6 (the
C++ stream defaults); "Trace averages" over 10 groups of (iterations // 10) runs. Where the recordings leave a
detail open: old-format device utilisation and performance blocks are printed once per device; the 1.x log lines
carry the time they are printed (after the run), not the time of the event.

Emulated figures: device utilisation is the share of the wall time the engine computed (chip_util), the model
and I/O buffer size (mem), and the card's idle power and temperature; Ptr Addr values are made up; Const data is
the size of the ONNX initializers; the context workspace is 0; MagicMind/CNRT/CNAPI version numbers on 1.x are
the recorded CNRT/CNAPI values and an assumed encoding of `MAGICMIND_STANDIN_VERSION`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from magicmind_standins import dtypes, timestamp
from magicmind_standins.mm_file import ModelInfo
from magicmind_standins.mm_run_args import NEW_FLAGS, Arguments, format_flag, format_value
from magicmind_standins.mm_run_bench import Benchmark, DeviceRun, Step

LABEL_WIDTH = 30
TRACE_GROUPS = 10
BYTES_PER_MB = 1024 * 1024
PTR_BASE = 0x30080FFB58C2000
PTR_ALIGNMENT = 0x4000
CNRT_VERSION = 50801  # §3.5, recorded
CNAPI_VERSION = 10803
# The 1.x parameter block lists these flags (§3.5); --avg_runs is accepted but not listed.
NEW_PARAMETER_FLAGS = tuple(flag for flag in NEW_FLAGS if flag.name != "avg_runs")
DEVICE_LINES = (  # the fixed MLU370 lines of both Device Information blocks (§3.4, §3.5)
    ("Memory Bus Width:", "384 (bits)"),
    ("Memory Clock Rate:", "3.2 (GHz)"),
    ("Maximum Queue Size:", "4080"),
    ("Maximum Notifer Size:", "24000"),
    ("Sparse Computing Support:", "0"),
)
OLD_ONLY_DEVICE_LINES = (("Host Memory Map Support:", "0"), ("Pageable Memory Access:", "0"))
NEW_LOG = {"timer": "samples/cc/common/timer.cc:34", "run": "samples/cc/mm_run/run.cc:206",
           "workspace": "samples/cc/mm_run/run.cc:223", "finished": "samples/cc/mm_run/run.cc:55",
           "trace": "samples/cc/mm_run/trace.cc:342"}


@dataclass(frozen=True)
class Stats:
    min: float
    max: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        array = np.asarray(values, dtype=np.float64)
        percentiles = np.percentile(array, [90, 95, 99], method="lower")
        return cls(float(array.min()), float(array.max()), float(array.mean()), float(np.median(array)),
                   *(float(value) for value in percentiles))


def _g5(value: float) -> str:
    return f"{value:.5g}"


def _g6(value: float) -> str:
    return f"{value:.6g}"


def _line(label: str, value: object) -> str:
    return f"{label:<{LABEL_WIDTH - 1}} {value}"


def _stats_line(label: str, stats: Stats, width: int = LABEL_WIDTH, pad_last: bool = False) -> str:
    values = [_g5(value) for value in (stats.min, stats.max, stats.mean, stats.median, stats.p90, stats.p95,
                                       stats.p99)]
    last = f"{values[6]:<10}" if pad_last else values[6]
    return (f"{label:<{width}}min: {values[0]:<10} max: {values[1]:<10} mean: {values[2]:<10} median: "
            f"{values[3]:<10} percentile: (90%) {values[4]:<10} (95%) {values[5]:<10} (99%) {last}")


def _ms(steps: Sequence[Step], part: Callable[[Step], float]) -> list[float]:
    return [1000 * part(step) for step in steps]


def _trace_groups(steps: Sequence[Step]) -> tuple[int, list[list[Step]]]:
    """Runs per group and the (at most 10) groups of consecutive steps the trace averages cover."""
    runs = max(len(steps) // TRACE_GROUPS, 1)
    return runs, [list(steps[start:start + runs]) for start in range(0, runs * min(TRACE_GROUPS, len(steps)), runs)]


def _mean_ms(steps: Sequence[Step], part: Callable[[Step], float]) -> float:
    return 1000 * sum(part(step) for step in steps) / len(steps)


def _chip_util_percent(run: DeviceRun) -> float:
    busy = sum(step.compute_device for step in run.steps)
    return min(100.0, 100 * busy / (run.wall_seconds * len(run.threads)))


def _memory_mb(bench: Benchmark, run: DeviceRun) -> int:
    io_bytes = sum(_tensor_bytes(dims, entry["data_type"]) for dims, entry in
                   zip(bench.input_dims + bench.output_dims, bench.info["inputs"] + bench.info["outputs"]))
    return -(-(bench.model_size + io_bytes * len(run.threads)) // BYTES_PER_MB)


def _tensor_bytes(dims: Sequence[int], data_type: str) -> int:
    return int(np.prod(dims, dtype=np.int64)) * dtypes.numpy_type(data_type).itemsize


def _device_block(run: DeviceRun, old: bool) -> list[str]:
    spec = run.card.spec
    clock_label = "IPU Clock Rate:" if old else "MLU Core Clock Rate:"
    lines = [
        "=================== Device Information",
        _line("Device ID:", run.card.device_id),
        _line("Compute Capability:", spec.compute_capability),
        _line("Cluster Number:", spec.cluster_number),
        _line(clock_label, "1 (GHz)"),
        _line("Total Memory Size:", f"{spec.memory_mb} (MB)"),
        *(_line(label, value) for label, value in DEVICE_LINES),
    ]
    return lines + [_line(label, value) for label, value in OLD_ONLY_DEVICE_LINES] if old else lines


# MagicMind 0.13/0.14 (§3.4), on stdout.


def old_report(bench: Benchmark, args: Arguments) -> str:
    lines = _old_parameters(bench, args)
    lines.append(f"[MMINFO]  CreateModel time is {_whole_ms(bench.deserialize_seconds)} ms")
    for run in bench.devices:
        lines += _device_block(run, old=True)
        lines += [f"[MMINFO]  CreateEngine time is {_whole_ms(run.engine_seconds)} ms",
                  f"[MMINFO]  Constdata Size: {bench.const_bytes / BYTES_PER_MB:f} (MB)",
                  f"[MMINFO]  ContextMaxworkspace Size: {0:f} (MB)"]
        lines += [f"[MMINFO]  CreateContext time is {_whole_ms(thread.context_seconds)} ms" for thread in run.threads]
    for run in bench.devices:
        for thread in run.threads:
            name = f"dev_{run.card.device_id}_thread_{thread.thread}"
            lines += [f"[MMINFO]  {name}_warm_up time is {_whole_ms(thread.warmup_seconds)} ms",
                      f"[MMINFO]  {name}_e2e time is {_whole_ms(thread.end - thread.start)} ms"]
    lines += _old_model_information(bench)
    for run in bench.devices:
        lines += _old_utilization(bench, run) + _old_performance(bench, run)
    return "\n".join(lines)


def _whole_ms(seconds: float) -> int:
    return int(seconds * 1000)


def _old_parameters(bench: Benchmark, args: Arguments) -> list[str]:
    return [
        "==================== Parameter Information",
        f"magicmind model file: {bench.model_path}",
        "input dims type: 0",
        f"iterations: {args.integer('iterations')}",
        f"duration: {args.integer('duration')}",
        f"warm_up: {args.integer('warmup')}",
        f"thread_num: {args.integer('threads')}",
        f"bind_cluster: {int(args.flag('bind_cluster'))}",
        "devices: " + "".join(f"{device} " for device in args.integers("devices")),
        f"disable_data_copy: {int(args.flag('disable_data_copy'))}",
        f"datatransfer_opt: {int(args.flag('datatransfer_opt'))}",
        f"kernel_capture: {int(args.flag('kernel_capture'))}",
        "batch: " + " ".join(str(size) for size in args.integers("batch")),
    ]


def _old_model_information(bench: Benchmark) -> list[str]:
    lines = ["==================== Model Information "]
    address = PTR_BASE
    for kind, entries, all_dims in (("Input", bench.info["inputs"], bench.input_dims),
                                    ("Output", bench.info["outputs"], bench.output_dims)):
        lines += [f"Buffer Info: {kind}", f"Num: {len(entries)}"]
        for index, (entry, dims) in enumerate(zip(entries, all_dims)):
            size = _tensor_bytes(dims, entry["data_type"])
            layout = entry["layout"]["dst"] if entry["layout"] else "NONE"
            lines += [f"[{index}]: ", f"  Name: {entry['name']}",
                      f"  Datatype: {dtypes.display_name(entry['data_type'])}", f"  Layout: {layout}",
                      f"  Dim: {list(dims)}", f"  Size: {size}", f"  Ptr Addr: {address:#x}", "  TensorLoc: kMLU"]
            address += -(-max(size, 1) // PTR_ALIGNMENT) * PTR_ALIGNMENT
    return lines


def _old_utilization(bench: Benchmark, run: DeviceRun) -> list[str]:
    device = f"dev{run.card.device_id}"
    readings = ((f"{device}_chip_util(%):", _chip_util_percent(run)),
                (f"{device}_mem_info(MB):", _memory_mb(bench, run)),
                (f"{device}_power_info(W):", run.card.spec.idle_power_w),
                (f"{device}_temp_info(C):", run.card.temperature_c))
    lines = ["==================== Device Utilization Summary"]
    for label, reading in readings:
        value = _g5(reading)
        lines.append(f"{label:<{LABEL_WIDTH}}min: {value:<5} max: {value:<5} mean: {value:<5} median: {value:<5}")
    return lines


def _old_performance(bench: Benchmark, run: DeviceRun) -> list[str]:
    steps = run.steps
    runs, groups = _trace_groups(steps)
    return [
        "==================== Performance Summary",
        _line("Iterations:", len(steps)),
        _line("Host Wall Time (s):", _g6(run.wall_seconds)),
        _line("MLU Compute Time (s):", _g6(sum(step.compute_device for step in steps))),
        _line("Throughput (qps):", _g6(len(steps) * bench.batch / run.wall_seconds)),
        _stats_line("Enqueue Time (ms):", Stats.of(_ms(steps, lambda step: step.compute_host)), pad_last=True),
        _stats_line("H2D Latency (ms):", Stats.of(_ms(steps, lambda step: step.h2d)), pad_last=True),
        _stats_line("MLU Compute Latency (ms):", Stats.of(_ms(steps, lambda step: step.compute_device)),
                    pad_last=True),
        _stats_line("D2H Latency (ms):", Stats.of(_ms(steps, lambda step: step.d2h)), pad_last=True),
        f"Trace averages of {runs} runs:",
        *(f"  MLU Compute Latency (ms): {_g5(_mean_ms(group, lambda step: step.compute_device)):<12}"
          f"Enqueue: {_g5(_mean_ms(group, lambda step: step.compute_host)):<10}" for group in groups),
    ]


# MagicMind 1.x (§3.5), on stderr.


def new_report(bench: Benchmark, args: Arguments, version: tuple[int, int, int]) -> str:
    trace_time = args.text("trace_time") or ""
    lines = _new_parameters(args, version)
    lines.append(_log("timer", f"DeserializeModel time is {_g6(1000 * bench.deserialize_seconds)} ms."))
    lines += _new_model_information(bench)
    for run in bench.devices:
        lines += _device_block(run, old=False)
        lines += [_log("timer", f"CreateEngine {run.card.device_id} time is {_g6(1000 * run.engine_seconds)} ms."),
                  _log("run", f"Const data size: {bench.const_bytes // BYTES_PER_MB}(MB)"),
                  _log("workspace", "ContextMaxworkspace Size: 0(MB)")]
        lines += [_log("timer", f"CreateContext time is {_g6(1000 * thread.context_seconds)} ms.")
                  for thread in run.threads]
    for run in bench.devices:
        for thread in run.threads:
            name = f"dev_{run.card.device_id}_thread_{thread.thread}"
            infer_ms = _g6(1000 * (thread.end - thread.start))
            lines += [_log("timer", f"warmup_{name} time is {_g6(1000 * thread.warmup_seconds)} ms."),
                      _log("timer", f"infer_{name} time is {infer_ms} ms."),
                      _log("finished", f"Run {name} finished with total duration: {infer_ms}, generating report...")]
    lines += [_log("trace", ""), *_host_occupancy(bench)]
    for run in bench.devices:
        lines += [_log("trace", ""), *_new_utilization(bench, run), *_new_performance(bench, run, trace_time)]
    return "\n".join(lines)


def _log(source: str, message: str) -> str:
    return f"{timestamp()}: INFO: {NEW_LOG[source]}] {message}"


def encoded_version(version: tuple[int, int, int]) -> int:
    """Assumed encoding of the `MagicMind:` number (§3.5 shows 11534336 = 1 << 23 | 3 << 20 for a 1.x release)."""
    major, minor, patch = version
    return major << 23 | minor << 20 | patch


def _new_parameters(args: Arguments, version: tuple[int, int, int]) -> list[str]:
    lines = ["==================== Parameter Information"]
    lines += [f"{format_flag(flag):<{LABEL_WIDTH}}: {format_value(flag.kind, args.values[flag.name])}".rstrip()
              for flag in NEW_PARAMETER_FLAGS]
    return lines + [f"MagicMind: {encoded_version(version)}", f"CNRT: {CNRT_VERSION}", f"CNAPI: {CNAPI_VERSION}",
                    f"PID: {os.getpid()}"]


def _new_model_information(bench: Benchmark) -> list[str]:
    info: ModelInfo = bench.info
    mutable = info["graph_shape_mutable"]
    lines = ["=================== Model Information", f"Size:     {bench.model_size}",
             f"Input num: {len(info['inputs'])}", "Input info ["]
    lines += [f"{entry['name']:<18}: {[-1] * len(entry['dims']) if mutable else entry['dims']}, "
              f"{dtypes.display_name(entry['data_type'])}" for entry in info["inputs"]]
    lines += ["]", "Output info ["]
    lines += [f"{entry['name']:<18}: {entry['dims']}, {dtypes.display_name(entry['data_type'])}"
              for entry in info["outputs"]]
    return lines + ["]"]


def _host_occupancy(bench: Benchmark) -> list[str]:
    host = bench.host
    return ["=================== Host Occupancy Summary"] + [
        _stats_line(label, Stats.of([reading])) for label, reading in (
            ("UserMode Occupancy(%):", host.user_percent), ("KernelMode Occupancy(%):", host.kernel_percent),
            ("VirtualMem Usage(GB):", host.virtual_gb), ("ResidentSet Usage(GB):", host.resident_gb))
    ]


def _new_utilization(bench: Benchmark, run: DeviceRun) -> list[str]:
    return [f"=================== Device {run.card.device_id} Utilization Summary"] + [
        _stats_line(label, Stats.of([reading])) for label, reading in (
            ("chip_util(%):", _chip_util_percent(run)), ("mem_util(MB):", _memory_mb(bench, run)),
            ("power_util(W):", run.card.spec.idle_power_w), ("temp_util(C):", run.card.temperature_c))
    ]


def _new_performance(bench: Benchmark, run: DeviceRun, trace_time: str) -> list[str]:
    steps = run.steps
    wall = run.wall_seconds
    host, dev = trace_time in ("host", "both"), trace_time in ("dev", "both")
    lines = ["=================== Performance Summary", _line("Total iterations:", len(steps)),
             _line("Host wall time(s):", _g6(wall))]
    if host:
        lines.append(_line("Total MLU compute time(host clock, s):", _g6(sum(step.compute_host for step in steps))))
    if dev:
        lines.append(_line("Total MLU compute time(dev clock, s):", _g6(sum(step.compute_device for step in steps))))
    total_batches = len(steps) * bench.batch
    lines.append(_line("Throughput (qps):", f"{_g6(total_batches / wall)} with total batch sizes: {total_batches} "
                                            f"and {_g6(len(steps) / wall)} iterations/second"))
    shapes = ", ".join(f"{entry['name']}: {list(dims)}" for entry, dims in zip(bench.info["inputs"], bench.input_dims))
    lines.append(f"Input shape group 0: [{shapes}]")
    lines += _latency_block("H2D Summary:", steps, lambda step: step.h2d, lambda step: step.h2d, host, dev)
    lines += _latency_block("MLU Compute (Launch jobs) Summary:", steps, lambda step: step.compute_host,
                            lambda step: step.compute_device, host, dev)
    lines += _latency_block("D2H Summary:", steps, lambda step: step.d2h, lambda step: step.d2h, host, dev)
    if host or dev:
        lines.append("  Total Latency Summary(H2D + Compute + D2H):")
        if host:
            lines.append(_sub_stats("Latency(host clock, ms):",
                                    _ms(steps, lambda step: step.h2d + step.compute_host + step.d2h)))
        if dev:
            lines.append(_sub_stats("Latency(dev clock, ms):",
                                    _ms(steps, lambda step: step.h2d + step.compute_device + step.d2h)))
    return lines + _new_trace_averages(steps, len(run.threads), host, dev)


def _latency_block(title: str, steps: Sequence[Step], host_part: Callable[[Step], float],
                   dev_part: Callable[[Step], float], host: bool, dev: bool) -> list[str]:
    """Host- and dev-clock latency as --trace_time asks; the interface (API call) duration is the host time."""
    lines = [f"  {title}"]
    if host:
        lines.append(_sub_stats("Latency(host clock, ms):", _ms(steps, host_part)))
    if dev:
        lines.append(_sub_stats("Latency(dev clock, ms):", _ms(steps, dev_part)))
    return lines + [_sub_stats("Interface Duration(ms):", _ms(steps, host_part))]


def _sub_stats(label: str, values_ms: Sequence[float]) -> str:
    return "  " + _stats_line(label, Stats.of(values_ms), width=LABEL_WIDTH - 2)


def _new_trace_averages(steps: Sequence[Step], threads: int, host: bool, dev: bool) -> list[str]:
    runs, groups = _trace_groups(steps)
    lines = [f"Trace average MLU Compute perf over {runs} runs ({runs // threads} per thread):"]
    for group in groups:
        fields = []
        if host:
            fields.append(("Latency(host clock, ms):", _mean_ms(group, lambda step: step.compute_host)))
        if dev:
            fields.append(("Latency(dev clock, ms):", _mean_ms(group, lambda step: step.compute_device)))
        fields.append(("Interface Duration(ms):", _mean_ms(group, lambda step: step.compute_host)))
        lines.append("  " + "".join(f"{label} {_g5(value):<12}" for label, value in fields).rstrip())
    return lines
