"""Test-only stand-ins for the Cambricon MagicMind toolchain (never shipped).

The MagicMind Python API (`import magicmind.python.runtime as mm`), `mm_run` and `cnmon` are emulated on the CPU
with onnxruntime so the pipeline can be tested without an MLU. Names, call sequences, config keys, flags and
console layouts follow docs/magicmind.md (§1 build API, §3 mm_run, §4 runtime API, §5 cnmon,
§7 archs); where docs/magicmind.md has no record the choice is documented where it is made.

This package holds what more than one stand-in needs: the environment variables for the emulated machine, the
MagicMind-style log line, the data type table (dtypes.py), the emulated cards (cards.py), the serialized model
format (mm_file.py) and the engine that runs a serialized model with onnxruntime (engine.py).
"""

from __future__ import annotations

import os
import sys
from datetime import datetime

VERSION_ENV = "MAGICMIND_STANDIN_VERSION"
DEFAULT_VERSION = "1.7.0"


def magicmind_version() -> tuple[int, int, int]:
    """The emulated MagicMind release, `MAGICMIND_STANDIN_VERSION` (default 1.7.0), as (major, minor, patch)."""
    text = os.environ.get(VERSION_ENV) or DEFAULT_VERSION
    parts = text.split(".")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise ValueError(f"{VERSION_ENV}={text!r} is not a version such as 1.7.0 or 0.14.0")
    major, minor, patch = (int(part) for part in parts)
    return major, minor, patch


def log(level: str, source: str, message: str) -> None:
    """A MagicMind log line on stderr: `2022-10-11 02:34:10.284173: WARNING: <source>] <message>` (§3.4 e, §3.5)."""
    print(f"{timestamp()}: {level}: {source}] {message}", file=sys.stderr, flush=True)


def timestamp() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")
