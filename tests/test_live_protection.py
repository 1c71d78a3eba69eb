"""Protective exits in paper and live, on the simulator: a paper run places and honours them
exactly as the backtest of the same bars does; a live run places them as the position's TP/SL
(``/v5/position/trading-stop``) and journals each triggered one as the exit of the decision that
set it, with its reason; a live bot SIGKILLed right after the venue took its TP/SL finds them
still there on ``--resume`` and reconciles them, then trades on and ends agreeing with the venue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot import app as core
from bot.config import load_config
from bot.live import WARMUP_MARGIN, RunOptions
from bot.protection import Protection
from bot.timeutil import ms_to_iso
from broker.bybit_sim import SimConfig, SimServer
from broker.bybit_sim.private import account_of
from broker.bybit_sim.testing import sim_thread
from broker.bybit_sim.wire import SimReject
from storage import queries as q
from storage.records import comparable_journal
from tests.live_helpers import (
    KEY,
    SECRET,
    check_consistency,
    live_cfg,
    modules,
    set_keys,
    sim_cfg,
    started_frozen,
    still_until_subscribed,
)

H = 3_600_000
A_INDEX = 400
#: Tight levels, so that BTCUSDT's hourly bars reach them within a few dozen bars.
EXITS = ("market.exits.stop_loss=0.004", "market.exits.take_profit=0.006", "market.exits.trailing_stop=0.005")
REASON = {"StopLoss": "stop_loss", "TakeProfit": "take_profit", "TrailingStop": "trailing_stop"}


def _exit_orders(db: Any, run_id: str) -> dict[str, dict[str, Any]]:
    return {o["id"]: o for o in q.orders(db, run_id) if o["exit_reason"]}


async def test_paper_on_simulator_honours_exits_as_the_backtest_does(btc_1h: Path, tmp_path: Path) -> None:
    n_bars = 120
    probe = core.load_data(load_config(None, []), str(btc_1h))
    a, b = int(probe.time[A_INDEX]), int(probe.time[A_INDEX + n_bars])
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    async with SimServer(SimConfig(data=[str(btc_1h)], bar_ms=12.0, start=a - 2 * H)) as sim:
        cfg = live_cfg(sim.rest_url, sim.ws_url, db_url, *EXITS)
        paper = await started_frozen(sim, db_url, "paper_start", core.paper(
            cfg, date_from=ms_to_iso(a), date_to=ms_to_iso(b)), at_ms=a)
    strategy = core.build_strategy(cfg)
    w = strategy.warmup + WARMUP_MARGIN
    db = core.open_journal_db(db_url)
    bt = core.backtest(cfg, core.load_data(cfg, str(btc_1h), ms_to_iso(a - w * H), ms_to_iso(b)), strategy, db,
                       show_progress=False, history=w)
    runs = {name: comparable_journal(db, s["run_id"]) for name, s in (("paper", paper), ("backtest", bt))}
    for table in ("decisions", "orders", "fills", "trades", "equity"):
        assert runs["paper"][table] == runs["backtest"][table], table
    reasons = {o["exit_reason"] for o in _exit_orders(db, paper["run_id"]).values()}
    assert len(reasons) >= 2, reasons  # the run met more than one kind of exit
    assert [e["payload"] for e in q.events(db, paper["run_id"], kind="protective_exit")] == \
        [{**e["payload"], "order_id": e["payload"]["order_id"].replace(bt["run_id"], paper["run_id"]),
          "decision_id": e["payload"]["decision_id"].replace(bt["run_id"], paper["run_id"])}
         for e in q.events(db, bt["run_id"], kind="protective_exit")]


def _venue_exits_journaled(db: Any, run_id: str, acct: Any) -> list[str]:
    """Every filled TP/SL order at the venue is a journaled exit of one of the run's decisions,
    with its reason, quantity and executions; returns the reasons."""
    journal = _exit_orders(db, run_id)
    fills = {f["exec_id"]: f for f in q.fills(db, run_id)}
    decisions = {d["id"] for d in q.decisions(db, run_id)}
    filled = [o for o in acct.orders.values() if o.conditional and o.status == "Filled"]
    assert set(journal) == {o.order_id for o in filled}
    for o in filled:
        j = journal[o.order_id]
        assert (j["exit_reason"], j["status"], j["filled_qty"]) == (REASON[o.stop_order_type], "filled", o.cum_qty)
        assert j["decision_id"] in decisions
        for e in (e for e in acct.execs if e.order is o):
            assert (fills[e.exec_id]["qty"], fills[e.exec_id]["price"]) == (e.qty, e.price)
    return [journal[o.order_id]["exit_reason"] for o in filled]


async def test_live_places_exits_as_position_tpsl_and_journals_them(btc_1h: Path, tmp_path: Path,
                                                                    monkeypatch) -> None:  # type: ignore[no-untyped-def]
    set_keys(monkeypatch)
    probe = core.load_data(load_config(None, []), str(btc_1h))
    a = int(probe.time[A_INDEX])
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    async with SimServer(sim_cfg(btc_1h, 400.0, start=a - 3 * H), modules()) as sim:
        cfg = live_cfg(sim.rest_url, sim.ws_url, db_url, *EXITS)
        live = await started_frozen(sim, db_url, "live_start", core.live(
            cfg, date_from=ms_to_iso(a), date_to=ms_to_iso(a + 40 * H),
            options=RunOptions(reconcile_every_s=3600, stream_check_s=0.1)), at_ms=a)
        acct = account_of(sim.state)
        db = core.open_journal_db(db_url)
        check_consistency(db, live["run_id"], acct)
        assert sim.state.stats["trading_stops"] >= 2
        reasons = _venue_exits_journaled(db, live["run_id"], acct)
    assert reasons, "no TP/SL triggered in 40 bars"
    set_events = q.events(db, live["run_id"], kind="protection_set")
    assert len(set_events) >= len(reasons)
    trades = [t for t in q.trades(db, live["run_id"]) if t["exit_reason"]]
    assert sorted(t["exit_reason"] for t in trades) == sorted(reasons)
    assert sum(live.get(f"{r}_exits", 0) for r in REASON.values()) == len(reasons)


@pytest.mark.parametrize(("category", "when"), [("linear", "after"), ("linear", "before"), ("spot", "after"),
                                              ("spot", "before")])
def test_sigkill_around_the_tpsl_then_resume(btc_1h: Path, tmp_path: Path, category: str, when: str) -> None:
    """``after``: killed once the venue holds the TP/SL (its answer lost): the resumed start finds
    them there (``on_venue``). ``before``: killed as the request arrives, which the venue then
    drops: the position is open without them, and the resumed start places them again. Spot:
    the same around the take-profit leg, the second conditional order: ``before`` leaves the
    stop leg alone on the venue, and the resumed start places the missing leg only."""
    db_url = f"sqlite:///{tmp_path / 'live.db'}"
    log_file = tmp_path / "bot.log"
    env = dict(os.environ, BYBIT_API_KEY=KEY, BYBIT_API_SECRET=SECRET)
    killed = threading.Event()
    with sim_thread(SimConfig(data=[str(btc_1h)], bar_ms=300.0, history=300), modules()) as sim:
        acct = account_of(sim.state)
        proc: list[subprocess.Popen[bytes]] = []
        spot = category == "spot"
        placed = acct.create if spot else acct.tpsl.set

        def set_then_kill(params: dict[str, Any]) -> Any:
            if spot and not params.get("orderFilter"):
                return placed(params)  # an ordinary order
            leg = str(params.get("orderLinkId", ""))[-2:]
            first = proc and not killed.is_set() and (not spot or leg == "-t")
            out = None
            if when == "after" or not first:
                out = placed(params)  # the venue holds the TP/SL; its answer never reaches the bot
            if first:
                sim.state.clock.pause_at(sim.state.now_ms())  # nothing moves while the bot is down
                os.kill(proc[0].pid, signal.SIGKILL)
                killed.set()
                if when == "before":
                    raise SimReject(10016, "Internal server error")  # the request is lost with the bot
            return out

        if spot:
            acct.create = set_then_kill  # type: ignore[method-assign]
        else:
            acct.tpsl.set = set_then_kill  # type: ignore[method-assign]
        base = ["run", "--mode", "live", "--strategy", "sma", "--set", f"exchange.rest_url={sim.rest_url}",
                "--set", f"exchange.ws_url={sim.ws_url}", "--set", f"storage.url={db_url}",
                "--set", "strategy.params.fast=2", "--set", "strategy.params.slow=5",
                "--set", "exchange.timeout_s=2", *[a for e in (*EXITS, *(SPOT if spot else ())) for a in ("--set", e)],
                "--json"]
        with log_file.open("ab") as fh:
            proc.append(subprocess.Popen([sys.executable, "-m", "bot", *base], env=env, stdout=fh, stderr=fh))
        assert killed.wait(120), log_file.read_text()[-3000:]
        assert proc[0].wait(30) == -signal.SIGKILL
        held = _held(acct, spot)  # on the venue while the bot is down
        if spot:
            assert set(held) == ({"-s", "-t"} if when == "after" else {"-s"}), held
        else:
            assert (held is None) == (when == "before")
        stops_before = _protections_sent(sim, spot)
        end = (sim.state.now_ms() // H + 30) * H
        with still_until_subscribed(sim), log_file.open("ab") as fh:
            final = subprocess.Popen([sys.executable, "-m", "bot", *base, "--resume", "--to", ms_to_iso(end)],
                                     env=env, stdout=fh, stderr=fh)
        # The market stops once the bar that ends the run (it opens at --to) has closed: a TP/SL
        # left on the venue would go on guarding the position after the bot is gone.
        sim.state.clock.pause_at(end + H)
        assert final.wait(180) == 0, log_file.read_text()[-3000:]
        db = core.open_journal_db(db_url)
        run = q.list_runs(db)[0]
        check_consistency(db, run["id"], acct)
        if not spot:
            _venue_exits_journaled(db, run["id"], acct)
        stops_after = _protections_sent(sim, spot)
        rejects = dict(sim.state.stats)
    assert run["status"] == "completed"
    recs = [e["payload"] for e in q.events(db, run["id"], kind="reconcile")]
    first = recs[1]  # the resumed start's reconciliation
    saved = [e["payload"] for e in q.events(db, run["id"], kind="protection_set")][0]
    if when == "before":
        assert first["protection"]["state"] == "placed_again", first
        assert first["protection"]["journal"]["stop_loss"] == saved["stop_loss"]
        assert stops_after > stops_before  # sent again by the resumed bot
        if spot:  # only the missing take-profit leg: the stop leg was not sent twice
            assert rejects.get("reject_110072", 0) == 0
        return
    assert first["protection"]["state"] == "on_venue", first
    venue = first["protection"]["venue"]
    found = tuple(None if venue[k] is None else Decimal(venue[k]) for k in ("stop_loss", "take_profit",
                                                                             "trailing_distance"))
    if spot:  # the legs' triggers: the tighter of stop-loss and trail, and the target
        assert held == {"-s": Protection.from_payload(saved).stop()[0], "-t": found[1]}, (held, found)
        return
    assert found == held.levels()
    # The levels it found are the journal's: set by the decision before the kill.
    assert saved["stop_loss"] is not None and held.stop_loss == Decimal(saved["stop_loss"])


def _held(acct: Any, spot: bool) -> Any:
    """What guards the position on the venue: the position's TP/SL (linear), the waiting stop
    legs' triggers by leg (spot); None: nothing."""
    if not spot:
        lv = acct.tpsl.by_symbol.get("BTCUSDT")
        return lv.p if lv is not None else None
    legs = {o.link_id[-2:]: o.trigger_price for o in _spot_legs(acct) if o.status == "Untriggered"}
    return legs or None


