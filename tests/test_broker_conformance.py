"""One broker conformance suite, passed by the simulated broker (backtest/paper) and by the
Bybit broker (pybit REST + private stream) against the local simulator. It states the
contract the engine relies on: submit is non-blocking and returns the order not yet final;
invalid or duplicate orders come back REJECTED; acks, fills and cancels arrive through the
listener; books (position, cash, open orders) follow the fills exactly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.app import instrument_from_config
from bot.config import load_config
from bot.domain import Category, Fill, Instrument, Order, OrderRequest, OrderStatus, OrderType, Side
from bot.feeds.replay import load_candles
from broker.base import Broker
from broker.bybit import BybitAccount, BybitHttp, PrivateStream, private_url
from broker.bybit_sim import SimServer
from broker.simulated import SimulatedBroker
from tests.live_helpers import KEY, SECRET, modules, sim_cfg

FEE = 0.001


class Harness:
    """Drives one broker: time moves by whole bars; events are what the listener received."""

    broker: Broker
    events: list[tuple[Order, Fill | None]]

    async def step(self) -> None:
        raise NotImplementedError

    def last_close(self) -> float:
        raise NotImplementedError

    async def poll(self) -> None:
        """A fraction of a bar (the simulated broker only moves bar by bar)."""
        await self.step()

    async def until(self, pred: Callable[[], bool], bars: int = 40) -> None:
        # Generous: returns as soon as pred holds; a loaded CI machine may need a few seconds.
        for _ in range(bars * 10):
            if pred():
                return
            await self.poll()
        assert pred(), self.events

    def fills(self) -> list[Fill]:
        return [f for _, f in self.events if f is not None]

    def status(self, cid: str) -> OrderStatus | None:
        found = [o.status for o, _ in self.events if o.client_order_id == cid]
        return found[-1] if found else None


#: The simulator's spot BTCUSDT rules (instruments-info: basePrecision, minOrderQty, minOrderAmt).
SPOT = Instrument("BTCUSDT", Category.SPOT, Decimal("0.1"), Decimal("0.000001"), Decimal("0.000011"), Decimal("5"))


class SimulatedHarness(Harness):
    def __init__(self, data: Any, instrument: Instrument | None = None, **knobs: int) -> None:
        ins = instrument or instrument_from_config(load_config(None, []).market)
        self.broker = SimulatedBroker(ins, 10_000.0, FEE, 0.0, **knobs)
        self.events = []
        self.broker.set_listener(lambda o, f: self.events.append((o, f)))
        self.data, self.i = data, 300

    async def step(self) -> None:
        d, i = self.data, self.i
        self.broker.on_bar(int(d.time[i]), float(d.open[i]), float(d.high[i]), float(d.low[i]), float(d.close[i]))
        self.i += 1

    def last_close(self) -> float:
        return float(self.data.close[self.i - 1])


class BybitHarness(Harness):
    BAR_MS = 150.0

    def __init__(self, sim: SimServer, category: str = "linear") -> None:
        http = BybitHttp(KEY, SECRET, rest_url=sim.rest_url, timeout_s=2.0)
        stream = PrivateStream(KEY, SECRET, url=private_url(sim.ws_url, True), testnet=True,
                               on_message=lambda m: None, on_reconnect=_noop, check_every_s=0.1)
        self.account = BybitAccount(http, stream=stream)
        self.broker = self.account.leg("BTCUSDT", category)
        self.events = []
        self.broker.set_listener(lambda o, f: self.events.append((o, f)))
        self.sim = sim

    async def step(self) -> None:
        await asyncio.sleep(self.BAR_MS / 1000.0)

    async def poll(self) -> None:
        await asyncio.sleep(self.BAR_MS / 1000.0 / 10)

    def last_close(self) -> float:
        m = self.sim.state.markets["BTCUSDT"]
        return float(m.data.close[m.closed_count(self.sim.state.now_ms()) - 1])


async def _noop() -> None:
    return None


@pytest.fixture(params=["simulated", "bybit"])
async def h(request: pytest.FixtureRequest, btc_1h: Path) -> AsyncIterator[Harness]:
    if request.param == "simulated":
        yield SimulatedHarness(load_candles(btc_1h, symbol="BTCUSDT", timeframe="1h", bar_ms=3_600_000))
        return
    async with SimServer(sim_cfg(btc_1h, BybitHarness.BAR_MS, history=300), modules(fee_rate=FEE)) as sim:
        harness = BybitHarness(sim)
        await harness.account.load()
        try:
            yield harness
        finally:
            await harness.account.close()


@pytest.fixture(params=["simulated", "bybit"])
async def spot(request: pytest.FixtureRequest, btc_1h: Path) -> AsyncIterator[Harness]:
    """The same two brokers on spot BTCUSDT (the venue's spot rules)."""
    if request.param == "simulated":
        yield SimulatedHarness(load_candles(btc_1h, symbol="BTCUSDT", timeframe="1h", bar_ms=3_600_000), SPOT)
        return
    async with SimServer(sim_cfg(btc_1h, BybitHarness.BAR_MS, history=300), modules(fee_rate=FEE)) as sim:
        harness = BybitHarness(sim, "spot")
        await harness.account.load()
        try:
            yield harness
        finally:
            await harness.account.close()


def req(cid: str, side: Side, qty: str, order_type: OrderType = OrderType.MARKET, price: str | None = None,
        ref: float | None = None) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol="BTCUSDT", side=side, qty=Decimal(qty), order_type=order_type,
                        price=Decimal(price) if price else None,
                        reference_price=Decimal(repr(ref)) if ref else None)


