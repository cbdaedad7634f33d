"""`mm.System`, `mm.Device` and the queue `Device.create_queue()` returns (docs/magicmind.md §1.5, §4.1).

The devices are the emulated cards of `MAGICMIND_STANDIN_CARDS` (magicmind_standins/cards.py). As with CNRT,
the active device belongs to the calling thread; it is only active while an `mm.System()` context is open.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Self

from magicmind_standins.cards import Card, installed_cards

from magicmind.python.runtime._status import Status, invalid, precondition

_open_systems = 0
_open_systems_lock = threading.Lock()
_active = threading.local()


def active_card() -> Card | None:
    """The card the calling thread activated inside an open `mm.System()`, if any."""
    with _open_systems_lock:
        if _open_systems == 0:
            return None
    card: Card | None = getattr(_active, "card", None)
    return card


class System:
    """`with mm.System() as system:` opens the MLU runtime for the devices of `MAGICMIND_STANDIN_CARDS`."""

    def __enter__(self) -> Self:
        global _open_systems
        with _open_systems_lock:
            _open_systems += 1
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        global _open_systems
        with _open_systems_lock:
            _open_systems -= 1
        _active.card = None

    def device_count(self) -> int:
        return len(installed_cards())


class Queue:
    """A device queue; the stand-in computes inside `enqueue`, so `sync` has nothing left to wait for."""

    def sync(self) -> Status:
        return Status()


class Device:
    """`dev = mm.Device(); dev.id = n; dev.active()` makes card n the calling thread's device."""

    def __init__(self) -> None:
        self.id = 0

    def active(self) -> Status:
        with _open_systems_lock:
            if _open_systems == 0:
                return precondition("no mm.System() is open; activate devices inside `with mm.System():`")
        cards = installed_cards()
        if not 0 <= self.id < len(cards):
            return invalid(f"MLU device {self.id} does not exist; there are {len(cards)} devices")
        _active.card = cards[self.id]
        return Status()

    def create_queue(self) -> Queue | None:
        """A queue on this device; None unless it is the calling thread's active device."""
        card = active_card()
        if card is None or card.device_id != self.id:
            return None
        return Queue()
