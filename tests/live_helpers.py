"""Shared set-up for the live-trading tests: the simulator with its private half, configs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from bot.config import Config, load_config
from bot.domain import Side, fee_in_base, held_change
from broker.bybit_sim import PublicMarketModule, SimConfig
from broker.bybit_sim.account import AccountConfig
from broker.bybit_sim.private import PrivateModule
from broker.bybit_sim.private_rest import PrivateFaults
from storage import queries as q

KEY, SECRET = "TESTKEY0123456789", "TESTSECRET0123456789abcdefghijklmnop"


def modules(slippage_bps: float = 0.0, faults: PrivateFaults | None = None, **acct: Any) -> list[Any]:
    return [PublicMarketModule(),
            PrivateModule(keys={KEY: SECRET}, account=AccountConfig(slippage_bps=slippage_bps, **acct),
                          faults=faults or PrivateFaults())]


def sim_cfg(data: Path, bar_ms: float, **kw: Any) -> SimConfig:
    return SimConfig(data=[str(data)], bar_ms=bar_ms, **kw)


def live_cfg(rest: str, ws: str, db_url: str, *extra: str) -> Config:
    return load_config(None, [f"exchange.rest_url={rest}", f"exchange.ws_url={ws}", f"storage.url={db_url}",
                              "strategy.name=sma", "strategy.params.fast=3", "strategy.params.slow=8",
                              "logging.level=warning", "exchange.timeout_s=2", *extra])


def set_keys(monkeypatch: Any) -> None:
    monkeypatch.setenv("BYBIT_API_KEY", KEY)
    monkeypatch.setenv("BYBIT_API_SECRET", SECRET)


FLIP = '''
from bot.domain import Decision
from strategies.base import Strategy, StrategyParams


class Flip(Strategy):
    """All in on odd hours, flat on even ones: every bar wants a new position."""

    name = "flip"
    Params = StrategyParams

    def on_bar(self, bars):
        return Decision(bars.symbol, bars.last_time(), float((bars.last_time() // 3_600_000) % 2))
'''


#: A new target on every bar, never one an earlier bar of the last few dozen had: the golden
#: ratio's fractional parts (consecutive ones at least 0.03 of equity apart for up to 20 bars).
DRIFT = '''
from bot.domain import Decision
from strategies.base import Strategy, StrategyParams


class Drift(Strategy):
    """Each bar its own share of equity, whatever the bars before wanted."""

    name = "drift"
    Params = StrategyParams

    def on_bar(self, bars):
        return Decision(bars.symbol, bars.last_time(), ((bars.last_time() // 3_600_000) * 0.6180339887) % 1.0)
'''


async def flip_live(sim: Any, tmp_path: Path, db_url: str, bars: int = 30,
                    strategy: tuple[str, str] = (FLIP, "Flip")) -> dict[str, Any]:
    """``bot run --mode live`` in process on ``sim`` for ``bars`` bars with the Flip strategy (or
    ``strategy``: its source and class, a strategy file of the user's, in ``tmp_path``), no
    periodic venue check; its summary."""
    from bot import app as core  # noqa: PLC0415 - the composition root, only for this run
    from bot.live import RunOptions  # noqa: PLC0415
    from bot.timeutil import ms_to_iso  # noqa: PLC0415

    source, cls = strategy
    (tmp_path / "flip.py").write_text(source)
    cfg = load_config(None, [f"exchange.rest_url={sim.rest_url}", f"exchange.ws_url={sim.ws_url}",
                             f"storage.url={db_url}", f"strategy.name={tmp_path / 'flip.py'}:{cls}",
                             "logging.level=warning", "exchange.timeout_s=2"])
    hour = 3_600_000
    end = (sim.state.now_ms() // hour + bars) * hour
    return await core.live(cfg, date_to=ms_to_iso(end), options=RunOptions(reconcile_every_s=3600, stream_check_s=0.1))


async def until(pred: Callable[[], bool], what: str = "the condition", timeout_s: float = 60.0) -> None:
    """Returns as soon as ``pred`` holds; generous, since a loaded 2-core machine may need seconds."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.02)


async def started_frozen(sim: Any, db_url: str, kind: str, run: Coroutine[Any, Any, dict[str, Any]],
                         at_ms: int, timeout: float = 120.0) -> dict[str, Any]:
    """Run ``run`` (an in-process paper or live run on ``sim`` from bar ``at_ms``) with the
    market frozen from ``at_ms`` until the run has journaled its start event ``kind`` and its
    feed has subscribed to the klines and asked the venue's time (for its REST catch-up): a
    slow start-up never turns the first bars into a backfill (whose older bars are caught up
    without trading)."""
    clock, stats = sim.state.clock, sim.state.stats
    clock.pause_at(at_ms)
    task = asyncio.ensure_future(run)
    eng = create_engine(db_url)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        started, subscribed, asked = False, stats["kline_subscriptions"], 0
        while not task.done() and asyncio.get_running_loop().time() < deadline:
            if not started:
                try:
                    with eng.connect() as conn:
                        started = bool(conn.execute(text("SELECT count(*) FROM events WHERE kind = :k"),
                                                    {"k": kind}).scalar())
                except Exception:  # noqa: BLE001, S110 - the journal may not exist yet
                    pass
                asked = stats["time_requests"]
            elif stats["kline_subscriptions"] > subscribed and stats["time_requests"] > asked:
                break  # the feed subscribed and asked the time for its REST catch-up: the market may move
            await asyncio.sleep(0.01)
    finally:
        eng.dispose()
        clock.resume()
    return await task


@contextlib.contextmanager
def still_until_subscribed(sim: Any, timeout_s: float = 180.0) -> Iterator[None]:
    """The market of ``sim`` (a simulator in this process) stands still from now until a bot
    started inside the block (a subprocess, say) has subscribed to the klines and asked the
    venue's time: however slow its start on a loaded machine, the bars after the block trade live
    instead of arriving as catch-up bars (which never trade)."""
    clock, stats = sim.state.clock, sim.state.stats
    clock.pause_at(sim.state.now_ms())
    subscribed, asked = stats["kline_subscriptions"], stats["time_requests"]
    try:
        yield
        deadline = time.monotonic() + timeout_s
        while not (stats["kline_subscriptions"] > subscribed and stats["time_requests"] > asked):
            assert time.monotonic() < deadline, "the bot never subscribed to the klines"
            time.sleep(0.01)
    finally:
        clock.resume()


def check_consistency(db: Any, run_id: str, account: Any) -> dict[str, Any]:
    """Exchange and journal agree: orders, fills (by exec id), position. Returns what it compared."""
    prefix = f"{run_id}-"
    venue_orders = {o.link_id: o for o in account.orders.values() if o.link_id.startswith(prefix)}
    journal_orders = {o["id"]: o for o in q.orders(db, run_id)}
    sent = {k: v for k, v in journal_orders.items() if k.startswith(prefix)
            and not (v["status"] == "rejected" and k not in venue_orders)}
    assert set(venue_orders) == set(sent), (sorted(venue_orders), sorted(sent))
    for cid, o in venue_orders.items():
        j = journal_orders[cid]
        assert j["qty"] == o.qty and j["side"] == o.side, cid
        if o.status == "Filled":
            assert j["status"] == "filled" and j["filled_qty"] == o.cum_qty, (cid, j["status"])
        elif o.status in ("Cancelled", "PartiallyFilledCanceled"):
            assert j["status"] == "cancelled" and j["filled_qty"] == o.cum_qty, (cid, j["status"], j["filled_qty"])
        if o.cum_qty and not o.is_open:  # filled in one piece or several: the journal's average is the venue's
            assert j["avg_fill_price"] == o.cum_value / o.cum_qty, (cid, j["avg_fill_price"], o.cum_value / o.cum_qty)
    venue_execs = {e.exec_id: e for e in account.execs if e.order.link_id.startswith(prefix)}
    all_fills = {f["exec_id"]: f for f in q.fills(db, run_id)}
    journal_fills = {k: f for k, f in all_fills.items() if f["order_id"].startswith(prefix)}
    assert set(venue_execs) == set(journal_fills)
    for eid, e in venue_execs.items():
        f = journal_fills[eid]
        assert (f["qty"], f["price"], f["fee"], f["fee_currency"], f["order_id"]) == \
            (e.qty, e.price, e.fee, e.fee_currency, e.order.link_id)
    positions = {}
    for sym in {f["symbol"] for f in all_fills.values()} | set(account.books):
        # Linear: the position; spot: the base coin's wallet balance (a buy's fee was paid in it).
        book, m = account.books.get(sym), account.state.market(sym)
        spot = any(o.category == "spot" for o in account.orders.values() if o.symbol == sym)
        positions[sym] = account.coins.get(m.base, 0) if spot else book.size if book is not None else 0
        journal_pos = sum((held_change(Side(f["side"]), f["qty"], f["fee"], fee_in_base(sym, f["fee_currency"]))
                           for f in all_fills.values() if f["symbol"] == sym), Decimal(0))
        assert positions[sym] == journal_pos, (sym, positions[sym], journal_pos)
    # One order per market and decision bar at most: a restart never sends a bar's order twice.
    bars = [tuple(cid.rsplit("-", 3)[-3:-1]) for cid in venue_orders]
    assert len(bars) == len(set(bars))
    return {"orders": len(venue_orders), "fills": len(venue_execs), "position": positions.get("BTCUSDT", 0),
            "positions": positions}