async def test_market_round_trip_books_follow_fills(h: Harness) -> None:
    b = h.broker
    cash0, qty0 = b.cash_and_qty()
    assert qty0 == 0 and cash0 == 10_000.0
    o = b.submit(req("c-buy", Side.BUY, "0.05", ref=h.last_close()), 0)
    assert o.client_order_id == "c-buy" and o.status in (OrderStatus.SUBMITTED, OrderStatus.ACCEPTED)
    assert [x.client_order_id for x in b.open_orders()] == ["c-buy"]
    await h.until(lambda: h.status("c-buy") is OrderStatus.FILLED)
    fills = h.fills()
    assert len(fills) == 1 and fills[0].qty == Decimal("0.05") and fills[0].client_order_id == "c-buy"
    f = fills[0]
    assert f.fee == (f.qty * f.price * Decimal(repr(FEE))).quantize(Decimal("1e-10"))
    assert b.open_orders() == [] and b.position().qty == Decimal("0.05") and b.position().avg_price == f.price
    cash, qty = b.cash_and_qty()
    assert qty == 0.05 and cash == pytest.approx(10_000.0 - float(f.qty * f.price + f.fee))
    bal = b.balance(float(f.price))
    assert bal.cash == Decimal(repr(10_000.0)) - f.qty * f.price - f.fee
    assert b.equity(float(f.price)) == pytest.approx(float(bal.equity))
    b.submit(req("c-sell", Side.SELL, "0.05", ref=h.last_close()), 0)
    await h.until(lambda: h.status("c-sell") is OrderStatus.FILLED)
    assert b.position().qty == 0 and len(h.fills()) == 2
    g = h.fills()[1]
    assert b.position().realized_pnl == (g.price - f.price) * Decimal("0.05")


async def test_invalid_and_duplicate_orders_are_rejected_at_once(h: Harness) -> None:
    b = h.broker
    for cid, qty in (("bad-lot", "0.0005"), ("bad-step", "0.0105"), ("bad-zero", "0")):
        o = b.submit(req(cid, Side.BUY, qty, ref=h.last_close()), 0)
        assert o.status is OrderStatus.REJECTED and o.reject_reason, cid
    limit = b.submit(req("dup", Side.BUY, "0.01", OrderType.LIMIT, price=None, ref=h.last_close()), 0)
    assert limit.status is OrderStatus.REJECTED  # a limit order needs a price
    b.submit(req("twice", Side.BUY, "0.01", ref=h.last_close()), 0)
    again = b.submit(req("twice", Side.BUY, "0.01", ref=h.last_close()), 0)
    assert again.status is OrderStatus.REJECTED
    await h.until(lambda: h.status("twice") is OrderStatus.FILLED)
    assert b.position().qty == Decimal("0.01")  # the duplicate never traded


