"""Leverage live, on the simulator: a live linear run sets ``market.leverage`` on the venue
(``POST /v5/position/set-leverage``), journals it, and a leveraged long that the replay drives
past its liquidation price is liquidated by the venue (broker/margin.py's rule: a BustTrade at
the bankruptcy price), which the journal books as a fill with reason ``liquidation`` and its
event, ending with the venue's position. The venue refuses a leverage above the instrument's
maximum with Bybit's code, and the run stops on one line before it trades."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pybit.unified_trading as put
import pytest
from pybit.exceptions import InvalidRequestError

from bot import app as core
from bot.config import load_config
from bot.errors import ConfigError
from bot.live import RunOptions
from bot.timeutil import ms_to_iso
from broker.bybit_sim import SimServer
from broker.bybit_sim.private import account_of
from storage import queries as q
from tests.live_helpers import KEY, SECRET, check_consistency, modules, set_keys, sim_cfg, started_frozen, until

H = 3_600_000
T0 = 1_700_006_400_000
WARM = 60  # flat bars before the first traded one (the warm-up the live start fetches)
A = T0 + WARM * H

HOLD = '''
from bot.domain import Decision
from strategies.base import Strategy, StrategyParams


class Hold(Strategy):
    """Long, all the time."""

    name = "hold"
    Params = StrategyParams

    def on_bar(self, bars):
        return Decision(bars.symbol, bars.last_time(), 1.0)
'''


def _crash_file(tmp_path: Path, low: float = 26000.0, then: float = 28000.0) -> Path:
    """Flat at 30000; the long opens at bar A+1's open; bar A+2 falls to ``low`` (26000: past the
    10x long's liquidation price 27150 = 30000 - (3000 - 150)), closes at ``then``, stays there."""
    flat, after = (30000.0,) * 4, (then,) * 4
    rows = [flat] * (WARM + 2) + [(30000.0, 30000.0, low, then)] + [after] * 5
    path = tmp_path / "bybit_BTCUSDT_1h.csv"
    path.write_text("timestamp,open,high,low,close,volume\n" + "".join(
        f"{T0 + i * H},{o},{h},{lo},{c},10\n" for i, (o, h, lo, c) in enumerate(rows)))
    return path


def _http(url: str) -> put.HTTP:
    h = put.HTTP(testnet=True, api_key=KEY, api_secret=SECRET, max_retries=1, retry_codes={-1})
    h.endpoint = url
    return h


async def _call(fn, **kw):  # type: ignore[no-untyped-def]
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(**kw))


def _cfg(sim: SimServer, tmp_path: Path, db_url: str, leverage: str) -> object:
    (tmp_path / "hold.py").write_text(HOLD)
    return load_config(None, [f"exchange.rest_url={sim.rest_url}", f"exchange.ws_url={sim.ws_url}",
                              f"storage.url={db_url}", f"strategy.name={tmp_path / 'hold.py'}:Hold",
                              f"market.leverage={leverage}", "logging.level=warning", "exchange.timeout_s=2"])


