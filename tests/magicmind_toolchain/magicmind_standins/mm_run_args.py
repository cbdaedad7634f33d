"""The command lines of the `mm_run` stand-in: MagicMind 1.x flags (docs/magicmind.md §3.2) and 0.13/0.14
flags (§3.3, which has `--batch` where 1.x has `--batch_size`).

Both follow the parser rules of the 1.x samples' `common/param.cc` (§2, §3.2): every option is `--key v1 v2 …`;
a duplicated or unknown key is an error, after which mm_run prints the synopsis and exits; a vector given as one
token is split on `,`; `--input_dims` takes one comma-separated group per input (`_` = scalar); bools are
0/1/True/False/true/false. Whether 0.x's clipp parser is as strict is unrecorded [assumption]; its usage text is
the recorded one. `--help` (and 0.x's `-h`) prints the synopsis and exits 0.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

Value = str | int | bool | list[int | None] | list[str] | list[list[int]] | None

BOOL_VALUES = {"0": False, "1": True, "True": True, "False": False, "true": True, "false": False}
SCALAR_GROUP = "_"
HELP_FLAGS = ("--help", "-h")
REQUIRED_FLAG = "magicmind_model"


class Kind(enum.Enum):
    """How a flag's values are read; the value is the type name 1.x prints in its parameter block (§3.5)."""

    STR = "Str"
    INT = "Int"
    BOOL = "Bool"
    INTS = "Vec<Int>"
    STRS = "Vec<Str>"
    INT_GROUPS = "Vec<Vec<Int>>"


@dataclass(frozen=True)
class Flag:
    name: str
    kind: Kind
    default: Value
    help: str


@dataclass(frozen=True)
class Arguments:
    """Every flag's value, its default when not given; the typed getters trust the flag's Kind."""

    values: dict[str, Value]

    def text(self, name: str) -> str | None:
        return cast(str | None, self.values[name])

    def integer(self, name: str) -> int:
        return cast(int, self.values[name])

    def flag(self, name: str) -> bool:
        return cast(bool, self.values[name])

    def integers(self, name: str) -> list[int | None]:
        return cast(list[int | None], self.values[name])

    def groups(self, name: str) -> list[list[int]]:
        return cast(list[list[int]], self.values[name])


class ArgumentError(ValueError):
    """A command line mm_run refuses; mm_run prints the message and the synopsis."""


class HelpRequested(Exception):
    """`--help`: print the synopsis and exit 0."""


