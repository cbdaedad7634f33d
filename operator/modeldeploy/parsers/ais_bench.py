"""Parse the console output of `python3 -m ais_bench` and of its predecessor `ais_infer.py`.

Formats handled (docs/ascend.md §3.5, exit-code caveats §3.6):

* logger lines `[INFO] ...` / `[WARNING] ...` / `[ERROR] ...`, and tqdm progress bars that rewrite one
  physical line with `\\r`;
* `Performance Summary` blocks: optional `H2D_latency`/`D2H_latency` lines, the `NPU_compute_time` line,
  one throughput line in any of its three historical forms (current `batchsize.mean(N)`, intermediate
  `batchsize(N)`, legacy `(1000*batchsize/NPU_compute_time)`), and a closing dashes line that may be missing;
* multi-device runs: one summary per device, `i:<n> device_<id> throughput:...` lines (with or without
  `[INFO]`) and `[INFO] summary throughput:...`;
* `try get model batchsize:N`, `get filesperbatch ... filesperbatch:N runcount:M`;
* CANN error codes at the start of a line (`EZ9999: Inner Error!`, `EZ9999  The error from device...`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
# Integers are bounded so that int() never hits Python's limit on digits converted from a string.
_INTEGER = r"\d{1,12}"

_LOG_LEVEL = re.compile(r"^\[(INFO|WARNING|ERROR|DEBUG)\]\s*(.*)$")
_SUMMARY_START = re.compile(r"^-+Performance Summary-+$")
_SUMMARY_END = re.compile(r"^-{10,}$")
_LATENCY = re.compile(
    rf"^(H2D_latency|NPU_compute_time|D2H_latency) \(ms\): min = ({_NUMBER}), max = ({_NUMBER}), "
    rf"mean = ({_NUMBER}), median = ({_NUMBER}), percentile\(({_INTEGER})%\) = ({_NUMBER})$"
)
_THROUGHPUT_FORMATS = (
    (
        "current",
        re.compile(
            rf"^throughput 1000\*batchsize\.mean\((?P<batch>{_NUMBER})\)/NPU_compute_time\.mean\({_NUMBER}\): "
            rf"(?P<throughput>{_NUMBER})$"
        ),
    ),
    (
        "intermediate",
        re.compile(
            rf"^throughput 1000\*batchsize\((?P<batch>{_NUMBER})\)/NPU_compute_time\.mean\({_NUMBER}\): "
            rf"(?P<throughput>{_NUMBER})$"
        ),
    ),
    ("legacy", re.compile(rf"^throughput \(1000\*batchsize/NPU_compute_time\): (?P<throughput>{_NUMBER})$")),
)
_DEVICE = re.compile(
    rf"^i:({_INTEGER}) device_({_INTEGER}) throughput:({_NUMBER}) start_time:({_NUMBER}) end_time:({_NUMBER})$"
)
_SUMMARY_THROUGHPUT = re.compile(rf"^summary throughput:({_NUMBER})$")
_MODEL_BATCH_SIZE = re.compile(rf"^try get model batchsize:({_INTEGER})$")
_FILES_PER_BATCH = re.compile(rf"^get filesperbatch .*\bfilesperbatch:({_INTEGER}) runcount:({_INTEGER})$")
_ERROR_CODE = re.compile(r"^(E(?:[A-Z]\d{4}|\d{5}))\b:?\s*(.*)$")

_LATENCY_KEYS = {"H2D_latency": "h2dLatencyMs", "NPU_compute_time": "npuComputeTimeMs", "D2H_latency": "d2hLatencyMs"}


def parse(text: str) -> dict[str, Any]:
    """The run's performance summaries, per-device results, batching and errors; never raises."""
    run = _Run()
    for physical in text.splitlines():
        run.read(physical.strip())
    return {
        "ok": run.ok(),
        "summaries": run.summaries,
        "throughput": run.total_throughput(),
        "devices": run.devices,
        "batchSize": run.batch_size,
        "filesPerBatch": run.files_per_batch,
        "runCount": run.run_count,
        "errors": run.errors,
        "complete": run.complete,
    }


