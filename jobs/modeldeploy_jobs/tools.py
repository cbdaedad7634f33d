"""Running a vendor command-line tool from a stage, keeping its console output."""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modeldeploy.children import die_with_parent

from modeldeploy_jobs.stage import StageError, StageReason

_ERROR_CODE = re.compile(r"^E[A-Z]?\d{4,5}\b")  # Ascend's E10001, EZ9999, ...


@dataclass(frozen=True)
class ToolRun:
    returncode: int
    output: str


def run_tool(command: Sequence[str], log: Path, cwd: Path) -> ToolRun:
    """Runs a tool to completion with stdout and stderr interleaved, as a console shows them, kept in `log`."""
    try:
        completed = subprocess.run(
            list(command), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            check=False, preexec_fn=die_with_parent,
        )
    except FileNotFoundError:
        raise StageError(StageReason.TOOLCHAIN_MISSING,
                         f"{command[0]} is not on PATH: this job image lacks the toolchain") from None
    log.write_text(f"$ {shlex.join(command)}\n{completed.stdout}")
    return ToolRun(completed.returncode, completed.stdout)


def last_error(output: str) -> str:
    """The last line of a tool's output that reports an error, else its last line: what a failure message quotes."""
    lines = [line.strip() for line in output.splitlines()]
    errors = [line for line in lines if "ERROR" in line or "Error" in line or _ERROR_CODE.match(line)]
    return (errors or [line for line in lines if line] or ["no output"])[-1]
