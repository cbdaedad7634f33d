"""Parse the output of Cambricon's `cnmon` (default table) and `cnmon info` (key/value form).

Formats handled (docs/magicmind.md §5.1 tables, §5.2 `cnmon info`, card name to MagicMind arch §7):

* the header `| CNMON v5.10.10      Driver v5.10.10 |` (4.20 prints no driver there) and an optional date line;
* the card table: each card is a pair of rows of three `|` cells,
  `| Card VF Name Firmware | <second> | Util Ecc-Error |` then
  `| Fan Temp Pwr:Usage/Cap | Memory-Usage | <third> |`, in the three layouts of the driver versions:
  4.20 (`Inited Driver` as the second cell, `vMemory-Usage` as the third), 5.10.10-13 (`Bus-Id`, `SR-IOV
  Compute-Mode`) and 5.10.22+ (`Bus-Id`, `Mode Compute-Mode`); the layout is told by each cell's content, so
  a table without its heading rows still parses; `N/A` is null; a card whose second row is missing keeps
  nulls for it;
* the process table `|  Card  VF|MI  PID  Command Line  MLU Memory Usage |` (rows `<card> <vf> <pid> <command>
  <n> MiB`; `No running processes found` otherwise);
* `cnmon info`: `Card N` sections of `Key : value` lines; `Product Name`, `Firmware`, `Compute Mode` describe the
  card, `Driver` the machine; several `Card N` sections give several cards.

Versions drop their leading `v` (`Driver v5.10.10` -> `5.10.10`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Integers are bounded so that int() never hits Python's limit on digits converted from a string.
_INTEGER = r"\d{1,12}"
_DECIMAL = r"\d{1,12}(?:\.\d{1,12})?"

_VERSION = re.compile(r"\bCNMON\s+v?(\d[\w.\-]*)")
_DRIVER = re.compile(r"\bDriver\s+v?(\d[\w.\-]*)")
_INTEGER_TOKEN = re.compile(rf"^{_INTEGER}$")
_VF_TOKEN = re.compile(rf"^(?:/|{_INTEGER})$")
_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]$")
_INITED_DRIVER = re.compile(r"^(?:On|Off|\S+)\s+v?(\d[\w.\-]*)$")
_UTIL = re.compile(rf"^({_DECIMAL})\s*%")
_TEMPERATURE = re.compile(rf"(?:^|\s)(-?{_DECIMAL})\s*C(?:\s|$)")
_POWER = re.compile(rf"(?:^|\s)({_DECIMAL}|N/A)\s*W\s*/\s*({_DECIMAL}|N/A)\s*W\b")
_MEMORY = re.compile(rf"^({_INTEGER})\s*MiB\s*/\s*({_INTEGER})\s*MiB$")
# Greedy groups: a lazy one followed by `\s+` would take quadratic time on long runs of spaces.
_PROCESS = re.compile(rf"^({_INTEGER})\s+(?:/|{_INTEGER})\s+({_INTEGER})\s+(.*\S)\s+({_INTEGER})\s*MiB$")
_INFO_CARD = re.compile(rf"^Card\s*:?\s*({_INTEGER})\b")
_INFO_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9 ./()_-]*):(.*)$")
_INFO_VERSION = re.compile(r"^v?(\d[\w.\-]*)$")
_ARCH = re.compile(r"^MLU(370|590|270|290)(?!\d)", re.IGNORECASE)

_INFO_KEYS = {"Firmware": "firmware", "Compute Mode": "computeMode"}
_ARCHS = {"370": "mtp_372", "590": "mtp_592", "270": "mtp_270", "290": "mtp_290"}


def parse(text: str) -> dict[str, Any]:
    """The cnmon and driver versions, cards and processes listed by `cnmon` or `cnmon info`; never raises."""
    table = _Table()
    for physical in text.splitlines():
        table.read(physical.strip())
    return {"version": table.version, "driver": table.driver, "cards": table.cards, "processes": table.processes}


@dataclass
class _Table:
    version: str | None = None
    driver: str | None = None
    cards: list[dict[str, Any]] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)
    # The card of the last first row, waiting for its second row.
    pending_card: dict[str, Any] | None = None
    # `cnmon info`: the number of the current `Card N` section, its card, and its fields read before `Product Name`.
    info_number: int | None = None
    info_card: dict[str, Any] | None = None
    info_fields: dict[str, Any] = field(default_factory=dict)

    def read(self, line: str) -> None:
        if line.startswith("|"):
            self._read_row([cell.strip() for cell in line.strip("|").split("|")])
        elif match := _INFO_CARD.match(line):
            self.info_number, self.info_card, self.info_fields = int(match[1]), None, {}
        elif match := _INFO_FIELD.match(line):
            self._read_info_field(match[1].strip(), match[2].strip())

    def _read_row(self, cells: list[str]) -> None:
        if len(cells) == 1:
            self._read_single_cell(cells[0])
        elif len(cells) != 3:
            return
        elif card := _first_row(cells):
            self.cards.append(card)
            self.pending_card = card
            if (driver := _INITED_DRIVER.match(cells[1])) and self.driver is None:
                self.driver = driver[1]
        elif self.pending_card is not None and _read_second_row(self.pending_card, cells):
            self.pending_card = None

    def _read_single_cell(self, cell: str) -> None:
        if match := _VERSION.search(cell):
            self.version = match[1]
            if driver := _DRIVER.search(cell):
                self.driver = driver[1]
        elif match := _PROCESS.match(cell):
            card, pid, command, memory = match.groups()
            self.processes.append({"card": int(card), "pid": int(pid), "command": command, "memoryMib": int(memory)})

    def _read_info_field(self, key: str, value: str) -> None:
        if key == "Driver":
            if match := _INFO_VERSION.match(value):
                self.driver = match[1]
        elif key == "Product Name" and value:
            if self.info_card is not None:
                # A second product in the same section: a card without a `Card N` line of its own.
                self.info_number, self.info_fields = None, {}
            number = self.info_number if self.info_number is not None else len(self.cards)
            self.info_card = _card(number, value) | self.info_fields
            self.cards.append(self.info_card)
        elif key in _INFO_KEYS:
            # Before `Product Name` the section has no card yet: keep the value until it has.
            target = self.info_card if self.info_card is not None else self.info_fields
            target[_INFO_KEYS[key]] = _version(value) if key == "Firmware" else _text(value)


def _card(number: int, name: str | None) -> dict[str, Any]:
    return {
        "card": number,
        "name": name,
        "firmware": None,
        "busId": None,
        "utilPercent": None,
        "temperatureC": None,
        "powerW": None,
        "powerCapW": None,
        "memoryUsedMib": None,
        "memoryTotalMib": None,
        "computeMode": None,
        "arch": _arch(name),
    }


def _first_row(cells: list[str]) -> dict[str, Any] | None:
    """`| 0  /  MLU370-X4  v1.1.6 | <Bus-Id or Inited Driver> | 0%  N/A |` as a card; None for any other row."""
    tokens = cells[0].split()
    if len(tokens) < 2 or not _INTEGER_TOKEN.match(tokens[0]):
        return None
    rest = tokens[1:]
    if len(rest) > 1 and _VF_TOKEN.match(rest[0]):
        rest = rest[1:]
    if _VF_TOKEN.match(rest[0]):
        return None
    card = _card(int(tokens[0]), rest[0])
    card["firmware"] = _version(rest[1]) if len(rest) > 1 else None
    card["busId"] = cells[1] if _BUS_ID.match(cells[1]) else None
    if util := _UTIL.match(cells[2]):
        card["utilPercent"] = float(util[1])
    return card


def _read_second_row(card: dict[str, Any], cells: list[str]) -> bool:
    """Fill `card` from `|  0%  32C  30 W/ 150 W |  0 MiB/ 23308 MiB | <third> |`; False for any other row."""
    memory = _MEMORY.match(cells[1])
    temperature = _TEMPERATURE.search(cells[0])
    power = _POWER.search(cells[0])
    if not (memory or temperature or power):
        return False
    if memory:
        card["memoryUsedMib"], card["memoryTotalMib"] = int(memory[1]), int(memory[2])
    if temperature:
        card["temperatureC"] = float(temperature[1])
    if power:
        card["powerW"], card["powerCapW"] = _float(power[1]), _float(power[2])
    # 4.20 shows `vMemory-Usage` there; later drivers `<SR-IOV or Mode> <Compute-Mode>`.
    third = cells[2].split()
    if "MiB" not in cells[2] and len(third) >= 2:
        card["computeMode"] = _text(third[-1])
    return True


def _arch(name: str | None) -> str | None:
    """The MagicMind arch for a card name: MLU370-X4 -> mtp_372 (§7); None when unknown."""
    match = _ARCH.match(name) if name is not None else None
    return _ARCHS[match[1]] if match else None


def _version(text: str) -> str | None:
    value = _text(text)
    return value[1:] if value is not None and len(value) > 1 and value[0] == "v" and value[1].isdigit() else value


def _text(text: str) -> str | None:
    return None if text in ("", "N/A", "NA", "-") else text


def _float(text: str) -> float | None:
    return None if text == "N/A" else float(text)
