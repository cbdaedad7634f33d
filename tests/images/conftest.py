"""The images the tests run, built once per session by tests/images/build.sh when their inputs changed (a failed
build fails the tests that need it); each image's size goes into the session's summary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build.sh"
BUILD_TIMEOUT = 3600

_built: list[str] = []


@pytest.fixture(scope="session")
def built_images() -> dict[str, str]:
    """Reference -> "size, built in Ns" or "size, cached", for every image build.sh makes."""
    result = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
                            env={**os.environ, "PYTHON": sys.executable})
    if result.returncode != 0:
        pytest.fail(f"tests/images/build.sh failed ({result.returncode}):\n{result.stderr[-4000:]}", pytrace=False)
    rows = [line.split("\t") for line in result.stdout.splitlines() if line.count("\t") == 2]
    _built.extend(f"{reference}: {size}, {how}" for reference, size, how in rows)
    return {reference: f"{size}, {how}" for reference, size, how in rows}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _built:
        terminalreporter.write_line(f"image {line}")