def _protections_sent(sim: Any, spot: bool) -> int:
    return sim.state.stats["orders_created"] if spot else sim.state.stats["trading_stops"]


SPOT = ("market.category=spot", "market.qty_step=0.000001", "market.min_qty=0.000011", "market.tick_size=0.1",
        "market.min_notional=5", "risk.max_exposure=0.95")
SPOT_REASON = {"-s": ("stop_loss", "trailing_stop"), "-t": ("take_profit",)}


def _spot_legs(acct: Any) -> list[Any]:
    return [o for o in acct.orders.values() if o.category == "spot" and o.stop_order_type == "Stop"]


async def test_live_spot_places_exits_as_conditional_orders_and_journals_them(btc_1h: Path, tmp_path: Path,
                                                                              monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Spot: each protection is a stop leg and a take-profit leg (StopOrder sells of the holding);
    the trail amends the stop leg's trigger; a filled leg is the journaled exit of the decision
    that set it, with its reason, and the other leg is cancelled: no leg outlives its holding."""
    set_keys(monkeypatch)
    probe = core.load_data(load_config(None, []), str(btc_1h))
    a = int(probe.time[A_INDEX])
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    async with SimServer(sim_cfg(btc_1h, 400.0, start=a - 3 * H), modules()) as sim:
        cfg = live_cfg(sim.rest_url, sim.ws_url, db_url, *EXITS, *SPOT)
        live = await started_frozen(sim, db_url, "live_start", core.live(
            cfg, date_from=ms_to_iso(a), date_to=ms_to_iso(a + 40 * H),
            options=RunOptions(reconcile_every_s=3600, stream_check_s=0.1)), at_ms=a)
        acct = account_of(sim.state)
        db = core.open_journal_db(db_url)
        check_consistency(db, live["run_id"], acct)
        legs = _spot_legs(acct)
        journal = _exit_orders(db, live["run_id"])
        filled = [o for o in legs if o.status == "Filled"]
        assert filled, "no spot stop leg triggered in 40 bars"
        assert set(journal) == {o.link_id for o in filled}
        for o in filled:
            assert journal[o.link_id]["exit_reason"] in SPOT_REASON[o.link_id[-2:]]
            assert journal[o.link_id]["filled_qty"] == o.cum_qty
        # Nothing waits on the venue for a holding that is gone; nothing was rejected for the coin.
        waiting = [o for o in legs if o.status == "Untriggered"]
        held = acct.coins.get("BTC", Decimal(0))
        assert all(o.qty <= held for o in waiting), (waiting, held)
        assert not [o for o in legs if o.status == "Rejected"]
        assert sim.state.stats["amends"] >= 1  # the trail moved the stop leg
    trades = [t for t in q.trades(db, live["run_id"]) if t["exit_reason"]]
    assert sorted(t["exit_reason"] for t in trades) == sorted(j["exit_reason"] for j in journal.values())
