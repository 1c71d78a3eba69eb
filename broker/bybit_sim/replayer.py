"""The replay loop: walks every market's bars on the sim clock and publishes kline ticks.

Each bar gets ``updates_per_bar`` unconfirmed pushes at even fractions of its duration, then
the confirmed push at its close. A loop that wakes late publishes the missed ticks at once, in
order, so no confirmed bar is ever skipped. Listeners (an order matcher) see the same ticks.
"""

from __future__ import annotations

import asyncio

import structlog

from broker.bybit_sim.market import Market
from broker.bybit_sim.state import BarTick, SimState
from broker.bybit_sim.ws import WsHub

log = structlog.get_logger("bybit_sim.replayer")


class _Cursor:
    """Next tick of one market: bar ``i``, step ``k`` of ``steps`` (the last step confirms)."""

    def __init__(self, m: Market, steps: int, now: int) -> None:
        self.m = m
        self.steps = steps
        self.i = m.closed_count(now)
        self.k = 1
        while not self.done and self.due() <= now and self.k < steps:
            self.k += 1

    @property
    def done(self) -> bool:
        return self.i >= len(self.m)

    def due(self) -> int:
        return int(self.m.t[self.i]) + (self.m.tf_ms * self.k) // self.steps

    def advance(self) -> None:
        self.k += 1
        if self.k > self.steps:
            self.i += 1
            self.k = 1


async def run_replayer(state: SimState, hub: WsHub) -> None:
    steps = max(int(state.updates_per_bar), 0) + 1
    now = state.now_ms()
    cursors = [_Cursor(m, steps, now) for m in state.markets.values()]
    while True:
        live = [c for c in cursors if not c.done]
        if not live:
            log.info("replay_finished")
            return
        cur = min(live, key=lambda c: c.due())
        due = cur.due()
        while (wait := state.clock.seconds_until(due)) > 0:
            await asyncio.sleep(wait)
        m, i = cur.m, cur.i
        bar = m.bar(i, due if cur.k < steps else None)
        state.emit_tick(BarTick(m, i, bar, due))
        for channel, spot in (("linear", False), ("spot", True)):
            topic = f"kline.{m.interval}.{m.symbol}"
            hub.publish(channel, topic, {"topic": topic, "data": [m.ws_kline(bar, due, spot)], "ts": due,
                                         "type": "snapshot"})
        cur.advance()
        if bar.confirm:
            hub.confirmed += 1
            n = state.faults.ws_drop_every
            if n and hub.confirmed % n == 0:
                dropped = await hub.drop_all()
                if dropped:
                    log.info("ws_dropped", connections=dropped, bar=bar.start)