NEW_FLAGS = (
    Flag("magicmind_model", Kind.STR, None, "[required] Input magicmind model"),
    Flag("input_dims", Kind.INT_GROUPS, [], "Input dims per input, e.g. 1,3,224,224; _ is a scalar"),
    Flag("batch_size", Kind.INTS, [], "Batch size per input, overrides dim 0 of its dims"),
    Flag("run_config", Kind.STR, None, "Run config json file (not emulated)"),
    Flag("input_files", Kind.STRS, [], "Input files (not emulated)"),
    Flag("output_path", Kind.STR, None, "Output path (not emulated)"),
    Flag("plugin", Kind.STRS, [], "Plugin op libraries (not emulated)"),
    Flag("devices", Kind.INTS, [0], "MLU device ids"),
    Flag("threads", Kind.INT, 1, "Threads per device"),
    Flag("bind_cluster", Kind.BOOL, False, "Bind each thread to a cluster"),
    Flag("warmup", Kind.INT, 200, "Warmup before measuring, ms"),
    Flag("duration", Kind.INT, 3000, "Run at least this long after warmup, ms"),
    Flag("iterations", Kind.INT, 100, "Run at least this many iterations per thread"),
    Flag("disable_data_copy", Kind.BOOL, False, "Skip H2D and D2H copies"),
    Flag("host_async", Kind.BOOL, False, "Run in host async mode"),
    Flag("buffer_depth", Kind.INT, 2, "Buffer depth, > 1"),
    Flag("infer_depth", Kind.INT, 2, "Infer depth, > 1"),
    Flag("kernel_capture", Kind.BOOL, False, "Enable kernel capture"),
    Flag("trace_path", Kind.STR, None, "Trace json path (not emulated)"),
    Flag("debug_path", Kind.STR, None, "Debug dump path (not emulated)"),
    Flag("perf_path", Kind.STR, None, "Profiler path (not emulated)"),
    Flag("trace_pmu", Kind.BOOL, False, "Trace bandwidth PMU (not emulated)"),
    Flag("trace_time", Kind.STR, "host", "Clocks to report: none, host, dev or both"),
    Flag("avg_runs", Kind.INTS, [100, 10], "Grouping of the trace average lines (accepted, not applied)"),
)
OLD_FLAGS = (
    Flag("magicmind_model", Kind.STR, None, "[required] Input magicmind model"),
    Flag("input_dims", Kind.INT_GROUPS, [], "Input dimensions"),
    Flag("run_config", Kind.STR, None, "Run config json file (not emulated)"),
    Flag("host_async", Kind.BOOL, False, "Run in host async mode."),
    Flag("batch", Kind.INTS, [], "Input batch_size"),
    Flag("devices", Kind.INTS, [0], "MLU Dev id default:0"),
    Flag("threads", Kind.INT, 1, "Thread num default:1"),
    Flag("bind_cluster", Kind.BOOL, False, "Enable cluster binding"),
    Flag("warmup", Kind.INT, 200, "Warmup before measuring performance default: 200ms"),
    Flag("duration", Kind.INT, 3000, "Run at least N seconds wallclock time (after warmup) default: 3000ms"),
    Flag("disable_data_copy", Kind.BOOL, False, "Disable h2d&d2h, MLU compute only default:false"),
    Flag("iterations", Kind.INT, 100, "Run at least N inference iterations default:100"),
    Flag("plugin", Kind.STRS, [], "Pluginop path (not emulated)"),
    Flag("input_files", Kind.STRS, [], "Input files (not emulated)"),
    Flag("output_path", Kind.STR, None, "Output path (not emulated)"),
    Flag("trace_path", Kind.STR, None, "Trace path (not emulated)"),
    Flag("datatransfer_opt", Kind.BOOL, True, "Enable I/O and Enqueue streams optimization default: true"),
    Flag("kernel_capture", Kind.BOOL, False, "Enable kernel capture"),
    Flag("debug_path", Kind.STR, None, "Path for debug dumper (not emulated)"),
    Flag("perf_path", Kind.STR, None, "Enable MagicMind profiler (not emulated)"),
)
UNEMULATED_FLAGS = frozenset({
    "run_config", "input_files", "output_path", "plugin", "trace_path", "debug_path", "perf_path", "trace_pmu",
})
TRACE_TIMES = ("none", "host", "dev", "both")

# `mm_run -h` of MagicMind 0.13/0.14, verbatim (§3.3).
OLD_SYNOPSIS = """\
SYNOPSIS
        mm_run --magicmind_model <magicmind_model> [--input_dims <input_dims>...] [--run_config
               <run_config>...] [--host_async <host_async>...] [--batch <batch_size>...] [--devices
               <devices>...] [--threads <threads>] [--bind_cluster <bind_cluster>] [--warmup
               <warmup>] [--duration <duration>] [--disable_data_copy <disable_data_copy>]
               [--iterations <iterations>] [--plugin <plugin>...] [--input_files <input_files>...]
               [--output_path <output_path>] [--trace_path <trace_path>] [--datatransfer_opt
               <datatransfer_opt>] [--kernel_capture <kernel_capture>] [--debug_path <debug_path>]
               [--perf_path <perf_path>]
OPTIONS
        --magicmind_model
                    [required] Input magicmind model

        --input_dims
                    [optional] Input dimensions

        --run_config
                    [optional] Run config json file

        --host_async
                    [optional] Run in host async mode.

        --batch     [optional] Input batch_size
        --devices   [optional] MLU Dev id default:0
        --threads   [optional] Thread num default:1
        --bind_cluster
                    [optional] Enable cluster binding, each thread's mlu task will bind one cluster
                    default: false

        --warmup    [optional] Warmup before measuring performance default: 200ms
        --duration  [optional] Run at least N seconds wallclock time (after warmup) default: 3000ms
        --disable_data_copy
                    [optional] Disable h2d&d2h, MLU compute only default:false

        --iterations
                    [optional] Run at least N inference iterations default:100

        --plugin    [optional] Pluginop path
        --input_files
                    [optional] Input files

        --output_path
                    [optional] Output path

        --trace_path
                    [optional] Trace path

        --datatransfer_opt
                    [optional] Enable I/O and Enqueue streams optimization default: true

        --kernel_capture
                    [optional] Enable kernel capture. 0(close)/1(open) is allowed to be set, default
                    value: 0

        --debug_path
                    [optional] Path for debug dumper

        --perf_path [optional] Enable MagicMind profiler. Performance data will be saved to given
                    path, eg. ./perf_data"""


