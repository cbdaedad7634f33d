"""`mm.Status` and `mm.Code` (docs/magicmind.md §1.5: `mm.Status()`, `mm.Status(mm.Code.OUT_OF_RANGE, msg)`).

Only OK and OUT_OF_RANGE are seen in Cambricon's samples; the other codes are the absl-style set such Status
types carry [assumption]. The stand-ins return INVALID_ARGUMENT for bad arguments, FAILED_PRECONDITION for calls
made in the wrong state and UNIMPLEMENTED for what they do not emulate.
"""

from __future__ import annotations

import enum


class Code(enum.Enum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class Status:
    """The result of a MagicMind call: `Status()` is success, `Status(code, message)` carries an error."""

    def __init__(self, code: Code = Code.OK, message: str = "") -> None:
        self._code = code
        self._message = message

    def ok(self) -> bool:
        return self._code is Code.OK

    def code(self) -> Code:
        return self._code

    def message(self) -> str:
        return self._message

    def __str__(self) -> str:
        return "OK" if self.ok() else f"{self._code.name}: {self._message}"

    def __repr__(self) -> str:
        return f"Status({self})"


def invalid(message: str) -> Status:
    return Status(Code.INVALID_ARGUMENT, message)


def precondition(message: str) -> Status:
    return Status(Code.FAILED_PRECONDITION, message)
