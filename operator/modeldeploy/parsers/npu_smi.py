"""Parse the output of `npu-smi info` and `npu-smi info -m`.

Formats handled (docs/ascend.md §4.1, chip name to soc version §4.2):

* the `npu-smi info` box table, with or without its `npu-smi X Version: Y` header; each chip is a pair of rows,
  `| NPU Name | Health | Power(W) Temp(C) Hugepages |` then `| Chip Device | Bus-Id | AICore(%) Memory [HBM] |`.
  Variants: 910B has no Device column and an extra `HBM-Usage(MB)` pair; A3 names its second column `Phy-ID`,
  which is not a device id; Power or Bus-Id may be `NA`/`-`; `used/ total` may lack a space; NPU ids can be
  large (2144, 32896) and are not the device ids ACL uses; trailing spaces after the last `|`;
* the process table `| NPU Chip | Process id | Process name | Process memory(MB) |`;
* the `npu-smi info -m` table `NPU ID  Chip ID  Chip Logic ID  Chip Name` (`Ascend 310P3`; `Mcu` rows skipped),
  whose Chip Logic ID is the device id; merged into the chips of an `info` table in the same text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Integers are bounded so that int() never hits Python's limit on digits converted from a string.
_INTEGER = r"\d{1,12}"
_NUMBER = re.compile(r"^\d{1,12}(?:\.\d{1,12})?$")

_VERSION = re.compile(r"npu-smi\s+\S+\s+Version:\s*([^\s|]+)")
_CHIP_HEADER = re.compile(r"^Chip(?:\s+(\S+))?$")
_NAME_ROW = re.compile(rf"^({_INTEGER})\s+(\S.*)$")
_CHIP_ROW = re.compile(rf"^({_INTEGER})(?:\s+({_INTEGER}))?$")
_PROCESS_ROW = re.compile(rf"^({_INTEGER})\s+({_INTEGER})$")
_USAGE = re.compile(rf"({_INTEGER})\s*/\s*({_INTEGER})")
_INTEGER_CELL = re.compile(rf"^{_INTEGER}$")
_LOGIC_ID_HEADER = re.compile(r"^NPU ID\s+Chip ID\s+Chip Logic ID\s+Chip Name$")
_LOGIC_ID_ROW = re.compile(rf"^({_INTEGER})\s+({_INTEGER})\s+({_INTEGER}|-)\s+(\S.*)$")


def parse(text: str) -> dict[str, Any]:
    """The driver version, chips and processes listed by `npu-smi info` or `npu-smi info -m`; never raises."""
    table = _Table()
    for physical in text.splitlines():
        table.read(physical.strip())
    return {"version": table.version, "chips": table.chips, "processes": table.processes}


@dataclass
class _Table:
    version: str | None = None
    chips: list[dict[str, Any]] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)
    # The first row of a chip pair (its match and cells), waiting for the second row.
    pending_name_row: tuple[re.Match[str], list[str]] | None = None
    # The heading of the second row's second column: a device id only when it is `Device` (or unknown).
    chip_column: str | None = None
    in_logic_id_table: bool = False

    def read(self, line: str) -> None:
        if match := _VERSION.search(line):
            self.version = match[1]
        elif line.startswith("|"):
            self._read_row([cell.strip() for cell in line.strip("|").split("|")])
        elif _LOGIC_ID_HEADER.match(line):
            self.in_logic_id_table = True
        elif self.in_logic_id_table and (match := _LOGIC_ID_ROW.match(line)):
            self._read_logic_id_row(match)

    def _read_row(self, cells: list[str]) -> None:
        if len(cells) == 4:
            self._read_process_row(cells)
        elif len(cells) != 3:
            return
        elif header := _CHIP_HEADER.match(cells[0]):
            self.chip_column = header[1]
        elif self.pending_name_row is not None and (chip_row := _CHIP_ROW.match(cells[0])):
            self.chips.append(self._chip(*self.pending_name_row, chip_row, cells))
            self.pending_name_row = None
        elif name_row := _NAME_ROW.match(cells[0]):
            # A chip pair's first row; the Ascend 310's name, `310`, is a number like the second row's chip id.
            self.pending_name_row = (name_row, cells)

    def _chip(
        self, name_row: re.Match[str], name_cells: list[str], chip_row: re.Match[str], chip_cells: list[str]
    ) -> dict[str, Any]:
        power, temperature = _tokens(name_cells[2].split(), 2)
        aicore, _, usage_text = chip_cells[2].partition(" ")
        usages = _USAGE.findall(usage_text)
        memory_used, memory_total = usages[0] if usages else (None, None)
        hbm_used, hbm_total = usages[1] if len(usages) > 1 else (None, None)
        device = chip_row[2] if self.chip_column in (None, "Device") else None
        return {
            **_identity(int(name_row[1]), int(chip_row[1]), name_row[2]),
            "health": _text(name_cells[1]),
            "powerW": _float(power),
            "temperatureC": _float(temperature),
            "device": _int(device),
            "busId": _text(chip_cells[1]),
            "aicorePercent": _float(aicore),
            "memoryUsedMb": _int(memory_used),
            "memoryTotalMb": _int(memory_total),
            "hbmUsedMb": _int(hbm_used),
            "hbmTotalMb": _int(hbm_total),
        }

    def _read_process_row(self, cells: list[str]) -> None:
        ids = _PROCESS_ROW.match(cells[0])
        pid, name, memory = cells[1:]
        if ids and _INTEGER_CELL.match(pid) and _INTEGER_CELL.match(memory):
            self.processes.append(
                {"npu": int(ids[1]), "chip": int(ids[2]), "pid": int(pid), "name": name, "memoryMb": int(memory)}
            )

    def _read_logic_id_row(self, match: re.Match[str]) -> None:
        npu, chip, logic_id, name = match.groups()
        if name == "Mcu":
            return
        key = (int(npu), int(chip))
        known = next((each for each in self.chips if (each["npu"], each["chip"]) == key), None)
        if known is None:
            self.chips.append({**_identity(*key, name), **dict.fromkeys(_STATUS_KEYS), "device": _int(logic_id)})
        elif known["device"] is None:
            known["device"] = _int(logic_id)


_STATUS_KEYS = (
    "health",
    "powerW",
    "temperatureC",
    "device",
    "busId",
    "aicorePercent",
    "memoryUsedMb",
    "memoryTotalMb",
    "hbmUsedMb",
    "hbmTotalMb",
)


def _identity(npu: int, chip: int, raw_name: str) -> dict[str, Any]:
    # `info` prints `310P3`, `info -m` prints `Ascend 310P3`, A3 prints `Ascend910`; ATC wants `Ascend310P3`.
    name = raw_name.replace(" ", "").removeprefix("Ascend")
    return {"npu": npu, "chip": chip, "name": name, "socVersion": f"Ascend{name}"}


def _tokens(tokens: list[str], count: int) -> list[str | None]:
    """The first `count` tokens, padded with None."""
    return [*tokens[:count], *[None] * (count - len(tokens))]


def _text(cell: str) -> str | None:
    return None if cell in ("", "NA", "-") else cell


def _float(cell: str | None) -> float | None:
    return float(cell) if cell is not None and _NUMBER.match(cell) else None


def _int(cell: str | None) -> int | None:
    return int(cell) if cell is not None and _INTEGER_CELL.match(cell) else None
