"""An order whose create answer was lost, and whose lookup the venue then refused with a
non-retryable error (10002: the request reached it outside its recv_window), stays in flight:
the working-order watchdog (which covers SUBMITTED orders) finds it at the venue, its fills come
over REST, and trading goes on. No order task dies unseen ("Task exception was never retrieved")."""

from __future__ import annotations

import asyncio
import gc
from decimal import Decimal
from pathlib import Path
from typing import Any

from bot.domain import Order, OrderRequest, OrderStatus, Side
from broker.bybit import BybitAccount, BybitHttp, PrivateStream, private_url
from broker.bybit_sim import SimServer
from broker.bybit_sim.private import account_of
from broker.bybit_sim.private_rest import PrivateFaults
from tests.live_helpers import KEY, SECRET, modules, sim_cfg, until


async def _noop() -> None:
    return None


class Venue:
    """The simulator and one BTCUSDT leg on it; the loop's unhandled task errors are collected."""

    def __init__(self, sim: SimServer, faults: PrivateFaults) -> None:
        self.sim, self.faults = sim, faults
        stream = PrivateStream(KEY, SECRET, url=private_url(sim.ws_url, True), testnet=True,
                               on_message=lambda _m: None, on_reconnect=_noop, check_every_s=0.05)
        self.account = BybitAccount(BybitHttp(KEY, SECRET, rest_url=sim.rest_url, timeout_s=2.0), stream=stream)
        self.broker = self.account.leg("BTCUSDT", "linear", stale_after_s=0.2)
        self.events: list[tuple[str, OrderStatus]] = []
        #: Exec ids of the fills that reached the listener (the journal's place).
        self.fills: list[str] = []
        self.broker.set_listener(lambda o, f: (self.events.append((o.client_order_id, o.status)),
                                               f is not None and self.fills.append(f.exec_id)))
        self.unhandled: list[dict[str, Any]] = []

    async def __aenter__(self) -> Venue:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: self.unhandled.append(ctx))
        await self.account.load()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.account.close()
        gc.collect()  # a failed task nobody awaited reports itself when it is collected
        await asyncio.sleep(0)
        asyncio.get_running_loop().set_exception_handler(None)

    def statuses(self, cid: str) -> list[OrderStatus]:
        return [s for c, s in self.events if c == cid]


async def test_lost_ack_then_refused_lookup_leaves_the_order_in_flight(btc_1h: Path) -> None:
    faults = PrivateFaults()
    async with SimServer(sim_cfg(btc_1h, 150.0, history=300), modules(faults=faults)) as sim, \
            Venue(sim, faults) as v:
        acct = account_of(sim.state)
        # The create is accepted but its answer lost; the lookup that follows is refused (10002);
        # and the stream's pushes about the order never arrive: only a later lookup can tell.
        faults.lost_ack_every, faults.late_lookups, faults.mute_pushes = 1, 1, True
        order = v.broker.submit(OrderRequest("lost-1", "BTCUSDT", Side.BUY, Decimal("0.01")), 0)
        assert order.status is OrderStatus.SUBMITTED
        await until(lambda: sim.state.stats["late_lookups"] == 1, "the refused lookup")
        await until(lambda: v.broker.known("lost-1").status is OrderStatus.FILLED, "the order resolved")
        assert sim.state.stats["lost_acks"] == 1 and sim.state.stats["pushes_lost"] >= 1
        assert OrderStatus.REJECTED not in v.statuses("lost-1")
        assert [o.link_id for o in acct.orders.values()] == ["lost-1"]  # looked up, never sent again
        assert v.broker.stats["rest_fills"] == 1 and v.broker.stats["lookups"] >= 2
        # Trading goes on, on a venue that behaves again.
        faults.lost_ack_every, faults.mute_pushes = 0, False
        v.broker.submit(OrderRequest("next-1", "BTCUSDT", Side.BUY, Decimal("0.01")), 0)
        await until(lambda: OrderStatus.FILLED in v.statuses("next-1"), "the next order filled")
        await until(lambda: not v.account.busy(), "nothing in flight")
        assert v.broker.position().qty == acct.books["BTCUSDT"].size == Decimal("0.02")
    assert v.unhandled == []