def new_synopsis() -> str:
    """The 1.x synopsis; its wording is unrecorded (§3.2 names only "Synopsis:/Options:")."""
    usage = " ".join(f"--{flag.name} <{flag.kind.value}>" if flag.name == REQUIRED_FLAG
                     else f"[--{flag.name} <{flag.kind.value}>]" for flag in NEW_FLAGS)
    options = [f"    {format_flag(flag):<30}: {flag.help} (default: {format_value(flag.kind, flag.default)})"
               for flag in NEW_FLAGS]
    return "\n".join(["Synopsis:", f"    mm_run {usage}", "Options:", *options])


def format_flag(flag: Flag) -> str:
    return f"--{flag.name}<{flag.kind.value}>"


def format_value(kind: Kind, value: Value) -> str:
    """A value as 1.x's parameter block prints it (§3.5): `1,2,3,4 _ 5,6,7`, `0`, `false`."""
    if value is None:
        return ""
    if kind is Kind.BOOL:
        return "true" if value else "false"
    if kind is Kind.INT_GROUPS:
        assert isinstance(value, list)
        return " ".join(",".join(map(str, group)) if group else SCALAR_GROUP for group in value)
    if kind in (Kind.INTS, Kind.STRS):
        assert isinstance(value, list)
        return ",".join("" if item is None else str(item) for item in value)
    return str(value)


def parse(argv: Sequence[str], flags: Sequence[Flag]) -> Arguments:
    """The flags' values; ArgumentError or HelpRequested."""
    by_name = {flag.name: flag for flag in flags}
    values: dict[str, Value] = {flag.name: flag.default for flag in flags}
    given: set[str] = set()
    for key, tokens in _options(argv):
        if key in HELP_FLAGS:
            raise HelpRequested
        name = key[2:]
        if name not in by_name:
            raise ArgumentError(f"Unknown option: {key}")
        if name in given:
            raise ArgumentError(f"Duplicated option: {key}")
        given.add(name)
        values[name] = _convert(by_name[name], tokens)
    if values[REQUIRED_FLAG] is None:
        raise ArgumentError(f"Option --{REQUIRED_FLAG} is required")
    return Arguments(values)


def _options(argv: Sequence[str]) -> list[tuple[str, list[str]]]:
    options: list[tuple[str, list[str]]] = []
    for token in argv:
        if token.startswith("--") or token in HELP_FLAGS:
            options.append((token, []))
        elif not options:
            raise ArgumentError(f"Value {token} is not preceded by an option")
        else:
            options[-1][1].append(token)
    return options


def _convert(flag: Flag, tokens: list[str]) -> Value:
    if not tokens:
        raise ArgumentError(f"Option --{flag.name} needs a value")
    if flag.kind in (Kind.STR, Kind.INT, Kind.BOOL):
        if len(tokens) != 1:
            raise ArgumentError(f"Option --{flag.name} takes one value, got {' '.join(tokens)}")
        return _scalar(flag, tokens[0])
    if flag.kind is Kind.INT_GROUPS:
        return [[] if token == SCALAR_GROUP else [_int(flag, item) for item in token.split(",")] for token in tokens]
    items = tokens[0].split(",") if len(tokens) == 1 else tokens
    if flag.kind is Kind.STRS:
        return items
    return [None if item == "" else _int(flag, item) for item in items]


def _scalar(flag: Flag, token: str) -> Value:
    if flag.kind is Kind.INT:
        return _int(flag, token)
    if flag.kind is Kind.BOOL:
        if token not in BOOL_VALUES:
            raise ArgumentError(f"Option --{flag.name} takes 0/1/True/False/true/false, got {token}")
        return BOOL_VALUES[token]
    return token


def _int(flag: Flag, token: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise ArgumentError(f"Option --{flag.name} takes integers, got {token}") from None