@dataclass
class _Run:
    summaries: list[dict[str, Any]] = field(default_factory=list)
    open_summary: dict[str, Any] | None = None
    complete: bool = False
    devices: list[dict[str, Any]] = field(default_factory=list)
    summary_throughput: float | None = None
    batch_size: int | None = None
    files_per_batch: int | None = None
    run_count: int | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    def read(self, line: str) -> None:
        level, message = _split_level(line)
        if _SUMMARY_START.match(message):
            self.open_summary = _empty_summary()
            self.summaries.append(self.open_summary)
            self.complete = False
        elif self.open_summary is not None and _SUMMARY_END.match(message):
            self.open_summary = None
            self.complete = True
        elif self.open_summary is None or not _read_summary_line(self.open_summary, message):
            self._read_run_line(level, message)

    def _read_run_line(self, level: str | None, message: str) -> None:
        if device := _device(message):
            self.devices.append(device)
        elif match := _SUMMARY_THROUGHPUT.match(message):
            self.summary_throughput = _finite(match[1])
        elif match := _MODEL_BATCH_SIZE.match(message):
            self.batch_size = int(match[1])
        elif match := _FILES_PER_BATCH.match(message):
            self.files_per_batch, self.run_count = int(match[1]), int(match[2])
        elif level == "ERROR":
            self.errors.append({"code": None, "message": message})
        elif (match := _ERROR_CODE.match(message)) and all(error["code"] != match[1] for error in self.errors):
            self.errors.append({"code": match[1], "message": match[2]})

    def ok(self) -> bool:
        # Multi-device runs are judged by their summaries: the printed result and exit code are unreliable (§3.5 d).
        return (
            bool(self.summaries)
            and len(self.summaries) >= len(self.devices)
            and all(summary["throughput"] is not None for summary in self.summaries)
            and not self.errors
        )

    def total_throughput(self) -> float | None:
        if self.summary_throughput is not None:
            return self.summary_throughput
        throughputs = [summary["throughput"] for summary in self.summaries]
        if not throughputs or None in throughputs:
            return None
        return sum(throughputs)


def _split_level(line: str) -> tuple[str | None, str]:
    match = _LOG_LEVEL.match(line)
    return (match[1], match[2]) if match else (None, line)


def _empty_summary() -> dict[str, Any]:
    return {
        "npuComputeTimeMs": None,
        "h2dLatencyMs": None,
        "d2hLatencyMs": None,
        "throughput": None,
        "batchSize": None,
        "throughputFormat": None,
    }


def _read_summary_line(summary: dict[str, Any], line: str) -> bool:
    """Fill `summary` from one of its latency or throughput lines; False when `line` is neither."""
    if match := _LATENCY.match(line):
        summary[_LATENCY_KEYS[match[1]]] = _latency(match)
        return True
    for name, pattern in _THROUGHPUT_FORMATS:
        if match := pattern.match(line):
            batch = match.groupdict().get("batch")
            summary["throughput"] = _finite(match["throughput"])
            summary["batchSize"] = _finite(batch) if batch is not None else None
            summary["throughputFormat"] = name
            return True
    return False


def _latency(match: re.Match[str]) -> dict[str, Any] | None:
    values = [_finite(match[group]) for group in (2, 3, 4, 5, 7)]
    if any(value is None for value in values):
        return None
    minimum, maximum, mean, median, percentile = values
    return {
        "min": minimum,
        "max": maximum,
        "mean": mean,
        "median": median,
        "percentile": percentile,
        "percentileRank": int(match[6]),
    }


def _device(line: str) -> dict[str, Any] | None:
    match = _DEVICE.match(line)
    if not match:
        return None
    throughput, start_time, end_time = (_finite(match[group]) for group in (3, 4, 5))
    if throughput is None or start_time is None or end_time is None:
        return None
    return {
        "index": int(match[1]),
        "device": int(match[2]),
        "throughput": throughput,
        "startTime": start_time,
        "endTime": end_time,
    }


def _finite(number: str) -> float | None:
    """`number` as a float; None when it overflows (`1e999`), since JSON has no infinity."""
    value = float(number)
    return value if math.isfinite(value) else None