async def test_watchdog_resolves_submitted_orders_with_no_create_in_flight(btc_1h: Path) -> None:
    faults = PrivateFaults()
    async with SimServer(sim_cfg(btc_1h, 150.0, history=300), modules(faults=faults)) as sim, \
            Venue(sim, faults) as v:
        # Two orders the journal holds as sent (a restart): one the venue has, placed while its
        # pushes were lost, and one it never received.
        faults.mute_pushes = True
        await v.broker.http.create("linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.01",
                                   orderLinkId="had-1", positionIdx=0)
        for cid in ("had-1", "never-1"):
            req = OrderRequest(cid, "BTCUSDT", Side.BUY, Decimal("0.01"))
            v.broker.track(Order.from_request(req, 0).transition(OrderStatus.SUBMITTED, 0))
        await until(lambda: v.broker.known("had-1").status is OrderStatus.FILLED, "the order the venue has")
        await until(lambda: v.broker.known("never-1").status is OrderStatus.REJECTED, "the order it never got")
        assert "no such order" in (v.broker.known("never-1").reject_reason or "")
        assert v.broker.open_orders() == [] and v.broker.position().qty == Decimal("0.01")
    assert v.unhandled == []


async def test_an_order_the_venue_has_is_never_given_up_while_its_lookups_lag(btc_1h: Path) -> None:
    """Bybit's order lookup can answer empty just after a create. The answer to the create is
    lost; every lookup says "no such order" for a while; the resend is refused as a duplicate
    (110072: the venue has it). The order stays in flight instead of being rejected, and when it
    fills, the fill reaches the listener (the journal) and the books."""
    faults = PrivateFaults()
    async with SimServer(sim_cfg(btc_1h, 150.0, history=300), modules(faults=faults)) as sim, \
            Venue(sim, faults) as v:
        acct = account_of(sim.state)
        faults.lost_ack_every, faults.lookup_misses, faults.mute_pushes = 1, 12, True
        v.broker.submit(OrderRequest("lag-1", "BTCUSDT", Side.BUY, Decimal("0.01")), 0)
        await until(lambda: v.broker.known("lag-1").status.is_terminal, "the order resolved")
        assert v.broker.stats["duplicates_refused"] >= 1  # the venue said it has the order
        assert OrderStatus.REJECTED not in v.statuses("lag-1")
        assert v.broker.known("lag-1").status is OrderStatus.FILLED and sim.state.stats["lookup_misses"] == 12
        assert [o.link_id for o in acct.orders.values()] == ["lag-1"]
        assert v.fills == [e.exec_id for e in acct.execs]  # the fill reached the journal's listener
        assert v.broker.position().qty == acct.books["BTCUSDT"].size == Decimal("0.01")
    assert v.unhandled == []


async def test_a_fill_of_an_order_given_up_on_is_journaled_all_the_same(btc_1h: Path) -> None:
    """A restart's order the watchdog concluded the venue never got (two empty lookups) had in
    fact reached it and filled while its pushes were lost: the fill, found over REST at the next
    catch-up, is booked AND reaches the listener (the journal), and the order reads filled."""
    faults = PrivateFaults()
    async with SimServer(sim_cfg(btc_1h, 150.0, history=300), modules(faults=faults)) as sim, \
            Venue(sim, faults) as v:
        acct = account_of(sim.state)
        faults.mute_pushes, faults.lookup_misses = True, 1_000
        await v.broker.http.create("linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.01",
                                   orderLinkId="gone-1", positionIdx=0)
        v.broker.track(Order.from_request(OrderRequest("gone-1", "BTCUSDT", Side.BUY, Decimal("0.01")), 0)
                       .transition(OrderStatus.SUBMITTED, 0))
        await until(lambda: v.broker.known("gone-1").status is OrderStatus.REJECTED, "the watchdog giving up")
        await until(lambda: len(acct.execs) == 1, "the venue's fill")
        faults.mute_pushes, faults.lookup_misses = False, 0
        await v.account.catch_up()
        assert v.fills == [acct.execs[0].exec_id]
        assert v.broker.known("gone-1").status is OrderStatus.FILLED
        assert v.statuses("gone-1")[-1] is OrderStatus.FILLED
        assert v.broker.position().qty == acct.books["BTCUSDT"].size == Decimal("0.01")
    assert v.unhandled == []
