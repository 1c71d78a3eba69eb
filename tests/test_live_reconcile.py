"""Reconciliation on restart, as tables of "the exchange says X, the journal says Y, after the
start both say Z" (plus one case no rule resolves, which must stop the bot with a clear line)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pybit.unified_trading as put
import pytest
from sqlalchemy import update

from bot import app as core
from bot.domain import Order, OrderStatus, OrderType, Side
from bot.live import RunOptions
from bot.reconcile import ReconcileError
from bot.timeutil import ms_to_iso
from broker.bybit_sim import SimServer
from broker.bybit_sim.private import account_of
from storage import queries as q
from storage import schema as s
from storage.journal import Journal
from tests.live_helpers import KEY, SECRET, check_consistency, live_cfg, modules, set_keys, sim_cfg

H = 3_600_000
OPTS = RunOptions(stream_check_s=0.1, reconcile_every_s=3600)


def _interrupt(db, run_id: str) -> None:  # type: ignore[no-untyped-def]
    """Make a completed run look like one that was killed (resumable)."""
    with db.begin() as conn:
        conn.execute(update(s.runs).where(s.runs.c.id == run_id).values(status="failed"))


async def test_never_sent_resolved_foreign_order_adopted(btc_1h: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    set_keys(monkeypatch)
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    async with SimServer(sim_cfg(btc_1h, 200.0, history=300), modules()) as sim:
        cfg = live_cfg(sim.rest_url, sim.ws_url, db_url)
        first = await core.live(cfg, date_to=ms_to_iso((sim.state.now_ms() // H + 4) * H), options=OPTS)
        rid = first["run_id"]
        db = core.open_journal_db(db_url)
        _interrupt(db, rid)
        # Journal: an order intent written ahead, then the process died before sending it.
        ghost = f"{rid}-dead-1-0"
        j = Journal(db, rid)
        j.record_order(Order(ghost, "BTCUSDT", Side.BUY, Decimal("0.01"), OrderType.MARKET, OrderStatus.CREATED,
                             0, 0))
        j.flush()
        # Exchange: a resting limit order placed by hand (an id the bot never made).
        http = put.HTTP(testnet=True, api_key=KEY, api_secret=SECRET, max_retries=1)
        http.endpoint = sim.rest_url
        await asyncio.get_running_loop().run_in_executor(None, lambda: http.place_order(
            category="linear", symbol="BTCUSDT", side="Buy", orderType="Limit", qty="0.01", price="1000",
            orderLinkId="manual-1"))
        second = await core.live(cfg, resume=True, date_to=ms_to_iso((sim.state.now_ms() // H + 3) * H), options=OPTS)
        assert second["run_id"] == rid
        orders = {o["id"]: o for o in q.orders(db, rid)}
        check_consistency(db, rid, account_of(sim.state))
    assert orders[ghost]["status"] == "rejected" and "never sent" in orders[ghost]["reject_reason"]
    assert orders["manual-1"]["adopted"] and orders["manual-1"]["status"] == "accepted"
    rec = [e["payload"] for e in q.events(db, rid) if e["kind"] == "reconcile"][-1]
    assert rec["resolved"] == [ghost] and rec["adopted"] == ["manual-1"]
    # While the adopted order works, the engine never stacks an order on top of it.
    after = [d for d in q.decisions(db, rid) if d["status"] == "order" and d["bar_time"] > max(
        int(e["time"]) for e in q.events(db, rid) if e["kind"] == "reconcile")]
    assert after == []


async def test_journal_fill_the_exchange_never_had_stops_the_bot(btc_1h: Path, tmp_path: Path,
                                                                  monkeypatch) -> None:  # type: ignore[no-untyped-def]
    set_keys(monkeypatch)
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    async with SimServer(sim_cfg(btc_1h, 200.0, history=300), modules()) as sim:
        cfg = live_cfg(sim.rest_url, sim.ws_url, db_url)
        first = await core.live(cfg, date_to=ms_to_iso((sim.state.now_ms() // H + 3) * H), options=OPTS)
        rid = first["run_id"]
        db = core.open_journal_db(db_url)
        _interrupt(db, rid)
        j = Journal(db, rid)
        oid = f"{rid}-fake-1-0"
        j.record_order(Order(oid, "BTCUSDT", Side.BUY, Decimal("0.5"), OrderType.MARKET, OrderStatus.FILLED, 0, 0,
                             filled_qty=Decimal("0.5")))
        from bot.domain import Fill  # noqa: PLC0415

        j.record_fill(Fill("not-on-the-venue", oid, "BTCUSDT", Side.BUY, Decimal("0.5"), Decimal("40000"),
                           Decimal("0"), sim.state.now_ms()))
        j.flush()
        with pytest.raises(ReconcileError, match="reconciliation failed: the exchange holds"):
            await core.live(cfg, resume=True, date_to=ms_to_iso((sim.state.now_ms() // H + 3) * H), options=OPTS)
    assert q.resolve_run(db, rid)["status"] == "failed"
