"""Parse the console output of CANN's `atc` model compiler.

Formats handled (docs/ascend.md §1.5; exit codes §1.6, AMCT-inside-ATC error §2.3):

* the markers `ATC start working now...`, the `...` line of newer versions, `ATC run success...` and
  `ATC run failed...`; without either verdict (a killed run) the result is not ok;
* error-manager blocks: `<CODE>: <message>`, then indented `Solution: ...` and
  `TraceBack (most recent call last):` followed by traceback lines; newer versions put
  `[PID: n] <timestamp> ` in front of the message, and a message may continue on the next line
  (`E19999: Internal Error!` / `An unknown error occurred. Please check the log.`);
* warnings `W11001: ...` printed after the success line;
* `[ERROR] ...` lines such as AMCT's `[ERROR] AMCT(pid,atc.bin):<time>[file:line]...`, kept as errors without a code.

`cause(code)` tells who can fix an error, by its code's family (docs/failures.md). `version(output)` reads the
CANN release from `atc --version`, which prints it the way gflags prints a program's version string
(`atc version 6.3.RC1`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

_STARTED = "ATC start working now"
_SUCCEEDED = "ATC run success"
_FAILED = "ATC run failed"
_PROGRESS = "..."
_TRACEBACK = "TraceBack (most recent call last):"

_CODED = re.compile(r"^([EW](?:[A-Z]\d{4}|\d{5}))\b:?\s*(.*)$")
_PID_PREFIX = re.compile(r"^\[PID: \d+\] \S+ ")
_UNCODED_ERROR = re.compile(r"^\[ERROR\]\s*(.*)$")
_SOLUTION = re.compile(r"^Solution:\s*(.*)$")

# E10xxx: GE's checks of the command line and of the model file it names (docs/ascend.md §1.5 templates).
_PARAMETER_FAMILY = "E10"
_INVALID_INPUT_CODES = frozenset({"E19025"})  # "Input tensor is invalid"
# The model holds an operator this CANN has no parser, IR or kernel for (the recorded outputs of §1.5).
_UNSUPPORTED_OPERATOR_CODES = frozenset({"E19010", "EZ9010", "EZ0501", "EZ3002", "EZ3003"})

# A CANN release: 5.0.1, 6.0.RC1, 8.2.rc1, 7.0.RC1.alpha003, 8.0.RC2.beta1.
_RELEASE = re.compile(r"(?<![\w.])(\d+\.\d+\.(?:\d+|[Rr][Cc]\d+)(?:\.(?:alpha|beta)\d+)?)(?![\w.])")

Cause = Literal["parameters", "operators", "internal"]


def cause(code: str | None) -> Cause:
    """What an error code blames: the parameters or model given (`parameters`), an operator of the model the
    toolchain does not support (`operators`), or the toolchain itself, its environment or an unknown cause
    (`internal`: E19999, EZ9999, any other code, or none)."""
    if code is None:
        return "internal"
    if code.startswith(_PARAMETER_FAMILY) or code in _INVALID_INPUT_CODES:
        return "parameters"
    if code in _UNSUPPORTED_OPERATOR_CODES:
        return "operators"
    return "internal"


def parse(text: str) -> dict[str, Any]:
    """The verdict, errors with their solution and traceback, and warnings of one `atc` run; never raises."""
    run = _Run()
    for physical in text.splitlines():
        run.read(physical.strip())
    return {
        "ok": run.succeeded and not run.failed,
        "started": run.started,
        "errors": run.errors,
        "warnings": run.warnings,
    }


@dataclass
class _Run:
    started: bool = False
    succeeded: bool = False
    failed: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    # The error whose Solution/TraceBack/continuation lines come next, and whether its traceback has begun.
    open_error: dict[str, Any] | None = None
    in_traceback: bool = False

    def read(self, line: str) -> None:
        self.started |= _STARTED in line
        self.succeeded |= _SUCCEEDED in line
        self.failed |= _FAILED in line
        if _ends_error_block(line):
            self.open_error = None
        elif match := _CODED.match(line):
            self._read_coded(match[1], _PID_PREFIX.sub("", match[2], count=1))
        elif match := _UNCODED_ERROR.match(line):
            self._open({"code": None, "message": match[1], "solution": None, "traceback": []})
        elif self.open_error is not None:
            self._continue_error(self.open_error, line)

    def _read_coded(self, code: str, message: str) -> None:
        if code.startswith("W"):
            self.warnings.append({"code": code, "message": message})
            self.open_error = None
        else:
            self._open({"code": code, "message": message, "solution": None, "traceback": []})

    def _open(self, error: dict[str, Any]) -> None:
        self.errors.append(error)
        self.open_error = error
        self.in_traceback = False

    def _continue_error(self, error: dict[str, Any], line: str) -> None:
        if line == _TRACEBACK:
            self.in_traceback = True
        elif self.in_traceback:
            error["traceback"].append(line)
        elif match := _SOLUTION.match(line):
            error["solution"] = match[1]
        else:
            error["message"] = f"{error['message']} {line}".strip()


def _ends_error_block(line: str) -> bool:
    return not line or line == _PROGRESS or any(marker in line for marker in (_STARTED, _SUCCEEDED, _FAILED))


def version(output: str) -> str | None:
    """The CANN release in `atc --version`'s output; None when it names none (gflags prints the bare program name
    when no version string is set)."""
    for line in output.splitlines():
        if "version" in line.lower() and (match := _RELEASE.search(line)):
            return match[1]
    return None
