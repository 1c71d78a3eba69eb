"""State shared by every simulator module: clock, markets, faults, the WebSocket hub, listeners.

Modules (the public market data here; orders, positions and the private streams later) are
registered on the aiohttp app and all read this one object. An order matcher subscribes with
:meth:`SimState.add_bar_listener` and sees every kline tick, partial and confirmed, in order.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broker.bybit_sim.clock import SimClock
from broker.bybit_sim.faults import FaultConfig
from broker.bybit_sim.market import Market, PartialBar


@dataclass(frozen=True, slots=True)
class BarTick:
    """A kline update the replayer publishes: bar ``index`` of ``market`` at sim time ``now_ms``."""

    market: Market
    index: int
    bar: PartialBar
    now_ms: int


BarListener = Callable[[BarTick], None]


@dataclass
class SimState:
    clock: SimClock
    markets: dict[str, Market]
    faults: FaultConfig = field(default_factory=FaultConfig)
    #: Intermediate (unconfirmed) kline pushes per bar before the confirmed one.
    updates_per_bar: int = 2
    #: Free slots for later modules (e.g. ``extensions["orders"]`` = the private order book).
    extensions: dict[str, Any] = field(default_factory=dict)
    #: What the simulator did (requests, injected faults, pushes): tests assert on it.
    stats: Counter[str] = field(default_factory=Counter)
    _listeners: list[BarListener] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.faults.seed)

    def market(self, symbol: str | None) -> Market | None:
        return self.markets.get((symbol or "").upper())

    def add_bar_listener(self, fn: BarListener) -> None:
        self._listeners.append(fn)

    def emit_tick(self, tick: BarTick) -> None:
        for fn in list(self._listeners):
            fn(tick)

    def now_ms(self) -> int:
        return self.clock.now_ms()
