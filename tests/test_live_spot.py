"""Spot end to end on the exchange simulator, where (as on Bybit) a buy's fee is paid in the coin
bought: the bot books ``execQty - execFee``, its exits sell the holding rounded down to the lot,
no sell is ever refused for an insufficient balance, and journal and exchange agree on every
order, fill, fee currency and the coin balance. Live matches the backtest of the same candles
exactly (the simulated broker's spot mode follows the same rule), and a live bot SIGKILLed at
points of the order life cycle resumes every time and ends agreeing with the exchange."""

from __future__ import annotations

import os
import signal
import time
from decimal import Decimal
from pathlib import Path

import torch

from bot import app as core
from bot.live import WARMUP_MARGIN, RunOptions
from bot.timeutil import ms_to_iso
from broker.bybit_sim import SimConfig, SimServer
from broker.bybit_sim.private import account_of
from broker.bybit_sim.testing import sim_thread
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
    still_until_subscribed,
)
from tests.test_live_crash import Killer, _start

H = 3_600_000
A_INDEX = 400
N_BARS = 32
LOT = Decimal("0.000001")  # the simulator's spot BTCUSDT basePrecision
#: The venue's spot rules, for the backtest's simulated broker (the live bot reads them from the venue).
#: Buys take 95 % of the equity: a buy sized to all the cash at the decision close is refused
#: (170131) whenever the price ticks up before it arrives, which is not what these tests are about.
SPOT_RULES = ("market.category=spot", "market.qty_step=0.000001", "market.min_qty=0.000011",
              "market.tick_size=0.1", "market.min_notional=5", "risk.max_exposure=0.95")

torch.set_num_threads(1)


def _strip(rows: list[dict], *cols: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in cols} for r in rows]


def _no_balance_refusals(db, run_id: str) -> None:  # type: ignore[no-untyped-def]
    refused = [o for o in q.orders(db, run_id) if o["status"] == "rejected"]
    assert refused == [], [(o["id"], o["reject_reason"]) for o in refused]


async def test_spot_live_on_simulator_equals_backtest(btc_1h: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    set_keys(monkeypatch)
    probe = core.load_data(live_cfg("x", "x", "sqlite://"), str(btc_1h))
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    a = int(probe.time[A_INDEX])
    b = a + N_BARS * H
    async with SimServer(sim_cfg(btc_1h, 400.0, start=a - 3 * H), modules()) as sim:
        cfg = live_cfg(sim.rest_url, sim.ws_url, db_url, *SPOT_RULES)
        live = await core.live(cfg, date_from=ms_to_iso(a), date_to=ms_to_iso(b),
                               options=RunOptions(reconcile_every_s=3600, stream_check_s=0.1))
        acct = account_of(sim.state)
        db = core.open_journal_db(db_url)
        seen = check_consistency(db, live["run_id"], acct)
    fills = q.fills(db, live["run_id"])
    buys, sells = [f for f in fills if f["side"] == "Buy"], [f for f in fills if f["side"] == "Sell"]
    assert len(buys) >= 2 and len(sells) >= 2, fills
    assert all(f["fee_currency"] == "BTC" for f in buys) and all(f["fee_currency"] == "USDT" for f in sells)
    _no_balance_refusals(db, live["run_id"])
    # Every exit sold the whole holding rounded down to the lot: what is left is dust.
    if fills[-1]["side"] == "Sell":
        assert Decimal(0) < seen["positions"]["BTCUSDT"] < LOT
    strategy = core.build_strategy(cfg)
    w = strategy.warmup + WARMUP_MARGIN
    data = core.load_data(cfg, str(btc_1h), ms_to_iso(a - w * H), ms_to_iso(b))
    bt = core.backtest(cfg, data, strategy, db, show_progress=False, history=w)
    lv, bk = comparable_journal(db, live["run_id"]), comparable_journal(db, bt["run_id"])
    assert lv["decisions"] == bk["decisions"]
    assert _strip(lv["orders"], "exchange_order_id") == _strip(bk["orders"], "exchange_order_id")
    assert _strip(lv["fills"], "exec_id") == _strip(bk["fills"], "exec_id")
    assert lv["trades"] == bk["trades"] and lv["equity"] == bk["equity"]
    assert live["final_equity"] == bt["final_equity"]


KILLS = ("fill", "accept", "random")


def test_spot_sigkill_and_resume_never_oversells(btc_1h: Path, tmp_path: Path) -> None:
    killer = Killer()
    db_url = f"sqlite:///{tmp_path / 'live.db'}"
    log_file = tmp_path / "bot.log"
    env = dict(os.environ, BYBIT_API_KEY=KEY, BYBIT_API_SECRET=SECRET)
    with sim_thread(SimConfig(data=[str(btc_1h)], bar_ms=300.0, history=300), modules()) as sim:
        acct = account_of(sim.state)
        acct.on_accept = lambda o: killer.hit("accept", o.link_id)
        # Kill right after a sell executes: the restart must account for the buys' BTC fees.
        acct.before_exec_push = lambda e: killer.hit("fill", e.order.link_id) if e.order.side == "Sell" else None
        base = ["run", "--mode", "live", "--strategy", "sma", "--set", f"exchange.rest_url={sim.rest_url}",
                "--set", f"exchange.ws_url={sim.ws_url}", "--set", f"storage.url={db_url}",
                "--set", "market.category=spot", "--set", "risk.max_exposure=0.95",
                "--set", "strategy.params.fast=2", "--set", "strategy.params.slow=5",
                "--set", "exchange.timeout_s=2", "--json"]
        for i, mode in enumerate(KILLS):
            proc = _start(base + (["--resume"] if i else []), env, log_file)
            killer.arm(proc, mode)
            if mode == "random":
                time.sleep(11.0)  # start-up (imports) takes most of it
                killer.hit("random", "timer")
            assert killer.fired.wait(90), f"kill {i} ({mode}) never happened: {log_file.read_text()[-2000:]}"
            assert proc.wait(30) == -signal.SIGKILL
        end = (sim.state.now_ms() // H + 30) * H
        # The market stands still until the last start is on the stream: its 30 bars trade live
        # however slow the start-up (else a loaded machine left it a few bars and too few fills).
        with still_until_subscribed(sim):
            final = _start(base + ["--resume", "--to", ms_to_iso(end)], env, log_file)
        assert final.wait(120) == 0, log_file.read_text()[-3000:]
        db = core.open_journal_db(db_url)
        run = q.list_runs(db)[0]
        assert run["mode"] == "live" and run["category"] == "spot" and run["status"] == "completed"
        seen = check_consistency(db, run["id"], acct)
        events = [e["kind"] for e in q.events(db, run["id"])]
    # A kill may land inside a start-up, before that start journaled its resume (the timed one, on a
    # slow machine); the final start always resumes.
    assert events.count("live_start") == 1 and 1 <= events.count("live_resume") <= len(KILLS)
    _no_balance_refusals(db, run["id"])
    fills = q.fills(db, run["id"])
    assert sum(f["side"] == "Sell" for f in fills) >= 3 and seen["fills"] >= 6
    assert all(f["fee_currency"] == ("BTC" if f["side"] == "Buy" else "USDT") for f in fills)
    assert [k.split(":")[0] for k in killer.log] == list(KILLS)