async def test_resting_limit_order_then_cancel(h: Harness) -> None:
    b = h.broker
    far = Decimal(repr(round(h.last_close() * 0.5, 1)))
    o = b.submit(req("lim", Side.BUY, "0.01", OrderType.LIMIT, price=str(far)), 0)
    assert o.status in (OrderStatus.SUBMITTED, OrderStatus.ACCEPTED)
    for _ in range(3):
        await h.step()
    assert [x.client_order_id for x in b.open_orders()] == ["lim"] and not h.fills()
    assert b.cancel("nope", 0) is None
    assert b.cancel("lim", 0) is not None
    await h.until(lambda: h.status("lim") is OrderStatus.CANCELLED)
    assert b.open_orders() == [] and b.position().qty == 0 and not h.fills()


# -- spot: a buy's fee is paid in the coin bought (Bybit feeCurrency) --------------------------------
async def test_spot_buy_pays_its_fee_in_the_coin_and_the_exit_sells_what_is_held(spot: Harness) -> None:
    b = spot.broker
    assert b.instrument.qty_step == SPOT.qty_step and b.instrument.category is Category.SPOT
    b.submit(req("s-buy", Side.BUY, "0.012345", ref=spot.last_close()), 0)
    await spot.until(lambda: spot.status("s-buy") is OrderStatus.FILLED)
    (f,) = spot.fills()
    # Fee: fee_rate x the coins bought, in BTC; the wallet holds what was bought less that fee,
    # and the USDT paid is the notional alone.
    assert (f.qty, f.fee_currency, f.fee) == (Decimal("0.012345"), "BTC", Decimal("0.000012345"))
    held = Decimal("0.012332655")
    assert b.position().qty == held and b.cash_and_qty()[1] == float(held)
    assert b.balance(float(f.price)).cash == Decimal(repr(10_000.0)) - f.qty * f.price
    # Selling what was bought is more than is held: refused (Bybit 170131), nothing trades.
    # (refused at submit, or by the venue through the listener)
    o = b.submit(req("s-too-much", Side.SELL, "0.012345", ref=spot.last_close()), 0)
    await spot.until(lambda: OrderStatus.REJECTED in (o.status, spot.status("s-too-much")))
    assert b.position().qty == held and len(spot.fills()) == 1 and b.open_orders() == []
    refused = o if o.status is OrderStatus.REJECTED else \
        [x for x, _ in spot.events if x.client_order_id == "s-too-much"][-1]
    assert "insufficient balance" in (refused.reject_reason or "").lower(), refused.reject_reason
    # The exit sells the holding rounded down to the lot; the rest is dust, below one lot.
    exit_qty = b.instrument.floor_qty(b.position().qty)
    assert exit_qty == Decimal("0.012332")
    b.submit(req("s-exit", Side.SELL, format(exit_qty, "f"), ref=spot.last_close()), 0)
    await spot.until(lambda: spot.status("s-exit") is OrderStatus.FILLED)
    g = spot.fills()[1]
    assert (g.qty, g.fee_currency) == (exit_qty, "USDT")
    assert g.fee == (g.qty * g.price * Decimal(repr(FEE))).quantize(Decimal("1e-10"))
    assert b.position().qty == Decimal("0.000000655") < b.instrument.qty_step
    assert b.balance(float(g.price)).cash == Decimal(repr(10_000.0)) - f.qty * f.price + g.qty * g.price - g.fee


# -- partial fills: an order filled in pieces, and one cancelled after a partial fill -------------
@asynccontextmanager
async def harness(kind: str, data_file: Path, category: str, **knobs: int) -> AsyncIterator[Harness]:
    """One broker on ``category`` BTCUSDT with the venue's partial-fill knobs (both sides the same)."""
    if kind == "simulated":
        data = load_candles(data_file, symbol="BTCUSDT", timeframe="1h", bar_ms=3_600_000)
        yield SimulatedHarness(data, SPOT if category == "spot" else None, **knobs)
        return
    async with SimServer(sim_cfg(data_file, BybitHarness.BAR_MS, history=300), modules(fee_rate=FEE, **knobs)) as sim:
        hb = BybitHarness(sim, category)
        await hb.account.load()
        try:
            yield hb
        finally:
            await hb.account.close()


