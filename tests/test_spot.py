"""Spot pays a buy's fee in the coin bought (Bybit ``feeCurrency``): the holding is what was
bought less that fee, an exit sells the holding rounded down to the lot, the dust below one lot
stays, and the book, the trade ledger, the journal, reconciliation and the exchange simulator all
count it the same way."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine

from bot import app as core
from bot import reconcile as rec
from bot.config import load_config
from bot.domain import Fill, Side
from bot.positions import PositionBook
from bot.trades import TradeLedger
from broker.bybit_sim import SimServer
from broker.bybit_sim.account import SimReject
from broker.bybit_sim.private import account_of
from storage import queries as q
from storage.db import open_database
from storage.journal import Journal
from storage.records import run_snapshot
from tests.conftest import PG_URL
from tests.helpers import HOUR, T0, ScriptedStrategy, make_data
from tests.live_helpers import modules, sim_cfg, until

D = Decimal
SPOT = ("market.category=spot", "market.qty_step=0.000001", "market.min_qty=0.000011", "market.tick_size=0.1")
FLAT = (100.0, 100.0, 100.0, 100.0)


def test_position_book_takes_a_base_fee_out_of_the_coins() -> None:
    book = PositionBook()
    moved = book.apply(Side.BUY, D("0.012345"), D("40000"), D("0.000012345"), track_entry=False, fee_in_base=True)
    assert (book.qty, moved, book.fees) == (D("0.012332655"), D("-493.8"), D("0.4938"))
    moved = book.apply(Side.SELL, D("0.012332"), D("41000"), D("0.505612"), track_entry=False)
    assert (book.qty, moved) == (D("0.000000655"), D("505.106388"))
    assert book.fees == D("0.4938") + D("0.505612")


def _fill(eid: str, side: Side, qty: str, price: str, fee: str, cur: str) -> Fill:
    return Fill(eid, "o-" + eid, "BTCUSDT", side, D(qty), D(price), D(fee), int(eid), fee_currency=cur)


def test_trade_ledger_closes_a_spot_trade_at_dust_and_carries_the_dust() -> None:
    ledger = TradeLedger("r", dust=D("0.000001"))
    assert ledger.on_fill(_fill("1", Side.BUY, "0.012345", "40000", "0.000012345", "BTC"), "d1", 1) == []
    (t,) = ledger.on_fill(_fill("2", Side.SELL, "0.012332", "41000", "0.505612", "USDT"), "d2", 3)
    # Entry at the buy's price on what was received; both fees in USDT (the BTC fee at 40000).
    assert (t["qty"], t["entry_price"], t["exit_price"]) == (D("0.012332655"), D("40000"), D("41000"))
    assert t["gross_pnl"] == D("12.332") and t["fees"] == D("0.4938") + D("0.505612")
    assert t["net_pnl"] == D("12.332") - D("0.999412") and ledger.open is None
    assert ledger.carry == (D("0.000000655"), D("40000"))
    # The dust joins the next trade, which closes to dust again and never turns short.
    ledger.on_fill(_fill("3", Side.BUY, "0.01", "40000", "0.00001", "BTC"), "d3", 4)
    assert ledger.open is not None and ledger.open.qty == D("0.009990655")
    (t2,) = ledger.on_fill(_fill("4", Side.SELL, "0.00999", "40000", "0.3996", "USDT"), "d4", 5)
    assert t2["direction"] == "long" and ledger.carry == (D("0.000000655"), D("40000"))
    # A linear ledger (no dust) keeps the trade open until it is exactly flat.
    linear = TradeLedger("r")
    linear.on_fill(_fill("5", Side.BUY, "1", "100", "0.1", "USDT"), None, 0)
    assert linear.on_fill(_fill("6", Side.SELL, "0.999999", "100", "0.1", "USDT"), None, 1) == []


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, sqlite_url: str) -> Engine:
    return open_database(sqlite_url if request.param == "sqlite" else PG_URL)


def test_backtest_spot_buy_fee_in_coin_and_exit_leaves_dust(db: Engine) -> None:
    cfg = load_config(None, list(SPOT))
    data = make_data([FLAT, FLAT, FLAT, (110, 112, 109, 111)])
    s = core.backtest(cfg, data, ScriptedStrategy({0: 1.0, 2: 0.0}, long_only=True), db, show_progress=False)
    got = [((f["time"] - T0) // HOUR, f["side"], f["qty"], f["price"], f["fee"], f["fee_currency"])
           for f in q.fills(db, s["run_id"])]
    # qty = floor_lot(10000 / (100 x 1.001)) = 99.900099; its fee is 0.1 % of the coins bought,
    # so 99.800198901 BTC is held; the exit sells that rounded down to the lot, 0.000000901 is dust.
    assert got == [(1, "Buy", D("99.900099"), D("100"), D("0.099900099"), "BTC"),
                   (3, "Sell", D("99.800198"), D("110"), D("10.97802178"), "USDT")]
    assert s["open_position"] == pytest.approx(0.000000901, abs=1e-15)
    (t,) = q.trades(db, s["run_id"])
    assert t["gross_pnl"] == D("998.00198") and t["fees"] == D("9.9900099") + D("10.97802178")
    cash = D(10_000) - D("99.900099") * 100 + D("99.800198") * 110 - D("10.97802178")
    assert s["final_equity"] == pytest.approx(float(cash + D("0.000000901") * 111))
    assert q.total_fees(db, s["run_id"]) == D("9.9900099") + D("10.97802178")
    # A resumed broker rebuilds the same books from the journal.
    snap = run_snapshot(db, s["run_id"])
    broker = core.simulated_brokers(cfg)[0]
    broker.restore(snap.initial_cash, snap.fills, snap.orders)
    assert (broker.position().qty, broker.cash) == (D("0.000000901"), cash)
    assert snap.fees == D("9.9900099") + D("10.97802178")


def _spot_session(tmp_path: Path) -> tuple[SimpleNamespace, int, Decimal]:
    cfg = load_config(None, [*SPOT, f"storage.url=sqlite:///{tmp_path / 'j.db'}"])
    db = core.open_journal_db(cfg.storage.url)
    data = make_data([FLAT, FLAT, FLAT, FLAT, FLAT])
    s = core.backtest(cfg, data, ScriptedStrategy({0: 1.0, 2: 0.0}, long_only=True), db, show_progress=False)
    snap = run_snapshot(db, s["run_id"])
    broker = core.simulated_brokers(cfg)[0]
    broker.restore(snap.initial_cash, snap.fills, snap.orders)
    session = SimpleNamespace(journal=Journal(db, s["run_id"]), broker=broker, engine=SimpleNamespace(last_bar=None))
    return session, int(data.time[0]), broker.position().qty


def test_reconcile_counts_base_fees_and_accepts_dust_below_one_lot(tmp_path: Path) -> None:
    session, t0, held = _spot_session(tmp_path)
    assert D(0) < held < D("0.000001")
    # The journal's position is its fills less the BTC fees: exactly what the wallet holds.
    rep = asyncio.run(rec.reconcile(session, start_qty=D(0), run_start_ms=t0))
    assert rep.position_venue == rep.position_journal == format(held, "f") and rep.dust is None
    # A venue that rounded its coin balance differently by less than one lot: accepted, journaled.
    rep = asyncio.run(rec.reconcile(session, start_qty=D("0.0000004"), run_start_ms=t0))
    assert D(rep.dust or "0") == D("-0.0000004")
    (ev,) = [e for e in q.events(session.journal.engine, session.journal.run_id)
             if e["kind"] == "reconcile" and "dust" in e["payload"]]
    assert D(ev["payload"]["dust"]) == D("-0.0000004")
    # One lot or more is a real difference: refused.
    with pytest.raises(rec.ReconcileError, match="the journal accounts for"):
        asyncio.run(rec.reconcile(session, start_qty=D("0.000001"), run_start_ms=t0))




async def test_exchange_simulator_charges_a_spot_buy_in_the_coin_and_refuses_an_oversell(btc_1h: Path) -> None:
    async with SimServer(sim_cfg(btc_1h, 150.0, history=300), modules(fee_rate=0.001)) as sim:
        acct = account_of(sim.state)
        acct.create({"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market",
                     "qty": "0.012345", "orderLinkId": "b1"})
        await until(lambda: acct.by_link["b1"].status == "Filled")
        buy = acct.execs[-1].wire()
        assert (buy["feeCurrency"], buy["execFee"], buy["execQty"]) == ("BTC", "0.000012345", "0.012345")
        assert acct.coins["BTC"] == D("0.012332655")
        assert acct.coins["USDT"] == D(10_000) - D(buy["execValue"])
        with pytest.raises(SimReject) as e:
            acct.create({"category": "spot", "symbol": "BTCUSDT", "side": "Sell", "orderType": "Market",
                         "qty": "0.012345", "orderLinkId": "s1"})
        assert e.value.code == 170131
        # A working limit sell locks its coins: selling them again is refused too.
        price = str(int(float(buy["execPrice"]) * 2))
        acct.create({"category": "spot", "symbol": "BTCUSDT", "side": "Sell", "orderType": "Limit",
                     "qty": "0.012", "price": price, "orderLinkId": "s2"})
        with pytest.raises(SimReject) as e:
            acct.create({"category": "spot", "symbol": "BTCUSDT", "side": "Sell", "orderType": "Market",
                         "qty": "0.001", "orderLinkId": "s3"})
        assert e.value.code == 170131
        (btc,) = [c for c in acct.wallet_wire()["coin"] if c["coin"] == "BTC"]
        assert (btc["walletBalance"], btc["locked"]) == ("0.012332655", "0.012")
        acct.cancel({"orderLinkId": "s2"})
        acct.create({"category": "spot", "symbol": "BTCUSDT", "side": "Sell", "orderType": "Market",
                     "qty": "0.012332", "orderLinkId": "s4"})
        await until(lambda: acct.by_link["s4"].status == "Filled")
        sell = acct.execs[-1].wire()
        assert sell["feeCurrency"] == "USDT" and sell["execFee"] == str(D(sell["execValue"]) * D("0.001"))
        assert acct.coins["BTC"] == D("0.000000655")


def test_migration_adds_fee_currency_to_existing_fills_and_back(tmp_path: Path) -> None:
    """A journal written before 0004 keeps its fills (their fees were quote-coin fees: ""), and the
    migration goes down again."""
    from alembic import command  # noqa: PLC0415
    from alembic.script import ScriptDirectory  # noqa: PLC0415
    from sqlalchemy import inspect, text  # noqa: PLC0415

    from storage.db import alembic_config, make_engine, upgrade  # noqa: PLC0415

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = alembic_config(engine)

    def migrate(fn, rev: str) -> None:  # type: ignore[no-untyped-def]
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            fn(cfg, rev)

    migrate(command.upgrade, "0003")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO runs (id, mode, status, strategy, symbol, timeframe, category, config, "
                          "initial_cash, started_at, updated_at, bars) VALUES ('r1', 'live', 'failed', 'sma', "
                          "'BTCUSDT', '1h', 'spot', '{}', '10000', '2024-01-01', '2024-01-01', 0)"))
        conn.execute(text("INSERT INTO orders (id, run_id, symbol, side, order_type, qty, status, filled_qty, "
                          "adopted, created_time, updated_time) VALUES ('o1', 'r1', 'BTCUSDT', 'Buy', 'Market', "
                          "'0.5', 'filled', '0.5', 0, 1, 1)"))
        conn.execute(text("INSERT INTO fills (exec_id, run_id, order_id, symbol, side, qty, price, fee, is_maker, "
                          "time) VALUES ('e1', 'r1', 'o1', 'BTCUSDT', 'Buy', '0.5', '40000', '20', 0, 1)"))
    assert upgrade(engine) == ScriptDirectory.from_config(cfg).get_current_head()
    (row,) = q.fills(engine, "r1")
    assert row["fee_currency"] == "" and q.total_fees(engine, "r1") == D(20)
    (f,) = run_snapshot(engine, "r1").fills
    assert not f.fee_in_base and f.held_change == D("0.5")
    migrate(command.downgrade, "0003")
    assert "fee_currency" not in {c["name"] for c in inspect(engine).get_columns("fills")}
