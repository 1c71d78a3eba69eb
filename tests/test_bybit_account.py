"""One Bybit account, two legs (BTCUSDT and ETHUSDT linear) against the local simulator: one
private stream, executions routed by symbol, a position per symbol, one shared cash that is
the venue's walletBalance - sum(size x avgPrice), and per-leg reconciliation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest

from bot.domain import Fill, Order, OrderRequest, OrderStatus, OrderType, Side
from bot.errors import ConfigError, ExchangeError
from broker.bybit import BybitAccount, BybitBroker, BybitHttp, PrivateStream, private_url
from broker.bybit_sim import SimConfig, SimServer
from broker.bybit_sim.account import Account, SimReject
from broker.bybit_sim.private import account_of
from tests.live_helpers import KEY, SECRET, modules, until

FEE = 0.001
BAR_MS = 150.0


@dataclass
class Leg:
    broker: BybitBroker
    events: list[tuple[Order, Fill | None]] = field(default_factory=list)

    def status(self, cid: str) -> OrderStatus | None:
        found = [o.status for o, _ in self.events if o.client_order_id == cid]
        return found[-1] if found else None

    def fills(self) -> list[Fill]:
        return [f for _, f in self.events if f is not None]


@dataclass
class Venue:
    sim: SimServer
    account: BybitAccount
    btc: Leg
    eth: Leg

    @property
    def acct(self) -> Account:
        return account_of(self.sim.state)




def new_account(sim: SimServer, symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")) -> tuple[BybitAccount, list[Leg]]:
    http = BybitHttp(KEY, SECRET, rest_url=sim.rest_url, timeout_s=2.0)
    stream = PrivateStream(KEY, SECRET, url=private_url(sim.ws_url, True), testnet=True,
                           on_message=lambda m: None, on_reconnect=_noop, check_every_s=0.1)
    account = BybitAccount(http, stream=stream)
    legs = [Leg(account.leg(s, "linear")) for s in symbols]
    for leg in legs:
        leg.broker.set_listener(lambda o, f, leg=leg: leg.events.append((o, f)))
    return account, legs


async def _noop() -> None:
    return None


@pytest.fixture
async def venue(data_dir: Path) -> AsyncIterator[Venue]:
    cfg = SimConfig(data=[str(data_dir / "bybit_BTCUSDT_1h.csv.gz"), str(data_dir / "bybit_ETHUSDT_1h.csv.gz")],
                    bar_ms=BAR_MS, history=300)
    async with SimServer(cfg, modules(fee_rate=FEE)) as sim:
        account, (btc, eth) = new_account(sim)
        await account.load()
        try:
            yield Venue(sim, account, btc, eth)
        finally:
            await account.close()


def market(cid: str, symbol: str, side: Side, qty: str) -> OrderRequest:
    return OrderRequest(cid, symbol, side, Decimal(qty))


def venue_cash(acct: Account) -> Decimal:
    """What the shared cash must be: USDT walletBalance - sum over linear positions of size x avgPrice."""
    return acct.coins["USDT"] - sum((b.size * b.avg for b in acct.books.values()), Decimal(0))


async def trade_both(v: Venue) -> None:
    """BTC: buy 0.05, sell 0.02; ETH: buy 1, sell 1 (flat again); every order filled."""
    for leg, cid, symbol, side, qty in ((v.btc, "b-1", "BTCUSDT", Side.BUY, "0.05"),
                                        (v.eth, "e-1", "ETHUSDT", Side.BUY, "1"),
                                        (v.btc, "b-2", "BTCUSDT", Side.SELL, "0.02"),
                                        (v.eth, "e-2", "ETHUSDT", Side.SELL, "1")):
        o = leg.broker.submit(market(cid, symbol, side, qty), 0)
        assert o.status is OrderStatus.SUBMITTED
    for leg, cid in ((v.btc, "b-1"), (v.btc, "b-2"), (v.eth, "e-1"), (v.eth, "e-2")):
        await until(lambda leg=leg, cid=cid: leg.status(cid) is OrderStatus.FILLED)
    await until(lambda: not v.account.busy())


async def test_two_legs_share_one_stream_and_book_only_their_own_executions(venue: Venue) -> None:
    v, acct = venue, venue.acct
    private = [c for c in v.sim.hub.conns if c.channel == "private"]
    assert len(private) == 1 and v.sim.state.stats["ws_auth_ok"] == 1
    await until(lambda: private[0].topics == {"order", "execution", "position", "wallet"})  # acked after auth
    assert v.account.legs == {"BTCUSDT": v.btc.broker, "ETHUSDT": v.eth.broker}
    assert v.btc.broker.instrument.qty_step == Decimal("0.001")
    assert v.eth.broker.instrument.qty_step == Decimal("0.01")  # each leg has its own rules
    await trade_both(v)
    # Each leg's listener saw its own symbol only, and every venue execution of that symbol once.
    for leg, symbol in ((v.btc, "BTCUSDT"), (v.eth, "ETHUSDT")):
        assert {o.symbol for o, _ in leg.events} == {symbol}
        venue_ids = {e.exec_id for e in acct.execs if e.order.symbol == symbol}
        assert [f.exec_id for f in leg.fills()] and {f.exec_id for f in leg.fills()} == venue_ids
        assert len(leg.fills()) == len(venue_ids) and {f.symbol for f in leg.fills()} == {symbol}
    assert v.btc.broker.stats["stream_fills"] == 2 and v.eth.broker.stats["stream_fills"] == 2
    # A position per symbol, as the venue holds it.
    assert v.btc.broker.position().qty == acct.books["BTCUSDT"].size == Decimal("0.03")
    assert v.btc.broker.position().avg_price == acct.books["BTCUSDT"].avg
    assert v.eth.broker.position().qty == acct.books["ETHUSDT"].size == 0
    assert v.eth.broker.position().realized_pnl == acct.books["ETHUSDT"].realized
    # One shared cash: the venue's walletBalance - sum(size x avgPrice), exactly, seen by both legs.
    assert v.account.cash == venue_cash(acct)
    assert v.btc.broker.cash_and_qty() == (float(venue_cash(acct)), 0.03)
    assert v.eth.broker.cash_and_qty() == (float(venue_cash(acct)), 0.0)
    btc_mark = 40_000.0
    assert v.account.equity({"BTCUSDT": btc_mark, "ETHUSDT": 2_000.0}) == pytest.approx(
        float(venue_cash(acct)) + 0.03 * btc_mark)


async def test_positions_on_both_symbols_at_once_keep_the_cash_right(venue: Venue) -> None:
    v, acct = venue, venue.acct
    v.btc.broker.submit(market("b-open", "BTCUSDT", Side.BUY, "0.04"), 0)
    v.eth.broker.submit(market("e-open", "ETHUSDT", Side.SELL, "2"), 0)
    await until(lambda: v.btc.status("b-open") is OrderStatus.FILLED and v.eth.status("e-open") is OrderStatus.FILLED)
    assert v.btc.broker.qty == Decimal("0.04") and v.eth.broker.qty == Decimal("-2")
    assert acct.books["BTCUSDT"].size == Decimal("0.04") and acct.books["ETHUSDT"].size == Decimal("-2")
    assert v.account.cash == venue_cash(acct)
    assert await v.btc.broker.check_books() is None and await v.eth.broker.check_books() is None


async def test_check_books_finds_and_resyncs_a_difference_injected_at_the_venue(venue: Venue) -> None:
    v, acct = venue, venue.acct
    await trade_both(v)
    assert await v.btc.broker.check_books() is None and await v.eth.broker.check_books() is None
    # A deposit the stream never told about: the shared cash is off by it.
    acct.coins["USDT"] += Decimal("25")
    diff = await v.eth.broker.check_books()
    assert diff is not None and Decimal(diff["cash_venue"]) - Decimal(diff["cash_books"]) == Decimal("25")
    assert Decimal(diff["qty_books"]) == Decimal(diff["qty_venue"]) == 0
    assert v.account.cash == venue_cash(acct) and await v.btc.broker.check_books() is None
    # A position change the stream never told about (an ADL, a trade by hand): found on its leg.
    acct.books["BTCUSDT"].size += Decimal("0.01")
    assert await v.eth.broker.check_books() is None  # not ETH's position
    diff = await v.btc.broker.check_books()
    assert diff is not None and (Decimal(diff["qty_books"]), Decimal(diff["qty_venue"])) == (Decimal("0.03"),
                                                                                            Decimal("0.04"))
    assert v.btc.broker.qty == Decimal("0.04") and v.account.cash == venue_cash(acct)
    assert v.btc.broker.stats["resyncs"] == 1 and v.eth.broker.stats["resyncs"] == 1
    # Nothing is compared while any leg has an order working (its fill would move the shared cash).
    far = Decimal("1000.00")
    v.eth.broker.submit(OrderRequest("e-rest", "ETHUSDT", Side.BUY, Decimal("0.1"), OrderType.LIMIT, far), 0)
    acct.coins["USDT"] += Decimal("5")
    assert await v.btc.broker.check_books() is None and v.btc.broker.stats["resyncs"] == 1
    await until(lambda: v.eth.status("e-rest") is OrderStatus.ACCEPTED)  # a cancel must not overtake the create
    v.eth.broker.cancel("e-rest", 0)
    await until(lambda: v.eth.status("e-rest") is OrderStatus.CANCELLED)
    assert await v.btc.broker.check_books() is not None and v.account.cash == venue_cash(acct)


async def test_an_order_of_a_market_no_leg_trades_is_ignored(venue: Venue) -> None:
    """A spot ETHUSDT order placed by hand at the venue: its pushes reach the one stream, but no
    leg (linear BTCUSDT, linear ETHUSDT) adopts or books it; the wallet moved, so check_books
    finds the difference."""
    v, acct = venue, venue.acct
    acct.create({"category": "spot", "symbol": "ETHUSDT", "side": "Buy", "orderType": "Market", "qty": "0.1",
                 "orderLinkId": "by-hand-spot"})
    await until(lambda: acct.by_link["by-hand-spot"].status == "Filled")
    await until(lambda: v.sim.state.stats["push_wallet"] >= 1)
    for leg in (v.btc, v.eth):
        assert leg.events == [] and leg.broker.adopted == [] and leg.broker.qty == 0
    diff = await v.eth.broker.check_books()
    assert diff is not None and v.account.cash == venue_cash(acct)


async def test_a_symbol_no_leg_trades_is_not_adopted(venue: Venue) -> None:
    """A second account trading BTCUSDT only: a linear ETHUSDT order by hand reaches its stream
    (as it reaches the two-leg account's, whose ETH leg adopts it), and its BTC leg ignores it."""
    v, acct = venue, venue.acct
    account, (btc,) = new_account(v.sim, ("BTCUSDT",))
    try:
        await account.load()
        pushes = v.sim.state.stats["push_execution"]
        acct.create({"category": "linear", "symbol": "ETHUSDT", "side": "Buy", "orderType": "Market", "qty": "0.5",
                     "orderLinkId": "by-hand-eth"})
        await until(lambda: v.eth.status("by-hand-eth") is OrderStatus.FILLED)
        assert v.sim.state.stats["push_execution"] > pushes and v.eth.broker.adopted == ["by-hand-eth"]
        assert btc.events == [] and btc.broker.adopted == [] and btc.broker.qty == 0
        assert v.btc.events == [] and v.btc.broker.adopted == []
    finally:
        await account.close()


async def test_restore_lookup_and_fills_since_work_per_leg(venue: Venue) -> None:
    v = venue
    t0 = v.sim.state.now_ms() - 3_600_000  # a bar back: a market order's fill is stamped with its bar's open
    await trade_both(v)
    btc_fills, eth_fills = v.btc.fills(), v.eth.fills()
    await v.account.close()
    await v.account.close()  # idempotent
    # A restart: a new account whose journal knows every fill but those of each leg's last order,
    # which it holds as still in flight.
    account, (btc, eth) = new_account(v.sim)
    try:
        await account.load()
        btc.broker.since_floor = t0
        assert account.since_floor == t0 == eth.broker.since_floor
        assert btc.broker.qty == Decimal("0.03") and eth.broker.qty == 0  # books from the venue
        for leg, fills, last in ((btc, btc_fills, "b-2"), (eth, eth_fills, "e-2")):
            o = next(o for o, _ in v.btc.events + v.eth.events if o.client_order_id == last)
            in_flight = Order.from_request(market(last, o.symbol, o.side, format(o.qty, "f")), o.created_time)
            known = [f for f in fills if f.client_order_id != last]
            leg.broker.restore(Decimal(10_000), known, [in_flight.transition(OrderStatus.SUBMITTED, 0)])
        # An order is found on its own leg only (Bybit finds an orderLinkId account-wide).
        found = await btc.broker.lookup_order("b-2")
        assert found is not None and found.status is OrderStatus.FILLED and found.symbol == "BTCUSDT"
        assert await eth.broker.lookup_order("b-2") is None
        assert await eth.broker.lookup_order("e-2") is not None
        assert btc.status("b-2") is OrderStatus.FILLED and eth.status("e-2") is OrderStatus.FILLED
        assert eth.broker.adopted == [] and btc.broker.adopted == []
        # Executions since t0: each leg recovers its own symbol's, none of the other's.
        assert await btc.broker.fills_since(t0) == 0 and await eth.broker.fills_since(t0) == 0  # known now
        assert {f.exec_id for f in btc.fills()} == {f.exec_id for f in btc_fills if f.client_order_id == "b-2"}
        assert {f.exec_id for f in eth.fills()} == {f.exec_id for f in eth_fills if f.client_order_id == "e-2"}
        await btc.broker.refresh_books()
        await eth.broker.refresh_books()
        assert account.cash == venue_cash(v.acct) and btc.broker.qty == Decimal("0.03")
    finally:
        await account.close()


async def test_fills_since_recovers_only_the_legs_own_missed_executions(venue: Venue) -> None:
    v = venue
    t0 = v.sim.state.now_ms() - 3_600_000  # a bar back: a market order's fill is stamped with its bar's open
    await trade_both(v)
    await v.account.close()
    account, (btc, eth) = new_account(v.sim)
    try:
        await account.load()
        account.since_floor = t0
        assert await btc.broker.fills_since(t0) == 2 and await eth.broker.fills_since(t0) == 2
        assert {f.symbol for f in btc.fills()} == {"BTCUSDT"} and {f.symbol for f in eth.fills()} == {"ETHUSDT"}
        assert await btc.broker.fills_since(t0) == 0  # de-duplicated by exec id
        assert sorted(btc.broker.adopted) == ["b-1", "b-2"] and sorted(eth.broker.adopted) == ["e-1", "e-2"]
    finally:
        await account.close()


async def test_an_account_leg_is_made_once_per_symbol_before_load(venue: Venue) -> None:
    with pytest.raises(ConfigError, match="one leg per symbol"):
        venue.account.leg("BTCUSDT", "linear")
    with pytest.raises(ConfigError, match="before the account is loaded"):
        venue.account.leg("SOLUSDT", "linear")
    await venue.btc.broker.close()
    await venue.btc.broker.close()  # a leg's close is idempotent and leaves the shared stream open
    assert venue.account.stream is not None and venue.account.stream.ready.is_set()
    venue.eth.broker.submit(market("e-after", "ETHUSDT", Side.BUY, "0.5"), 0)
    await until(lambda: venue.eth.status("e-after") is OrderStatus.FILLED)


async def test_the_simulator_margins_and_lists_positions_account_wide(venue: Venue) -> None:
    """Like Bybit's unified account: one margin pool for every symbol (an ETH order is refused for
    margin that a BTC position holds), and GET /v5/position/list needs symbol or settleCoin."""
    acct = venue.acct
    btc_px = acct.price_now(venue.sim.state.markets["BTCUSDT"])
    eth_px = acct.price_now(venue.sim.state.markets["ETHUSDT"])
    # 10,000 USDT at 10x: a BTC position holding ~7,000 of margin leaves too little for ~4,000 more.
    btc_qty = (Decimal(70_000) / btc_px).quantize(Decimal("0.001"))
    eth_qty = (Decimal(40_000) / eth_px).quantize(Decimal("0.01"))
    eth = {"category": "linear", "symbol": "ETHUSDT", "side": "Buy", "orderType": "Market", "qty": str(eth_qty)}
    venue.eth.broker.submit(market("e-alone", "ETHUSDT", Side.BUY, str(eth_qty)), 0)
    await until(lambda: venue.eth.status("e-alone") is OrderStatus.FILLED)  # alone, it has the margin
    venue.eth.broker.submit(market("e-flat", "ETHUSDT", Side.SELL, str(eth_qty)), 0)
    await until(lambda: venue.eth.status("e-flat") is OrderStatus.FILLED)
    venue.btc.broker.submit(market("b-big", "BTCUSDT", Side.BUY, str(btc_qty)), 0)
    await until(lambda: venue.btc.status("b-big") is OrderStatus.FILLED)
    with pytest.raises(SimReject) as refused:
        acct.create({**eth, "orderLinkId": "e-no-margin"})
    assert refused.value.code == 110007
    http = venue.account.http
    listed = await http.read("positions", "get_positions", category="linear", settleCoin="USDT")
    assert [p["symbol"] for p in listed["list"]] == ["BTCUSDT"]  # open positions only
    with pytest.raises(ExchangeError):
        await http.read("positions", "get_positions", category="linear")