async def test_live_sets_the_leverage_and_the_venue_liquidates(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    set_keys(monkeypatch)
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    # The venue's account starts at 1x, so the run's 10x is a change it makes.
    async with SimServer(sim_cfg(_crash_file(tmp_path), 300.0, start=A - 3 * H), modules(leverage=1.0)) as sim:
        cfg = _cfg(sim, tmp_path, db_url, "10")
        live = await started_frozen(sim, db_url, "live_start", core.live(
            cfg, date_from=ms_to_iso(A), date_to=ms_to_iso(A + 5 * H),
            options=RunOptions(reconcile_every_s=3600, stream_check_s=0.1)), at_ms=A)
        acct = account_of(sim.state)
        pos = (await _call(_http(sim.rest_url).get_positions, category="linear", symbol="BTCUSDT"))["result"]["list"][0]
        db = core.open_journal_db(db_url)
        compared = check_consistency(db, live["run_id"], acct)
    assert pos["leverage"] == "10"
    (ev,) = q.events(db, live["run_id"], kind="leverage_set")
    assert ev["payload"] == {"symbol": "BTCUSDT", "leverage": "10", "venue": "set"}
    (bust,) = [e for e in acct.execs if e.exec_type == "BustTrade"]
    assert bust.order.side == "Sell" and bust.order.link_id == "" and bust.price == Decimal("27000")
    before = [e for e in acct.execs if e.exec_type == "Trade" and e.seq < bust.seq]
    assert {e.price for e in before} == {Decimal(30000)}  # bankruptcy price: entry x (1 - 1/10)
    assert bust.qty == sum((e.qty if e.order.side == "Buy" else -e.qty for e in before), Decimal(0))  # all of it
    (liq,) = [f for f in q.fills(db, live["run_id"]) if f["reason"] == "liquidation"]
    assert (liq["exec_id"], liq["qty"], liq["price"], liq["fee"], liq["side"]) == \
        (bust.exec_id, bust.qty, bust.price, bust.fee, "Sell")
    (event,) = q.events(db, live["run_id"], kind="liquidation")
    assert event["payload"]["order_id"] == liq["order_id"] == bust.order.order_id
    assert live["liquidations"] == 1
    # The journal's position (every fill, the liquidation's included) is the venue's: the bot
    # bought again after it.
    assert compared["position"] == acct.books["BTCUSDT"].size > 0


async def test_the_venue_refuses_a_leverage_above_its_maximum(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    set_keys(monkeypatch)
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    async with SimServer(sim_cfg(_crash_file(tmp_path), 300.0, start=A - 3 * H), modules()) as sim:
        h = _http(sim.rest_url)
        base = {"category": "linear", "symbol": "BTCUSDT"}
        codes = []
        for buy, sell in (("5", "5"), ("5", "5"), ("101", "101"), ("0.5", "0.5"), ("5", "6"), ("5.001", "5.001")):
            try:
                await _call(h.set_leverage, **base, buyLeverage=buy, sellLeverage=sell)
                codes.append(0)
            except InvalidRequestError as exc:
                codes.append(int(exc.status_code))
        assert codes == [0, 110043, 110013, 10001, 10001, 10001]
        assert account_of(sim.state).leverage.of("BTCUSDT") == Decimal(5)
        with pytest.raises(ConfigError) as e:
            await core.live(_cfg(sim, tmp_path, db_url, "150"), date_to=ms_to_iso(A + 5 * H),
                            options=RunOptions(reconcile_every_s=3600, stream_check_s=0.1))
    line = str(e.value)
    assert e.value.exit_code == 2 and "\n" not in line
    assert line.startswith("BTCUSDT: the venue refuses market.leverage 150: set leverage: Bybit retCode 110013")
    assert not account_of(sim.state).orders


async def test_the_simulator_takes_the_margin_terms_of_the_instrument_file(tmp_path: Path) -> None:
    """``FILE.instrument.json``'s ``max_leverage`` and MMR (what a backtest of the file uses) are
    the simulator's: instruments-info's maxLeverage, set-leverage's limit, the liquidation price."""
    data = _crash_file(tmp_path, low=30000.0, then=30000.0)  # flat: the position stays open
    data.with_name(data.name + ".instrument.json").write_text(json.dumps(
        {"symbol": "BTCUSDT", "tick_size": "0.1", "qty_step": "0.001", "min_qty": "0.001", "min_notional": "5",
         "max_leverage": "25", "maintenance_margin_rate": "0.01"}))
    async with SimServer(sim_cfg(data, 300.0, start=A - 3 * H), modules()) as sim:
        h = _http(sim.rest_url)
        info = (await _call(h.get_instruments_info, category="linear", symbol="BTCUSDT"))["result"]["list"][0]
        assert info["leverageFilter"]["maxLeverage"] == "25.00"
        with pytest.raises(InvalidRequestError) as e:
            await _call(h.set_leverage, category="linear", symbol="BTCUSDT", buyLeverage="30", sellLeverage="30")
        assert int(e.value.status_code) == 110013
        await _call(h.set_leverage, category="linear", symbol="BTCUSDT", buyLeverage="25", sellLeverage="25")
        sim.state.clock.pause_at(A)
        await _call(h.place_order, category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="1",
                    orderLinkId="entry-1")
        sim.state.clock.resume()
        acct = account_of(sim.state)
        await until(lambda: bool(acct.books.get("BTCUSDT") and acct.books["BTCUSDT"].size), "the entry fill")
        pos = (await _call(h.get_positions, category="linear", symbol="BTCUSDT"))["result"]["list"][0]
    # 30000 - (1200 - 300) / 1 with MMR 1 %; bankruptcy 30000 x (1 - 1/25)
    assert (pos["leverage"], pos["liqPrice"], pos["bustPrice"], pos["positionIM"]) == ("25", "29100", "28800", "1200")


async def test_a_resumed_live_run_sets_the_leverage_again(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Stopped (SIGTERM) and resumed, the run sets its leverage on the venue again before it
    trades: the venue already has it (110043: success), journaled as ``unchanged``."""
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from bot.feeds.bybit import BybitFeed  # noqa: PLC0415

    set_keys(monkeypatch)
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    sent: list[int] = []

    class Terminating(BybitFeed):
        def _deliver(self, c):  # type: ignore[no-untyped-def]
            super()._deliver(c)
            if c.open_time == A + H and not sent:
                sent.append(c.open_time)
                os.kill(os.getpid(), signal.SIGTERM)  # handled by the run's signal handler

    data = _crash_file(tmp_path, low=30000.0, then=30000.0)
    async with SimServer(sim_cfg(data, 300.0, start=A - 3 * H), modules(leverage=1.0)) as sim:
        cfg = _cfg(sim, tmp_path, db_url, "10")
        opts = RunOptions(reconcile_every_s=3600, stream_check_s=0.1)
        first = await started_frozen(sim, db_url, "live_start", core.live(
            cfg, date_from=ms_to_iso(A), date_to=ms_to_iso(A + 5 * H),
            options=RunOptions(reconcile_every_s=3600, stream_check_s=0.1, feed_factory=Terminating)), at_ms=A)
        db = core.open_journal_db(db_url)
        assert sent and q.resolve_run(db, first["run_id"])["status"] == "stopped"
        resumed = await core.live(cfg, run_id=first["run_id"], options=opts)
        acct = account_of(sim.state)
        check_consistency(db, resumed["run_id"], acct)
    assert [e["payload"]["venue"] for e in q.events(db, first["run_id"], kind="leverage_set")] == ["set", "unchanged"]
    assert acct.leverage.of("BTCUSDT") == Decimal(10) and sim.state.stats["reject_110043"] == 1
