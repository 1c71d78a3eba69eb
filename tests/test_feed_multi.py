"""One feed, several markets: one public WebSocket and one subscribe carry every kline topic; each
market's bars arrive once and in order; bars that close together leave in the markets' list order
(held until every due market delivered, or ``align_s``), also when pushes are dropped, duplicated
and reordered. The merge rules are proved on a fake clock; the wire behaviour on the simulator."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from bot.domain import Candle
from bot.feeds.align import CloseAligner, market_specs
from bot.feeds.bybit import BybitFeed
from bot.feeds.replay import load_candles
from broker.bybit_sim import FaultConfig, SimConfig, SimServer

HOUR = 3_600_000
T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC, a multiple of every timeframe up to 1d
# ETH first: the simulator pushes in data-file order (BTC, then ETH), so list order is enforced.
MARKETS = [("ETHUSDT", "1h"), ("BTCUSDT", "1h")]


# -- the merge, on a fake clock ------------------------------------------------------------------------
class Merge:
    """The aligner as the feed drives it: take a bar (its market's last open moves), then ask."""

    def __init__(self, markets: list[tuple[str, str]], align_s: float = 2.0) -> None:
        self.specs = {m.symbol: m for m in market_specs(markets)}
        self.last: dict[str, int | None] = {s: T0 - HOUR for s in self.specs}
        self.now = 0.0
        self.aligner = CloseAligner(list(self.specs.values()), self.last, align_s, clock=lambda: self.now)

    def take(self, symbol: str, open_time: int) -> list[tuple[str, int]]:
        m = self.specs[symbol]
        self.last[symbol] = open_time
        self.aligner.add(m, Candle(symbol, m.timeframe, open_time, 1.0, 1.0, 1.0, 1.0, 1.0))
        return self.ready()

    def ready(self) -> list[tuple[str, int]]:
        return [(c.symbol, c.open_time) for c in self.aligner.ready()]


def test_bars_closing_together_leave_in_list_order_once_all_have_arrived() -> None:
    m = Merge([("ETHUSDT", "1h"), ("BTCUSDT", "1h")])
    assert m.take("BTCUSDT", T0) == []  # ETH is due at the same close: held
    assert m.aligner.deadline() == 2.0
    assert m.take("ETHUSDT", T0) == [("ETHUSDT", T0), ("BTCUSDT", T0)]
    assert m.aligner.deadline() is None


def test_a_market_that_is_late_does_not_hold_the_others_past_align_s() -> None:
    m = Merge([("ETHUSDT", "1h"), ("BTCUSDT", "1h")], align_s=2.0)
    assert m.take("BTCUSDT", T0) == []
    m.now = 1.9
    assert m.ready() == []
    m.now = 2.0
    assert m.ready() == [("BTCUSDT", T0)]
    m.now = 5.0
    assert m.take("ETHUSDT", T0) == [("ETHUSDT", T0)]  # the late one goes out when it arrives


def test_a_later_bar_waits_behind_an_incomplete_earlier_close() -> None:
    m = Merge([("ETHUSDT", "1h"), ("BTCUSDT", "1h")])
    assert m.take("BTCUSDT", T0) == []
    assert m.take("BTCUSDT", T0 + HOUR) == []
    assert m.take("ETHUSDT", T0) == [("ETHUSDT", T0), ("BTCUSDT", T0)]
    assert m.take("ETHUSDT", T0 + HOUR) == [("ETHUSDT", T0 + HOUR), ("BTCUSDT", T0 + HOUR)]


def test_only_markets_due_at_a_close_time_are_waited_for() -> None:
    m = Merge([("BTCUSDT", "4h"), ("ETHUSDT", "1h")])
    m.last["BTCUSDT"] = T0 - 4 * HOUR
    assert m.take("ETHUSDT", T0) == [("ETHUSDT", T0)]  # closes 01:00: no 4h bar closes then
    for h in (1, 2):
        assert m.take("ETHUSDT", T0 + h * HOUR) == [("ETHUSDT", T0 + h * HOUR)]
    assert m.take("ETHUSDT", T0 + 3 * HOUR) == []  # closes 04:00 with the 4h bar
    assert m.take("BTCUSDT", T0) == [("BTCUSDT", T0), ("ETHUSDT", T0 + 3 * HOUR)]


def test_catch_up_batches_merge_by_close_time_then_list_order() -> None:
    m = Merge([("ETHUSDT", "1h"), ("BTCUSDT", "1h")])
    m.last["ETHUSDT"] = T0 - 2 * HOUR
    for t in (T0 - HOUR, T0, T0 + HOUR):
        m.last["ETHUSDT"] = t
        m.aligner.add(m.specs["ETHUSDT"], Candle("ETHUSDT", "1h", t, 1, 1, 1, 1, 1))
    assert m.take("BTCUSDT", T0) == [("ETHUSDT", T0 - HOUR), ("ETHUSDT", T0), ("BTCUSDT", T0)]
    assert m.take("BTCUSDT", T0 + HOUR) == [("ETHUSDT", T0 + HOUR), ("BTCUSDT", T0 + HOUR)]


def test_one_market_never_waits() -> None:
    m = Merge([("BTCUSDT", "1h")], align_s=3600.0)
    assert m.take("BTCUSDT", T0) == [("BTCUSDT", T0)]
    assert m.take("BTCUSDT", T0 + HOUR) == [("BTCUSDT", T0 + HOUR)]
    assert m.aligner.deadline() is None


async def test_a_symbol_listed_twice_or_missing_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        BybitFeed([("BTCUSDT", "1h"), ("BTCUSDT", "4h")])
    feed = BybitFeed(MARKETS)
    try:
        with pytest.raises(ValueError, match="BTCUSDT"):
            await anext(feed.stream({"ETHUSDT": T0}))
        with pytest.raises(ValueError, match="SOLUSDT"):
            await feed.warmup("SOLUSDT", 10, T0)
    finally:
        await feed.close()


# -- the wire, on the simulator ------------------------------------------------------------------------
def _sim(data_dir: Path, faults: FaultConfig | None = None, updates: int = 1) -> tuple[SimConfig, int]:
    btc = data_dir / "bybit_BTCUSDT_1h.csv.gz"
    start = int(load_candles(btc, symbol="BTCUSDT", timeframe="1h", bar_ms=HOUR).time[3000])
    return SimConfig(data=[str(btc), str(data_dir / "bybit_ETHUSDT_1h.csv.gz")], bar_ms=25.0,
                     updates_per_bar=updates, start=start, faults=faults or FaultConfig()), start


def _spy(sim: SimServer, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[list[str]]]:
    """WebSocket upgrades (paths) and subscribe requests (args) as the simulator sees them."""
    upgrades: list[str] = []
    subscribes: list[list[str]] = []
    serve, subscribe = sim.hub.serve, sim.hub.op("subscribe")

    async def counting_serve(request: Any, channel: str) -> Any:
        upgrades.append(request.path)
        return await serve(request, channel)

    async def recording_subscribe(conn: Any, req: dict[str, Any]) -> None:
        subscribes.append(list(req.get("args") or []))
        await subscribe(conn, req)

    monkeypatch.setattr(sim.hub, "serve", counting_serve)
    sim.hub.add_op("subscribe", recording_subscribe)
    return upgrades, subscribes


async def _collect(feed: BybitFeed, after: dict[str, int], done: Any) -> list[Candle]:
    """Stream until ``done(seen)``; a deadline for the condition, not a timing."""
    seen: list[Candle] = []

    async def run() -> None:
        async with contextlib.aclosing(feed.stream(after)) as stream:
            async for c in stream:
                seen.append(c)
                if done(seen):
                    return

    await asyncio.wait_for(run(), timeout=120)
    return seen


def _check_order(seen: list[Candle], after: dict[str, int]) -> None:
    """Each market's bars once and contiguous (the files have no holes); same-close bars in list order."""
    for symbol, _ in MARKETS:
        mine = [c.open_time for c in seen if c.symbol == symbol]
        assert mine == list(range(after[symbol] + HOUR, after[symbol] + HOUR * (len(mine) + 1), HOUR)), symbol
    index = {s: i for i, (s, _) in enumerate(MARKETS)}
    keys = [(c.open_time + HOUR, index[c.symbol]) for c in seen]
    assert keys == sorted(keys)


def _upto(start: int, n: int) -> Any:
    return lambda seen: all(any(c.symbol == s and c.open_time >= start + n * HOUR for c in seen) for s, _ in MARKETS)


async def test_two_markets_share_one_connection_and_one_subscribe(data_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, start = _sim(data_dir)
    async with SimServer(cfg) as sim:
        upgrades, subscribes = _spy(sim, monkeypatch)
        feed = BybitFeed(MARKETS, rest_url=sim.rest_url, ws_url=sim.ws_url, align_s=30.0)
        # Different starting points: ETH's catch-up over REST is one bar longer than BTC's.
        after = {"ETHUSDT": start - 3 * HOUR, "BTCUSDT": start - 2 * HOUR}
        try:
            seen = await _collect(feed, after, _upto(start, 30))
        finally:
            await feed.close()
    assert upgrades == ["/v5/public/linear"] and feed.stats["connects"] == 1
    assert subscribes == [["kline.60.ETHUSDT", "kline.60.BTCUSDT"]]
    _check_order(seen, after)
    # BTC's push reached the feed first every time, ETH still left first.
    live = [t for (s, t) in feed.arrivals if s == "ETHUSDT" and ("BTCUSDT", t) in feed.arrivals]
    assert len(live) >= 10
    assert all(feed.arrivals[("BTCUSDT", t)] < feed.arrivals[("ETHUSDT", t)] for t in live)


async def test_dropped_duplicated_reordered_pushes_still_give_each_bar_once(data_dir: Path) -> None:
    faults = FaultConfig(ws_drop_every=11, ws_duplicate_rate=0.3, ws_reorder_rate=0.3, seed=7)
    # No partial pushes: a held-back push is a confirmed bar, so bars really arrive out of order.
    cfg, start = _sim(data_dir, faults, updates=0)
    events: list[tuple[str, dict[str, Any]]] = []
    async with SimServer(cfg) as sim:
        feed = BybitFeed(MARKETS, rest_url=sim.rest_url, ws_url=sim.ws_url, backoff_s=0.02, backoff_max_s=0.2,
                         align_s=30.0, on_event=lambda kind, payload: events.append((kind, payload)))
        after = {s: start - 2 * HOUR for s, _ in MARKETS}

        def repaired(seen: list[Candle]) -> bool:
            st = sim.state.stats
            return (feed.stats["connects"] >= 3 and feed.stats["duplicates"] >= 3 and st["ws_reordered"] >= 3
                    and st["ws_duplicated"] >= 3 and _upto(start, 20)(seen))

        try:
            seen = await _collect(feed, after, repaired)
        finally:
            await feed.close()
    _check_order(seen, after)
    assert feed.stats["backfilled"] >= 1
    reconnects = [p for kind, p in events if kind == "feed_reconnect"]
    assert reconnects and all(p["symbol"] == "ETHUSDT,BTCUSDT" for p in reconnects)
    assert "feed_gap" not in {kind for kind, _ in events}


async def test_a_silent_feed_is_stale_per_market_and_names_each(data_dir: Path) -> None:
    cfg, start = _sim(data_dir, FaultConfig(ws_mute=True))
    events: list[tuple[str, dict[str, Any]]] = []
    async with SimServer(cfg) as sim:
        feed = BybitFeed(MARKETS, rest_url=sim.rest_url, ws_url=sim.ws_url, backoff_s=0.02, backoff_max_s=0.2,
                         on_event=lambda kind, payload: events.append((kind, payload)))
        after = {s: start - 2 * HOUR for s, _ in MARKETS}

        async def watchdog() -> None:
            while not await feed.check_stale():
                await asyncio.sleep(0.05)

        consumer = asyncio.create_task(_collect(feed, after, lambda _seen: False))
        try:
            await asyncio.wait_for(watchdog(), timeout=120)
        finally:
            await feed.close()
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await consumer
    stale = [p for kind, p in events if kind == "feed_stale"]
    assert {p["symbol"] for p in stale} == {"ETHUSDT", "BTCUSDT"}
    assert all(p["behind_ms"] >= 2 * HOUR for p in stale) and feed.stats["stale"] == 1
