"""Running a vendor command-line tool from a stage, keeping its console output."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modeldeploy_jobs.stage import StageError


@dataclass(frozen=True)
class ToolRun:
    returncode: int
    output: str


def run_tool(command: Sequence[str], log: Path, cwd: Path) -> ToolRun:
    """Runs a tool to completion with stdout and stderr interleaved, as a console shows them, kept in `log`."""
    try:
        completed = subprocess.run(
            list(command), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            check=False,
        )
    except FileNotFoundError:
        raise StageError("ToolchainMissing", f"{command[0]} is not on PATH: this job image lacks the toolchain") from None
    log.write_text(f"$ {shlex.join(command)}\n{completed.stdout}")
    return ToolRun(completed.returncode, completed.stdout)
