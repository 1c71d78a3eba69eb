"""Partial fills end to end on the exchange simulator, which (as Bybit does) fills an order in
several executions, each pushed on its own, and cancels what an IOC market order on a thin bar
could not fill (spot: PartiallyFilledCanceled; linear: Cancelled with cumExecQty > 0). The live
bot books every piece by its execution id; journal and exchange agree on every order (status,
filled qty, average price), every fill and the position, linear and spot, and after a SIGKILL
between two executions of one order followed by ``--resume``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import torch

from bot import app as core
from bot.errors import ExchangeError
from bot.live import RunOptions
from bot.timeutil import ms_to_iso
from broker.bybit import BybitHttp
from broker.bybit_sim import SimConfig, SimServer
from broker.bybit_sim.private import account_of
from broker.bybit_sim.private_rest import PrivateFaults
from broker.bybit_sim.testing import sim_thread
from storage import queries as q
from tests.live_helpers import (
    KEY,
    SECRET,
    check_consistency,
    flip_live,
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
SPOT = ("market.category=spot", "risk.max_exposure=0.95")

torch.set_num_threads(1)


def _pieces(acct: Any, run_id: str) -> dict[str, int]:
    """Executions per venue order of the run."""
    out: dict[str, int] = {}
    for e in acct.execs:
        if e.order.link_id.startswith(f"{run_id}-"):
            out[e.order.link_id] = out.get(e.order.link_id, 0) + 1
    return out


@pytest.mark.parametrize("category", ["linear", "spot"])
async def test_live_with_partial_fills_agrees_with_the_exchange(category: str, btc_1h: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    set_keys(monkeypatch)
    probe = core.load_data(live_cfg("x", "x", "sqlite://"), str(btc_1h))
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    a = int(probe.time[A_INDEX])
    b = a + N_BARS * H
    async with SimServer(sim_cfg(btc_1h, 400.0, start=a - 3 * H), modules(partial_fills=3, thin_every=3)) as sim:
        extra = SPOT if category == "spot" else ()
        cfg = live_cfg(sim.rest_url, sim.ws_url, db_url, "strategy.params.fast=2", "strategy.params.slow=5", *extra)
        live = await core.live(cfg, date_from=ms_to_iso(a), date_to=ms_to_iso(b),
                               options=RunOptions(reconcile_every_s=3600, stream_check_s=0.1))
        acct = account_of(sim.state)
        db = core.open_journal_db(db_url)
        seen = check_consistency(db, live["run_id"], acct)
        pieces = _pieces(acct, live["run_id"])
        venue = {o.link_id: o for o in acct.orders.values() if o.link_id in pieces}
    assert q.list_runs(db)[0]["status"] == "completed"
    assert seen["orders"] >= 4 and max(pieces.values()) == 3, pieces
    cut = [cid for cid, o in venue.items() if o.status in ("Cancelled", "PartiallyFilledCanceled")]
    assert cut, "no order met a thin bar"
    assert {venue[c].status for c in cut} == {"PartiallyFilledCanceled" if category == "spot" else "Cancelled"}
    journal = {o["id"]: o for o in q.orders(db, live["run_id"])}
    for cid in cut:
        assert journal[cid]["status"] == "cancelled" and 0 < journal[cid]["filled_qty"] < journal[cid]["qty"]
    # Every piece of an order is one fill row; the order's filled qty is their sum.
    fills = q.fills(db, live["run_id"])
    for cid, n in pieces.items():
        mine = [f for f in fills if f["order_id"] == cid]
        assert len(mine) == n and sum((f["qty"] for f in mine), Decimal(0)) == journal[cid]["filled_qty"]


def test_sigkill_between_two_executions_of_one_order_then_resume(btc_1h: Path, tmp_path: Path) -> None:
    killer = Killer()
    db_url = f"sqlite:///{tmp_path / 'live.db'}"
    log_file = tmp_path / "bot.log"
    env = dict(os.environ, BYBIT_API_KEY=KEY, BYBIT_API_SECRET=SECRET)
    with sim_thread(SimConfig(data=[str(btc_1h)], bar_ms=300.0, history=300), modules(partial_fills=3)) as sim:
        acct = account_of(sim.state)
        # Kill right before the second execution of an order is pushed: the venue has booked it
        # (and the third follows at once), the bot has seen the first one at most.
        acct.before_exec_push = lambda e: killer.hit("second", e.order.link_id) if e.order.cum_qty > e.qty else None
        base = ["run", "--mode", "live", "--strategy", "sma", "--set", f"exchange.rest_url={sim.rest_url}",
                "--set", f"exchange.ws_url={sim.ws_url}", "--set", f"storage.url={db_url}",
                "--set", "strategy.params.fast=2", "--set", "strategy.params.slow=5",
                "--set", "exchange.timeout_s=2", "--json"]
        for i in range(2):
            proc = _start(base + (["--resume"] if i else []), env, log_file)
            killer.arm(proc, "second")
            assert killer.fired.wait(90), f"kill {i} never happened: {log_file.read_text()[-2000:]}"
            assert proc.wait(30) == -signal.SIGKILL
        end = (sim.state.now_ms() // H + 20) * H
        with still_until_subscribed(sim):
            final = _start(base + ["--resume", "--to", ms_to_iso(end)], env, log_file)
        assert final.wait(120) == 0, log_file.read_text()[-3000:]
        db = core.open_journal_db(db_url)
        run = q.list_runs(db)[0]
        assert run["status"] == "completed"
        seen = check_consistency(db, run["id"], acct)
        killed = [k.split(":", 1)[1] for k in killer.log]
        venue = {o.link_id: o for o in acct.orders.values()}
        payloads = [e["payload"] for e in q.events(db, run["id"]) if e["kind"] == "reconcile"]
    journal = {o["id"]: o for o in q.orders(db, run["id"])}
    fills = q.fills(db, run["id"])
    for cid in killed:  # each order cut short by a kill ended filled, all three pieces journaled
        assert venue[cid].status == "Filled" and journal[cid]["status"] == "filled", journal[cid]
        assert len([f for f in fills if f["order_id"] == cid]) == 3
    assert sum(p["fills_added"] for p in payloads) >= 2, payloads  # recovered by the restarts' reconciliation
    assert seen["fills"] >= 9


async def test_a_decision_that_waited_on_an_order_cancelled_after_a_partial_fill_is_planned_again(
        btc_1h: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every market order meets a thin bar (half fills in pieces, the rest is cancelled) and the
    venue's pushes are lost, so the watchdog finds each order seconds later, cancelled after its
    partial fill: the bars' decisions wait on it, and when it ends the waiting one is planned
    again. The journal holds each such order as cancelled with the venue's filled qty and average."""
    set_keys(monkeypatch)
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    mods = modules(faults=PrivateFaults(mute_pushes=True), partial_fills=2, thin_every=1)
    async with SimServer(sim_cfg(btc_1h, 250.0, history=300), mods) as sim:
        summary = await flip_live(sim, tmp_path, db_url)
        db = core.open_journal_db(db_url)
        acct = account_of(sim.state)
        check_consistency(db, summary["run_id"], acct)
        venue = {o.link_id: o for o in acct.orders.values() if o.link_id.startswith(f"{summary['run_id']}-")}
    assert len(venue) >= 2 and all(o.status == "Cancelled" and 0 < o.cum_qty < o.qty for o in venue.values())
    orders = {o["id"]: o for o in q.orders(db, summary["run_id"])}
    assert all(orders[c]["status"] == "cancelled" and orders[c]["filled_qty"] == o.cum_qty for c, o in venue.items())
    decisions = q.decisions(db, summary["run_id"])
    assert "waiting" not in [d["status"] for d in decisions][:-1]
    by_id = {d["id"]: d for d in decisions}
    again = [e["payload"] for e in q.events(db, summary["run_id"]) if e["kind"] == "decision_looked_at_again"]
    assert len(again) >= 2
    ordered = {o["decision_id"] for o in orders.values()}
    for p in again:
        assert by_id[p["decision_id"]]["status"] == p["status"]
        assert (p["status"] == "order") == (p["decision_id"] in ordered)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_exchange_sim_cli_fills_in_pieces_and_cancels_a_thin_remainder(btc_1h: Path, tmp_path: Path) -> None:
    port = _free_port()
    out = tmp_path / "sim.log"
    proc = _start(["exchange-sim", "--data", str(btc_1h), "--port", str(port), "--bar-ms", "300", "--history", "300",
                   "--api-key", KEY, "--api-secret", SECRET, "--partial-fills", "3", "--thin-every", "1"],
                  dict(os.environ), out)
    http = BybitHttp(KEY, SECRET, rest_url=f"http://127.0.0.1:{port}", timeout_s=2.0)
    try:
        deadline = time.monotonic() + 60
        while True:  # wait for the simulator to serve (generous: a loaded machine starts slowly)
            try:
                await http.wallet()
                break
            except ExchangeError:
                assert time.monotonic() < deadline and proc.poll() is None, out.read_text()[-2000:]
                await asyncio.sleep(0.2)
        await http.create(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.03",
                          orderLinkId="cli-thin")
        deadline = time.monotonic() + 60
        while (o := await http.order("BTCUSDT", "cli-thin", "linear")) is None or o["orderStatus"] == "New":
            assert time.monotonic() < deadline, o
            await asyncio.sleep(0.1)
        execs = await http.executions("BTCUSDT", link_id="cli-thin", category="linear")
    finally:
        http.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    # Half of 0.03 filled in three executions; linear reports the rest cancelled as Cancelled.
    assert (o["orderStatus"], o["cumExecQty"], o["leavesQty"]) == ("Cancelled", "0.015", "0")
    assert sorted(e["execQty"] for e in execs) == ["0.005"] * 3 and len({e["execId"] for e in execs}) == 3


def test_exchange_sim_cli_refuses_a_bad_partial_fills_value(btc_1h: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "bot", "exchange-sim", "--data", str(btc_1h), "--api-key", KEY,
                          "--api-secret", SECRET, "--partial-fills", "0"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and "--partial-fills must be 1 or more" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
