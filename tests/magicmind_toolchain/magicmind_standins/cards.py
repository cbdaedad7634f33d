"""The emulated MLU cards: `MAGICMIND_STANDIN_CARDS`, a comma list of card names (default one `MLU370-S4`).

Card `i` of the list is MLU device `i` (what `mm.Device().id`, `mm_run --devices` and `cnmon info -c` count).
Figures per card (docs/magicmind.md): arch §7 (MLU370-* → mtp_372, MLU590 → mtp_592); mm_run's Compute
Capability 3.0, Total Memory Size 24576 MB and Cluster Number 6 (S4) / 8 (X4) §3.4/§5.2; cnmon's memory totals
(X4 23308 MiB, X8 20638 MiB with driver 5.10.22), power caps (X4 150 W, X8 250 W) and idle power (X4 27 W, X8
107 W) §5.1. Assumptions, unrecorded: MLU370-S4's cnmon figures (memory as the X4, 75 W cap, 20 W idle), X8's 8
clusters per chip, and every MLU590-H8 figure (the card only exists so tests can meet a non-mtp_372 device).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CARDS_ENV = "MAGICMIND_STANDIN_CARDS"
DEFAULT_CARD = "MLU370-S4"
FIRMWARE = "v1.1.6"
FIRST_BUS = 0x13
BUS_STEP = 3
IDLE_TEMPERATURE_C = 28
TEMPERATURE_STEP_C = 4


@dataclass(frozen=True)
class CardSpec:
    name: str
    arch: str
    compute_capability: str
    cluster_number: int
    memory_mb: int  # mm_run "Total Memory Size"
    cnmon_memory_mib: int  # cnmon "Memory-Usage" total
    power_cap_w: int
    idle_power_w: int


CARD_SPECS = {
    spec.name: spec
    for spec in (
        CardSpec("MLU370-S4", "mtp_372", "3.0", 6, 24576, 23308, 75, 20),
        CardSpec("MLU370-X4", "mtp_372", "3.0", 8, 24576, 23308, 150, 27),
        CardSpec("MLU370-X8", "mtp_372", "3.0", 8, 24576, 20638, 250, 107),
        CardSpec("MLU590-H8", "mtp_592", "5.0", 12, 81920, 81920, 350, 60),
    )
}


@dataclass(frozen=True)
class Card:
    device_id: int
    spec: CardSpec

    @property
    def bus_id(self) -> str:
        return f"0000:{FIRST_BUS + BUS_STEP * self.device_id:02X}:00.0"

    @property
    def temperature_c(self) -> int:
        return IDLE_TEMPERATURE_C + TEMPERATURE_STEP_C * self.device_id


def installed_cards() -> list[Card]:
    """The cards of `MAGICMIND_STANDIN_CARDS`; ValueError for a name the stand-in does not know."""
    names = [name.strip() for name in (os.environ.get(CARDS_ENV) or DEFAULT_CARD).split(",") if name.strip()]
    unknown = [name for name in names if name not in CARD_SPECS]
    if unknown:
        raise ValueError(f"{CARDS_ENV} names unknown cards {', '.join(unknown)}; known: {', '.join(CARD_SPECS)}")
    return [Card(device_id, CARD_SPECS[name]) for device_id, name in enumerate(names)]
