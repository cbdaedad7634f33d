"""Parse the console output (stdout and stderr together) of MagicMind's `mm_run` benchmark.

Formats handled (docs/magicmind.md §3.4 old format, §3.5 new format, field meanings §3.6, pitfalls §3.7):

* the OLD layout of MagicMind 0.13/0.14: `==== Performance Summary` with `Iterations:`, `Host Wall Time (s):`,
  `MLU Compute Time (s):`, `Throughput (qps):` and the `Enqueue Time`/`H2D Latency`/`MLU Compute Latency`/
  `D2H Latency (ms):` statistics lines, then `Trace averages of N runs:` (ignored); `[MMINFO]  ` info lines;
* the NEW layout of MagicMind 1.x: `Total iterations:`, `Host wall time(s):` (other case),
  `Total MLU compute time(host clock, s)` / `(dev clock, s)` (either or both, per `--trace_time`),
  `Throughput (qps): N with total batch sizes: B and I iterations/second`, then one `Input shape group k: [...]`
  block per shape group with `H2D`, `MLU Compute (Launch jobs)`, `D2H` and `Total Latency` sub-blocks, each with
  `Latency(host clock, ms)` / `Latency(dev clock, ms)` / `Interface Duration(ms)` lines; only the first group
  is reported, and the dev clock is preferred to the host clock;
* statistics lines `min: a max: b mean: c median: d percentile: (90%) e (95%) f (99%) g`, any part missing;
* the logger prefix `2022-06-17 06:38:41.652209: INFO: samples/cc/mm_run/run.cc:206] ` (also `WARNING:  `,
  `ERROR:`, a `,` before the milliseconds), which the new report puts on its own line before the summary;
* one Performance Summary per device: the device is the one of the `Device N Utilization Summary` (new) or
  `devN_chip_util(%)` (old) block just before it, else the k-th `Device ID:` of the Device Information blocks;
* the `Device Information` block (`Compute Capability`, `Cluster Number`, `Total Memory Size: 24576 (MB)`);
  nonsense values elsewhere in it such as `Pageable Memory Access: -1542368263` are not read, and a negative or
  overflowing (`1e999`) value in a summary is null;
* interleaved warnings (`<prefix> WARNING:  ...`, `[CNNL] [Warning]: ...`), counted;
* failures: logger `ERROR`/`FATAL` lines, `[ERROR]`, `FATAL`, `Check failed`, aborts and crashes, and the usage
  synopsis that `mm_run` prints before aborting on an unknown flag (§3.2, §3.3).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

# Unsigned: no time, rate or count of a summary is negative, so `-1542368263` is garbage and not read as a number.
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
# Integers are bounded so that int() never hits Python's limit on digits converted from a string.
_INTEGER = r"\d{1,12}"
# A number ends at white space or the end of the line: `12abc` is not the number 12.
_END = r"(?=\s|$)"

_LOGGER_PREFIX = re.compile(
    r"^\d{4}-\d{1,2}-\d{1,2}[ T]\d{1,2}:\d{1,2}:\d{1,2}(?:[.,]\d+)?:\s*"
    r"(INFO|WARNING|ERROR|FATAL|DEBUG|VERBOSE|TRACE)\s*:\s*(?:\S+:\d+\]\s*)?(.*)$"
)
_MMINFO_PREFIX = re.compile(r"^\[MMINFO\]\s*")
_SECTION = re.compile(r"^={3,}(.*)$")
_UTILIZATION_SECTION = re.compile(rf"^Device ({_INTEGER}) Utilization Summary$")
_OLD_UTILIZATION_LINE = re.compile(rf"^dev({_INTEGER})_chip_util\b")

_DEVICE_ID = re.compile(rf"^Device ID:\s*({_INTEGER})$")
_COMPUTE_CAPABILITY = re.compile(r"^Compute Capability:\s*(\S+)$")
_CLUSTER_NUMBER = re.compile(rf"^Cluster Number:\s*({_INTEGER})$")
_TOTAL_MEMORY = re.compile(rf"^Total Memory Size:\s*({_INTEGER})\s*\(MB\)$")
_DEVICE_NAME = re.compile(r"^(?:Device Name|Product Name|Name):\s*(\S.*)$")

_ITERATIONS = re.compile(rf"^(Iterations|Total iterations):\s*({_INTEGER}){_END}")
_WALL_TIME = re.compile(rf"^(Host Wall Time \(s\)|Host wall time\(s\)):\s*({_NUMBER}){_END}")
_COMPUTE_TIME = re.compile(
    rf"^(MLU Compute Time \(s\)|Total MLU compute time\((host|dev) clock, s\)):\s*({_NUMBER}){_END}"
)
_THROUGHPUT = re.compile(
    rf"^Throughput \(qps\):\s*({_NUMBER}){_END}"
    rf"(?:\s+with total batch sizes:\s*({_INTEGER})\s+and\s+({_NUMBER})\s+iterations/second)?"
)
# `MLU Compute Latency (ms): 0.87696  Enqueue: 0.059953` under `Trace averages` is not a statistics line.
_OLD_LATENCY = re.compile(r"^(Enqueue Time|H2D Latency|MLU Compute Latency|D2H Latency) \(ms\):\s*(min:.*)$")
_SHAPE_GROUP = re.compile(rf"^Input shape group ({_INTEGER})\b")
_NEW_STAGE = re.compile(r"^(H2D|MLU Compute \(Launch jobs\)|D2H|Total Latency) Summary\b")
_NEW_LATENCY = re.compile(r"^Latency\((host|dev) clock, ms\):\s*(.*)$")
_TRACE_AVERAGE = re.compile(r"^Trace average")

# The lines that open a summary when its header is missing.
_HEADLINES = (_WALL_TIME, _COMPUTE_TIME, _THROUGHPUT, _OLD_LATENCY)

_STATISTIC = re.compile(rf"\b(min|max|mean|median):\s*({_NUMBER}){_END}")
_PERCENTILE = re.compile(rf"\((90|95|99)%\)\s*({_NUMBER}){_END}")

# Lines only one of the two layouts prints: those of a summary decide, the others only when there is no summary.
_OLD_SUMMARY_MARKERS = re.compile(
    r"^(?:Iterations:|Host Wall Time \(s\):|MLU Compute Time \(s\):"
    r"|(?:Enqueue Time|H2D Latency|MLU Compute Latency|D2H Latency) \(ms\):\s*min:)"
)
_NEW_SUMMARY_MARKERS = re.compile(
    r"^(?:Total iterations:|Host wall time\(s\):|Total MLU compute time\(|Input shape group|Latency\((?:host|dev) clock)"
    r"|\bwith total batch sizes:"
)
_OLD_MARKERS = re.compile(r"^(?:magicmind model file:|IPU Clock Rate:|dev\d+_chip_util|CreateModel time is)")
_NEW_MARKERS = re.compile(
    r"^(?:--magicmind_model<|MLU Core Clock Rate:|Input num:|DeserializeModel time is"
    r"|=+\s*(?:Device \d+ Utilization Summary|Host Occupancy Summary))"
)

_WARNING = re.compile(r"\[(?:WARNING|Warning|WARN|Warn)\]|(?:^|\s)WARNING\b")
_ERROR = re.compile(
    r"\[(?:ERROR|Error|FATAL|Fatal)\]|(?:^|[\s:\]])(?:ERROR|FATAL)\b|Check failed|\b[Aa]bort(?:ed|ing)?\b"
    r"|Segmentation fault|core dumped|terminate called|\b[Uu]nknown (?:flag|option|param)"
)
_SYNOPSIS = re.compile(r"^(?:SYNOPSIS|Synopsis:?)$")
_SYNOPSIS_MESSAGE = "mm_run printed its usage synopsis: an unknown or malformed flag (or --help), nothing was run"

_OLD_STAGES = {"Enqueue Time": "enqueue", "H2D Latency": "h2d", "MLU Compute Latency": "compute", "D2H Latency": "d2h"}
_NEW_STAGES = {"H2D": "h2d", "MLU Compute (Launch jobs)": "compute", "D2H": "d2h", "Total Latency": "total"}
_STAGES = ("enqueue", "h2d", "compute", "d2h", "total")


def parse(text: str) -> dict[str, Any]:
    """The performance summaries (one per device), device information, errors and warnings of a run; never raises."""
    run = _Run()
    for physical in text.splitlines():
        run.read(physical.strip())
    summaries = [summary.result() for summary in run.summaries]
    return {
        "ok": run.ok(),
        "format": run.summary_format or run.other_format,
        "summaries": summaries,
        "shapeGroups": len(run.shape_groups),
        "throughput": _total_throughput(summaries),
        "device": run.device,
        "errors": run.errors,
        "warnings": run.warnings,
    }


@dataclass
class _Summary:
    device: int | None
    iterations: int | None = None
    wall_time: float | None = None
    compute_time: float | None = None
    compute_time_clock: str | None = None
    throughput: float | None = None
    total_batch_sizes: int | None = None
    iterations_per_second: float | None = None
    latency: dict[str, dict[str, Any] | None] = field(default_factory=lambda: dict.fromkeys(_STAGES))
    latency_clock: dict[str, str] = field(default_factory=dict)
    shape_groups: int = 0
    stage: str | None = None

    def read(self, line: str) -> bool:
        """Take one line of the summary; False when it is not one."""
        if match := _WALL_TIME.match(line):
            self.wall_time = _finite(match[2])
        elif match := _COMPUTE_TIME.match(line):
            self._compute_time(match[2], _finite(match[3]))
        elif match := _THROUGHPUT.match(line):
            self.throughput = _finite(match[1])
            self.total_batch_sizes = int(match[2]) if match[2] is not None else None
            self.iterations_per_second = _finite(match[3]) if match[3] is not None else None
        elif match := _OLD_LATENCY.match(line):
            self.latency[_OLD_STAGES[match[1]]] = _statistics(match[2])
        elif match := _SHAPE_GROUP.match(line):
            self.shape_groups += 1
            self.stage = None
        elif match := _NEW_STAGE.match(line):
            self.stage = _NEW_STAGES[match[1]]
        elif match := _NEW_LATENCY.match(line):
            self._new_latency(match[1], match[2])
        elif _TRACE_AVERAGE.match(line):
            self.stage = None
        else:
            return False
        return True

    def _compute_time(self, clock: str | None, value: float | None) -> None:
        # The dev clock measures the MLU itself; the host clock adds launch overhead (§3.5, §3.7).
        if clock == "host" and self.compute_time_clock == "dev":
            return
        self.compute_time, self.compute_time_clock = value, clock

    def _new_latency(self, clock: str, statistics: str) -> None:
        if self.stage is None or self.shape_groups > 1:
            return
        if clock == "host" and self.latency_clock.get(self.stage) == "dev":
            return
        self.latency[self.stage] = _statistics(statistics)
        self.latency_clock[self.stage] = clock

    def result(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "iterations": self.iterations,
            "hostWallTimeS": self.wall_time,
            "mluComputeTimeS": self.compute_time,
            "throughput": self.throughput,
            "totalBatchSizes": self.total_batch_sizes,
            "iterationsPerSecond": self.iterations_per_second,
            "latencyMs": dict(self.latency),
        }


@dataclass
class _Run:
    summaries: list[_Summary] = field(default_factory=list)
    open_summary: _Summary | None = None
    section: str | None = None
    # The device named by the utilization block just before a summary, and the ids of the Device Information blocks.
    utilization_device: int | None = None
    device_ids: list[int] = field(default_factory=list)
    device: dict[str, Any] = field(
        default_factory=lambda: {"computeCapability": None, "clusterNumber": None, "memoryMb": None, "name": None}
    )
    shape_groups: set[int] = field(default_factory=set)
    summary_format: str | None = None
    other_format: str | None = None
    errors: list[dict[str, str]] = field(default_factory=list)
    warnings: int = 0

    def read(self, line: str) -> None:
        level, message = _split_prefix(line)
        if self._read_diagnostic(level, line, message) or not message:
            return
        self._note_format(message)
        if section := _SECTION.match(message):
            self._enter_section(section[1].strip("= \t"))
        elif match := _ITERATIONS.match(message):
            summary = self.open_summary
            if summary is None or summary.iterations is not None:
                summary = self._open_summary()
            summary.iterations = int(match[2])
        elif self.open_summary is not None and self.open_summary.read(message):
            self._note_shape_group(message)
        elif self.open_summary is None and any(pattern.match(message) for pattern in _HEADLINES):
            # A summary whose header line is missing (a cut log, an unknown prefix on the header line).
            self._open_summary().read(message)
        elif self.section == "Device Information":
            self._read_device_line(message)
        elif match := _OLD_UTILIZATION_LINE.match(message):
            self.utilization_device = int(match[1])

    def _read_diagnostic(self, level: str | None, line: str, message: str) -> bool:
        """Count a warning or record an error; True when `line` was one of them."""
        if level == "WARNING" or (level is None and _WARNING.search(line)):
            self.warnings += 1
        elif level in ("ERROR", "FATAL") or _ERROR.search(message):
            self.errors.append({"message": message or line})
        elif _SYNOPSIS.match(message):
            if all(error["message"] != _SYNOPSIS_MESSAGE for error in self.errors):
                self.errors.append({"message": _SYNOPSIS_MESSAGE})
        else:
            return False
        return True

    def _note_format(self, message: str) -> None:
        if self.summary_format is None:
            if _OLD_SUMMARY_MARKERS.search(message):
                self.summary_format = "old"
            elif _NEW_SUMMARY_MARKERS.search(message):
                self.summary_format = "new"
        if self.other_format is None:
            if _OLD_MARKERS.search(message):
                self.other_format = "old"
            elif _NEW_MARKERS.search(message):
                self.other_format = "new"

    def _enter_section(self, name: str) -> None:
        self.section = name
        self.open_summary = None
        if name == "Performance Summary":
            self._open_summary()
        elif match := _UTILIZATION_SECTION.match(name):
            self.utilization_device = int(match[1])

    def _open_summary(self) -> _Summary:
        device = self.utilization_device
        if device is None and len(self.summaries) < len(self.device_ids):
            device = self.device_ids[len(self.summaries)]
        self.utilization_device = None
        self.open_summary = _Summary(device)
        self.summaries.append(self.open_summary)
        return self.open_summary

    def _note_shape_group(self, message: str) -> None:
        if match := _SHAPE_GROUP.match(message):
            self.shape_groups.add(int(match[1]))

    def _read_device_line(self, message: str) -> None:
        # The first Device Information block describes the device; later ones only add their ids.
        if match := _DEVICE_ID.match(message):
            self.device_ids.append(int(match[1]))
        elif match := _COMPUTE_CAPABILITY.match(message):
            self._set_device("computeCapability", match[1])
        elif match := _CLUSTER_NUMBER.match(message):
            self._set_device("clusterNumber", int(match[1]))
        elif match := _TOTAL_MEMORY.match(message):
            self._set_device("memoryMb", int(match[1]))
        elif match := _DEVICE_NAME.match(message):
            self._set_device("name", match[1])

    def _set_device(self, key: str, value: Any) -> None:
        if self.device[key] is None:
            self.device[key] = value

    def ok(self) -> bool:
        # Every device's summary must have its throughput: a multi-device log cut inside the last report is not ok.
        return (
            bool(self.summaries)
            and all(summary.throughput is not None for summary in self.summaries)
            and not self.errors
        )


def _split_prefix(line: str) -> tuple[str | None, str]:
    """The logger level and the message after the `<time>: LEVEL: file:line] ` or `[MMINFO]` prefix."""
    if match := _LOGGER_PREFIX.match(line):
        return match[1], match[2].strip()
    return None, _MMINFO_PREFIX.sub("", line, count=1)


def _statistics(text: str) -> dict[str, float | None] | None:
    """`min`, `max`, `mean`, `median`, `p90`, `p95`, `p99` of a statistics line; None when it has none of them."""
    values: dict[str, float | None] = {
        "min": None,
        "max": None,
        "mean": None,
        "median": None,
        "p90": None,
        "p95": None,
        "p99": None,
    }
    for name, number in _STATISTIC.findall(text):
        if values[name] is None:
            values[name] = _finite(number)
    for rank, number in _PERCENTILE.findall(text):
        if values[f"p{rank}"] is None:
            values[f"p{rank}"] = _finite(number)
    return values if any(value is not None for value in values.values()) else None


def _total_throughput(summaries: list[dict[str, Any]]) -> float | None:
    """The sum over devices; None when a summary has no throughput, since the sum would then be too low."""
    throughputs = [summary["throughput"] for summary in summaries]
    if not throughputs or None in throughputs:
        return None
    total = sum(throughputs)
    return total if math.isfinite(total) else None


def _finite(number: str) -> float | None:
    """`number` as a float; None when it overflows (`1e999`), since JSON has no infinity."""
    value = float(number)
    return value if math.isfinite(value) else None