BROKERS_AND_CATEGORIES = [(k, c) for k in ("simulated", "bybit") for c in ("linear", "spot")]


@pytest.mark.parametrize(("kind", "category"), BROKERS_AND_CATEGORIES)
async def test_an_order_filled_in_pieces_ends_filled_with_every_piece_booked(
        kind: str, category: str, btc_1h: Path) -> None:
    async with harness(kind, btc_1h, category, partial_fills=3) as h:
        b = h.broker
        tick = b.instrument.tick_size
        working: list[tuple[OrderStatus, list[str]]] = []  # what was still working at each event

        def listen(o: Order, f: Fill | None) -> None:
            h.events.append((o, f))
            working.append((o.status, [x.client_order_id for x in b.open_orders()]))

        b.set_listener(listen)
        b.submit(req("p-buy", Side.BUY, "0.03", ref=h.last_close()), 0)
        await h.until(lambda: h.status("p-buy") is OrderStatus.FILLED)
        fills = h.fills()
        # Three executions of one lot-sized third each, distinct ids, walking the book a tick each.
        assert [f.qty for f in fills] == [Decimal("0.01")] * 3
        assert len({f.exec_id for f in fills}) == 3 and {f.client_order_id for f in fills} == {"p-buy"}
        assert [f.price - fills[0].price for f in fills] == [0, tick, 2 * tick]
        # The order read PartiallyFilled between them, its filled qty growing piece by piece.
        states = [(o.status, o.filled_qty) for o, _ in h.events if o.client_order_id == "p-buy"
                  and o.status in (OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED)]
        assert states == [(OrderStatus.PARTIALLY_FILLED, Decimal("0.01")), (OrderStatus.PARTIALLY_FILLED,
                          Decimal("0.02")), (OrderStatus.FILLED, Decimal("0.03"))]
        # A partly filled order is still working (the engine waits on it); a filled one is not.
        assert all(ids == ["p-buy"] for st, ids in working if st is OrderStatus.PARTIALLY_FILLED)
        assert working[-1] == (OrderStatus.FILLED, [])
        last = [o for o, _ in h.events if o.client_order_id == "p-buy"][-1]
        assert last.avg_fill_price == sum((f.qty * f.price for f in fills), Decimal(0)) / Decimal("0.03")
        held = sum((f.held_change for f in fills), Decimal(0))
        assert b.position().qty == held and b.open_orders() == []
        paid = sum((f.qty * f.price + (f.fee if not f.fee_in_base else 0) for f in fills), Decimal(0))
        assert b.balance(float(fills[-1].price)).cash == Decimal(repr(10_000.0)) - paid


@pytest.mark.parametrize(("kind", "category"), BROKERS_AND_CATEGORIES)
async def test_a_market_order_on_a_thin_bar_is_cancelled_after_its_partial_fill(
        kind: str, category: str, btc_1h: Path) -> None:
    async with harness(kind, btc_1h, category, partial_fills=2, thin_every=1) as h:
        b = h.broker
        b.submit(req("thin", Side.BUY, "0.041", ref=h.last_close()), 0)
        await h.until(lambda: h.status("thin") is OrderStatus.CANCELLED)
        fills = h.fills()
        # Half of it (rounded down to the lot) filled in two pieces; the rest was cancelled.
        assert [f.qty for f in fills] == [Decimal("0.01"), Decimal("0.01")] if category == "linear" else \
            [Decimal("0.01025"), Decimal("0.01025")]
        final = [o for o, _ in h.events if o.client_order_id == "thin"][-1]
        assert final.status is OrderStatus.CANCELLED and final.filled_qty == sum(f.qty for f in fills)
        assert final.avg_fill_price == sum((f.qty * f.price for f in fills), Decimal(0)) / final.filled_qty
        assert b.open_orders() == [] and b.position().qty == sum((f.held_change for f in fills), Decimal(0))
