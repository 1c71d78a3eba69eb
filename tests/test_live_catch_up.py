"""Downtime: a live bot (a real ``bot run --mode live`` process) is killed, stays down while the
market moves on for many bars, and is resumed. The bars it missed come back as one REST backfill;
none of them may send an order at its old close: every order the venue accepts was decided on the
newest closed bar (one bar of slack for a slow machine), and the position never exceeds
``risk.max_exposure`` of equity. A decision that met a working order is planned again when the
order ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bot import app as core
from bot.timeutil import ms_to_iso
from broker.bybit_sim import SimConfig, SimServer
from broker.bybit_sim.private import account_of
from broker.bybit_sim.private_rest import PrivateFaults
from broker.bybit_sim.testing import sim_thread
from storage import queries as q
from tests.helpers import clock_held_until_subscribed
from tests.live_helpers import DRIFT, FLIP, KEY, SECRET, check_consistency, flip_live, modules, set_keys, sim_cfg

H = 3_600_000
DOWN_BARS = 12



def _bars(db_url: str) -> int:
    db = core.open_journal_db(db_url)
    try:
        runs = q.list_runs(db)
        return int(runs[0]["bars"] or 0) if runs else 0
    except Exception:  # noqa: BLE001 - the journal may not exist yet
        return 0
    finally:
        db.dispose()


def _wait(cond, what: str, timeout: float, log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting for {what}: {log.read_text()[-2000:]}"
        time.sleep(0.1)


def test_bars_missed_while_down_are_caught_up_without_trading(btc_1h: Path, tmp_path: Path) -> None:
    (tmp_path / "flip.py").write_text(FLIP)
    db_url = f"sqlite:///{tmp_path / 'live.db'}"
    log = tmp_path / "bot.log"
    env = dict(os.environ, BYBIT_API_KEY=KEY, BYBIT_API_SECRET=SECRET)
    accepted: dict[str, int] = {}  # order link id -> exchange time when the venue accepted it
    with sim_thread(SimConfig(data=[str(btc_1h)], bar_ms=1000.0, history=300), modules()) as sim:
        clock = sim.state.clock
        acct = account_of(sim.state)
        acct.on_accept = lambda o: accepted.setdefault(o.link_id, clock.now_ms())
        base = ["run", "--mode", "live", "--strategy", f"{tmp_path / 'flip.py'}:Flip",
                "--set", f"exchange.rest_url={sim.rest_url}", "--set", f"exchange.ws_url={sim.ws_url}",
                "--set", f"storage.url={db_url}", "--set", "risk.max_exposure=1.0", "--json"]

        def start(*extra: str) -> subprocess.Popen[bytes]:
            with log.open("ab") as fh:
                return subprocess.Popen([sys.executable, "-m", "bot", *base, *extra], env=env, stdout=fh, stderr=fh)

        proc = start()
        _wait(lambda: _bars(db_url) >= 4, "four bars traded", 120, log)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        # Down: the market moves on; a slow restart only makes the downtime longer.
        down_from = clock.now_ms()
        _wait(lambda: clock.now_ms() >= down_from + DOWN_BARS * H, "the market to move on", 60, log)
        with clock_held_until_subscribed(sim):  # the resumed bot's 8 bars start when it is on the stream
            end = (clock.now_ms() // H + 8) * H
            final = start("--resume", "--to", ms_to_iso(end))
            assert final.wait(180) == 0, log.read_text()[-3000:]
        db = core.open_journal_db(db_url)
        run = q.list_runs(db)[0]
        check_consistency(db, run["id"], acct)
        decisions = {d["id"]: d for d in q.decisions(db, run["id"])}
        orders = q.orders(db, run["id"])
        equity = q.equity(db, run["id"])
    assert "waiting" not in [d["status"] for d in decisions.values()][:-1]  # a resume replans afresh
    caught_up = [d for d in decisions.values() if d["status"] == "catch_up"]
    assert len(caught_up) >= DOWN_BARS - 1
    assert not {o["decision_id"] for o in orders} & {d["id"] for d in caught_up}
    assert len(orders) >= 5 and set(accepted) == {o["id"] for o in orders}
    for o in orders:
        newest_open = accepted[o["id"]] // H * H - H  # the newest bar closed when the venue took it
        bar = int(decisions[o["decision_id"]]["bar_time"])
        assert bar >= newest_open - H, (o["id"], ms_to_iso(bar), ms_to_iso(newest_open))
    # Sized at current prices: the position is never worth more than max_exposure of equity
    # (beyond the move between a decision's close and its fill at the next open).
    assert max(abs(r["position"] * r["price"]) / r["equity"] for r in equity) <= 1.03


async def test_a_decision_that_waited_on_a_working_order_is_planned_again(btc_1h: Path, tmp_path: Path,
                                                                          monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The venue's pushes are lost, so each order is only known to have filled when the working-order
    watchdog looks it up (seconds later): the bars' decisions meet it, the newest waits, older ones
    are superseded, and when the order ends the waiting one is planned again (here: sent, bars
    after its own close). Every bar wants another position (``DRIFT``): with Flip's two targets,
    a watchdog that found each fill an even number of bars later saw only holds."""
    set_keys(monkeypatch)
    faults = PrivateFaults(mute_pushes=True)
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    async with SimServer(sim_cfg(btc_1h, 250.0, history=300), modules(faults=faults)) as sim:
        summary = await flip_live(sim, tmp_path, db_url, strategy=(DRIFT, "Drift"))
        db = core.open_journal_db(db_url)
        check_consistency(db, summary["run_id"], account_of(sim.state))
    decisions = q.decisions(db, summary["run_id"])
    statuses = [d["status"] for d in decisions]
    assert statuses.count("superseded") >= 3
    assert "waiting" not in statuses[:-1]  # only the last may still wait (the run ended first)
    by_id = {d["id"]: d for d in decisions}
    again = [e["payload"] for e in q.events(db, summary["run_id"]) if e["kind"] == "decision_looked_at_again"]
    assert len(again) >= 2
    ordered = {o["decision_id"]: o for o in q.orders(db, summary["run_id"])}
    for p in again:  # what the second look decided is what the journal says, and an order went out
        assert by_id[p["decision_id"]]["status"] == p["status"]
        assert (p["status"] == "order") == (p["decision_id"] in ordered)
    assert any(p["status"] == "order" for p in again)
