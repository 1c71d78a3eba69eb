"""Fill assumptions as tables: OHLC rows, the strategy's targets, and the fills they must give.

Rules under test (README, "Fill assumptions"): a market order decided on bar t's close fills at
bar t+1's open +/- slippage, rounded to the tick; fee_rate x notional per side; a buy cash cannot
pay for at the fill price shrinks to what cash buys; quantities floor to the lot.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from bot import app as core
from bot.config import load_config
from bot.domain import Category, Instrument, OrderRequest, OrderType, Side
from broker.simulated import SimulatedBroker
from storage import queries as q
from storage.db import open_database
from tests.helpers import HOUR, T0, ScriptedStrategy, make_data

D = Decimal

FLAT = (100.0, 100.0, 100.0, 100.0)

# name, rows (o, h, l, c), script {bar: target}, overrides, expected fills [(bar, side, qty, price, fee)]
CASES = [
    (
        "buy at next open, exit at next open",
        [FLAT, (100, 103, 99, 102), (102, 111, 101, 110), (110, 112, 109, 111)],
        {0: 1.0, 2: 0.0},
        {},
        # qty = floor_lot(1 * 10000 / (100 * 1.001)) = 99.900; bought at bar 1's open 100
        [(1, "Buy", "99.9", "100", "9.99"), (3, "Sell", "99.9", "110", "10.989")],
    ),
    (
        "a gap up shrinks the buy to what cash pays for",
        [FLAT, (101, 101, 101, 101), (101, 101, 101, 101)],
        {0: 1.0},
        {},
        # 99.9 x 101 x 1.001 > 10000 cash -> floor_lot(10000 / (101 x 1.001)) = 98.910
        [(1, "Buy", "98.91", "101", "9.98991")],
    ),
    (
        "slippage moves both sides against the trader, rounded to the tick",
        [FLAT, FLAT, (110, 110, 110, 110), (110, 110, 110, 110)],
        {0: 0.5, 2: 0.0},
        {"broker.slippage_bps": 10},
        # target 0.5: floor_lot(5000 / 100.1) = 49.950; buy 100 x 1.001 = 100.1;
        # sell 110 x 0.999 = 109.89, floored to the 0.1 tick = 109.8
        [(1, "Buy", "49.95", "100.1", "4.999995"), (3, "Sell", "49.95", "109.8", "5.48451")],
    ),
    (
        "short then cover on a linear market",
        [FLAT, FLAT, (90, 90, 90, 90), (90, 90, 90, 90)],
        {0: -1.0, 2: 0.0},
        {"broker.fee_rate": 0.0},
        [(1, "Sell", "100", "100", "0"), (3, "Buy", "100", "90", "0")],
    ),
    (
        "long to short flips in one order",
        [FLAT, FLAT, FLAT, FLAT],
        {0: 1.0, 1: -1.0},
        {"broker.fee_rate": 0.0},
        # at bar 1 close: hold 100, target -100 -> sell 200
        [(1, "Buy", "100", "100", "0"), (2, "Sell", "200", "100", "0")],
    ),
    (
        "spot is long-only: a short target is clamped to flat",
        [FLAT, FLAT, FLAT],
        {0: -1.0},
        {"market.category": "spot"},
        [],
    ),
    (
        "a decision on the last bar never fills (there is no next open)",
        [FLAT, FLAT],
        {1: 1.0},
        {},
        [],
    ),
    (
        "an order below the instrument minimum is not sent",
        [FLAT, FLAT, FLAT],
        {0: 0.0004},  # 4 USDT < 5 USDT minimum notional
        {},
        [],
    ),
]


@pytest.mark.parametrize(("name", "rows", "script", "overrides", "expected"), CASES, ids=[c[0] for c in CASES])
def test_fill_table(name: str, rows: list, script: dict, overrides: dict, expected: list, sqlite_url: str) -> None:
    cfg = load_config(None, [f"{k}={v}" for k, v in overrides.items()])
    data = make_data(rows)
    strategy = ScriptedStrategy(script, long_only=cfg.market.category == "spot")
    db = open_database(sqlite_url)
    summary = core.backtest(cfg, data, strategy, db, show_progress=False)
    fills = q.fills(db, summary["run_id"])
    got = [((f["time"] - T0) // HOUR, f["side"], f["qty"], f["price"], f["fee"]) for f in fills]
    want = [(bar, side, D(qty), D(price), D(fee)) for bar, side, qty, price, fee in expected]
    assert got == want
    # Every fill belongs to an order that points at the decision taken one bar earlier.
    orders = {o["id"]: o for o in q.orders(db, summary["run_id"])}
    for f in fills:
        order = orders[f["order_id"]]
        decision_bar = int(order["decision_id"].rsplit("-", 1)[1])
        assert f["time"] == decision_bar + HOUR


def test_accounting_is_exact(sqlite_url: str) -> None:
    """Cash, realised PnL and fees add up to the last cent after a round trip."""
    cfg = load_config(None, [])
    data = make_data([FLAT, (100, 103, 99, 102), (102, 111, 101, 110), (110, 112, 109, 111)])
    db = open_database(sqlite_url)
    s = core.backtest(cfg, data, ScriptedStrategy({0: 1.0, 2: 0.0}), db, show_progress=False)
    (trade,) = q.trades(db, s["run_id"])
    assert trade["gross_pnl"] == D("999.0")  # 99.9 x (110 - 100)
    assert trade["fees"] == D("20.979")
    assert trade["net_pnl"] == D("978.021")
    assert s["final_equity"] == pytest.approx(10_000 + 978.021)
    assert trade["entry_decision_id"].endswith(str(T0)) and trade["exit_decision_id"].endswith(str(T0 + 2 * HOUR))


# Limit orders, straight against the fill engine: (limit side, limit price, bar o/h/l/c, fill price or None)
LIMIT_CASES = [
    ("Buy", "95", (100, 101, 96, 97), None),        # low never reaches 95
    ("Buy", "95", (97, 98, 94, 96), "95"),          # trades through: filled at the limit
    ("Buy", "95", (93, 96, 92, 95), "93"),          # opens below the limit: filled at the open
    ("Sell", "105", (100, 104, 99, 103), None),
    ("Sell", "105", (103, 106, 102, 104), "105"),
    ("Sell", "105", (107, 108, 104, 105), "107"),   # opens above: filled at the better open
]


@pytest.mark.parametrize(("side", "limit", "bar", "price"), LIMIT_CASES)
def test_limit_order_table(side: str, limit: str, bar: tuple, price: str | None) -> None:
    ins = Instrument("BTCUSDT", Category.LINEAR, D("0.1"), D("0.001"), D("0.001"), D("5"))
    broker = SimulatedBroker(ins, 10_000, 0.001, 0)
    seen = []
    broker.set_listener(lambda order, fill: seen.append(fill) if fill else None)
    broker.submit(OrderRequest("L1", "BTCUSDT", Side(side), D("1"), OrderType.LIMIT, D(limit)), 0)
    broker.on_bar(1, *bar)
    if price is None:
        assert not seen and len(broker.open_orders()) == 1
    else:
        assert [f.price for f in seen] == [D(price)] and not broker.open_orders()
        assert seen[0].is_maker and seen[0].fee == D(price) * D("0.001")


def test_spot_cannot_sell_more_than_held() -> None:
    ins = Instrument("BTCUSDT", Category.SPOT, D("0.1"), D("0.001"), D("0.001"), D("5"))
    broker = SimulatedBroker(ins, 10_000, 0.001, 0)
    order = broker.submit(OrderRequest("S1", "BTCUSDT", Side.SELL, D("1")), 0)
    assert order.status == "rejected" and "exceeds" in order.reject_reason
