"""A cached re-run of the quickstart against its first run, from a fresh store.

Run: python bench/cached_rerun.py
Times `modeldeploy run examples/quickstart.yaml` twice on one new store: the first run does
every stage, the second finds every manifest and only reads the results. Target: under 10%.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart.yaml"


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=cwd, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        command = [str(Path(sys.executable).with_name("modeldeploy")), "run", str(QUICKSTART),
                   "--store", str(directory / "store")]
        first = timed(command, directory)
        second = timed(command, directory)
    print(f"quickstart first run: {first:.1f} s; cached re-run: {second:.2f} s; "
          f"ratio {second / first:.1%} (target under 10%)")


if __name__ == "__main__":
    main()
