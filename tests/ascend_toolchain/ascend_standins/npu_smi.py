"""Test stand-in for `npu-smi`: `npu-smi info` and `npu-smi info -m` in the 310P3 layout of docs/ascend.md §4.1.

The chips come from `ASCEND_STANDIN_CHIPS` (comma-separated names such as `310P3,310P3`), else one
`ASCEND_STANDIN_CHIP`, else one `310P3`; the device id of a chip is its index. `ASCEND_STANDIN_CHIPS_PER_NPU`
(default 1) chips in a row share one NPU id, as the chips of one card do (an Atlas 300I Duo's two, an Atlas 300I's
four): NPU id = index // that, chip id = index % that. Chips are idle, with the fixture's temperature and memory
figures. The header's versions are `ASCEND_STANDIN_DRIVER_VERSION`
(default 24.1.0.1, the fixture's). Other subcommands print a usage error and exit 1.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence

from ascend_standins import driver_release

CHIPS_ENV = "ASCEND_STANDIN_CHIPS"
CHIP_ENV = "ASCEND_STANDIN_CHIP"
PER_NPU_ENV = "ASCEND_STANDIN_CHIPS_PER_NPU"
DEFAULT_CHIP = "310P3"
USAGE = "Usage: npu-smi info [-m]"

FULL_RULE = "+" + "-" * 104 + "+"
CELL_RULE = "+" + "-" * 31 + "+" + "-" * 17 + "+" + "-" * 54 + "+"
DOUBLE_RULE = "+" + "=" * 31 + "+" + "=" * 17 + "+" + "=" * 54 + "+"
COLUMNS = [
    CELL_RULE,
    "| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |",
    "| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |",
    DOUBLE_RULE,
]
PROCESS_HEADER = [
    CELL_RULE,
    "| NPU     Chip                  | Process id      | Process name             | Process memory(MB)        |",
    DOUBLE_RULE,
]
TEMPERATURE_C = 54
MEMORY_USED_MB = 1904
MEMORY_TOTAL_MB = 44280


def chips() -> list[str]:
    listed = os.environ.get(CHIPS_ENV)
    if listed:
        return [chip.strip() for chip in listed.split(",") if chip.strip()]
    return [os.environ.get(CHIP_ENV) or DEFAULT_CHIP]


def chips_per_npu() -> int:
    return max(1, int(os.environ.get(PER_NPU_ENV) or 1))


def version_line(version: str) -> str:
    """The header's `npu-smi <version>  Version: <version>` line, in the 104-character box."""
    return f"| {f'npu-smi {version}':<49}{f'Version: {version}':<54}|"


def info_table(chip_names: Sequence[str]) -> str:
    per_npu = chips_per_npu()
    lines = [FULL_RULE, version_line(driver_release()), *COLUMNS]
    for device, name in enumerate(chip_names):
        npu, chip = divmod(device, per_npu)
        last_of_npu = chip == per_npu - 1 or device == len(chip_names) - 1
        lines += [_npu_row(npu, name), _chip_row(npu, chip, device), DOUBLE_RULE if last_of_npu else CELL_RULE]
    lines += PROCESS_HEADER
    for npu in range(math.ceil(len(chip_names) / per_npu)):
        lines += [f"| {f'No running processes found in NPU {npu}':<103}|", DOUBLE_RULE]
    return "\n".join(lines)


def _npu_row(npu: int, name: str) -> str:
    hugepages = f"{0:<6}/ {0:<14}"
    return f"| {npu:<8}{name:<22}| {'OK':<16}| {'NA':<13}{TEMPERATURE_C:<18}{hugepages}|"


def _chip_row(npu: int, chip: int, device: int) -> str:
    bus_id = f"0000:{npu + 1:02X}:00.0"  # the chips of one card share its bus id, as in the Duo fixture
    memory = f"{MEMORY_USED_MB:<5}/ {MEMORY_TOTAL_MB}"
    return f"| {chip:<8}{device:<22}| {bus_id:<16}| {0:<13}{memory:<40}|"


def mapping_table(chip_names: Sequence[str]) -> str:
    per_npu = chips_per_npu()
    rows = [("NPU ID", "Chip ID", "Chip Logic ID", "Chip Name")]
    for device, name in enumerate(chip_names):
        npu, chip = divmod(device, per_npu)
        rows.append((str(npu), str(chip), str(device), f"Ascend {name}"))
        if chip == per_npu - 1 or device == len(chip_names) - 1:
            rows.append((str(npu), str(chip + 1), "-", "Mcu"))
    return "\n".join(f"{a:<13}{b:<14}{c:<20}{d}" for a, b, c, d in rows)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments == ["info"]:
        print(info_table(chips()))
        return 0
    if arguments == ["info", "-m"]:
        print(mapping_table(chips()))
        return 0
    print(f"Error: the command [{' '.join(arguments)}] is not supported by the npu-smi stand-in.\n{USAGE}")
    return 1
