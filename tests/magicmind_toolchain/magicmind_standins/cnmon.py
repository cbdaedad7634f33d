"""Test stand-in for `cnmon` (docs/magicmind.md §5) over the cards of `MAGICMIND_STANDIN_CARDS` (cards.py).

`cnmon` prints the driver 5.10.22 table of §5.1(d) (every card idle: 0 % util, 0 MiB used, no processes);
`cnmon info` prints a `Card <id>` line and indented `key : value` lines per card (§5.2: the fields Cambricon's
scripts read, `Product Name`, `Firmware`, `Driver`, `Compute Mode`, the PCI fields; the full key set of the real
tool is unrecorded); `-c <id>` limits it to one card, `-t` to the product fields. A card id that does not exist
prints `Card <id> not existed` and exits 1, as does any other command (with a usage line).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from magicmind_standins.cards import FIRMWARE, Card, installed_cards

DRIVER_VERSION = "v5.10.22"
USAGE = "Usage: cnmon [info [-c <card id>] [-t]]"
WIDE_RULE = "+" + "-" * 78 + "+"
CELL_RULE = "+" + "-" * 31 + "+" + "-" * 22 + "+" + "-" * 23 + "+"
HEADER = [
    WIDE_RULE,
    f"| CNMON {DRIVER_VERSION}{f'Driver {DRIVER_VERSION}':>{78 - 8 - len(DRIVER_VERSION)}} |",
    CELL_RULE,
    "| Card  VF  Name       Firmware |               Bus-Id | Util        Ecc-Error |",
    "| Fan   Temp      Pwr:Usage/Cap |         Memory-Usage | Mode     Compute-Mode |",
    "|" + "=" * 31 + "+" + "=" * 22 + "+" + "=" * 23 + "|",
]
PROCESSES = [
    WIDE_RULE,
    f"| {'Processes:':<77}|",
    "|  Card  MI  PID     Command Line                             MLU Memory Usage |",
    "|" + "=" * 78 + "|",
    f"|  {'No running processes found':<76}|",
    WIDE_RULE,
]
INFO_INDENT = "    "
INFO_KEY_WIDTH = 31
PCIE_SPEED = "16 GT/s"


def table(cards: Sequence[Card]) -> str:
    lines = [time.strftime("%a %b %e %H:%M:%S %Y"), *HEADER]
    for card in cards:
        spec = card.spec
        lines += [
            f"| {card.device_id:<6}{'/':<4}{spec.name:<13}{FIRMWARE:>6} |{card.bus_id:>21} | {'0%':<3}{0:>18} |",
            (f"|  {'0%':<5}{f'{card.temperature_c}C':<4}{spec.idle_power_w:>10} W/ {spec.power_cap_w:>3} W |"
             f"{0:>6} MiB/{spec.cnmon_memory_mib:>6} MiB | {'FULL':<8}{'Default':>13} |"),
            CELL_RULE,
        ]
    return "\n".join([*lines, "", *PROCESSES])


def info(cards: Sequence[Card], product_only: bool) -> str:
    lines: list[str] = []
    for card in cards:
        lines.append(f"Card {card.device_id}")
        lines += [f"{INFO_INDENT}{key:<{INFO_KEY_WIDTH}}: {value}" for key, value in _info_fields(card, product_only)]
    return "\n".join(lines)


def _info_fields(card: Card, product_only: bool) -> list[tuple[str, str]]:
    spec = card.spec
    product = [("Product Name", spec.name), ("Firmware", FIRMWARE), ("Driver", DRIVER_VERSION),
               ("Compute Mode", "Default")]
    if product_only:
        return product
    bus = card.bus_id.split(":")[1]
    return product + [
        ("Domain ID", "0"), ("Bus num", bus), ("Device", "0"), ("Function", "0"), ("Current Speed", PCIE_SPEED),
        ("Physical Memory Total", f"{spec.cnmon_memory_mib} MiB"), ("Physical Memory Used", "0 MiB"),
        ("Board Temperature", f"{card.temperature_c} C"), ("Power Usage", f"{spec.idle_power_w} W"),
        ("Power Cap", f"{spec.power_cap_w} W"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        cards = installed_cards()
    except ValueError as error:
        print(f"Error: {error}")
        return 1
    if not arguments:
        print(table(cards))
        return 0
    if arguments[0] != "info":
        print(f"Error: the command [{' '.join(arguments)}] is not supported by the cnmon stand-in.\n{USAGE}")
        return 1
    return _info_command(arguments[1:], cards)


def _info_command(options: list[str], cards: list[Card]) -> int:
    product_only = "-t" in options
    rest = [option for option in options if option != "-t"]
    if not rest:
        print(info(cards, product_only))
        return 0
    if len(rest) != 2 or rest[0] != "-c" or not rest[1].isdigit():
        print(f"Error: unknown options [{' '.join(options)}].\n{USAGE}")
        return 1
    card_id = int(rest[1])
    if card_id >= len(cards):
        print(f"Card {card_id} not existed")
        return 1
    print(info([cards[card_id]], product_only))
    return 0
