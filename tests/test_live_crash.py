"""Crash safety: the live bot (a real ``bot run --mode live`` process) is killed with SIGKILL at
points of the order life cycle (the venue has just accepted an order but the answer has not left,
a fill has just executed but not been pushed, a random moment), restarted with ``--resume`` each
time, and finally run to completion. Then the exchange and the journal must agree: no order sent
twice, every exchange order and fill in the journal and vice versa, the same position."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bot import app as core
from broker.bybit_sim import SimConfig
from broker.bybit_sim.private import account_of
from broker.bybit_sim.testing import sim_thread
from storage import queries as q
from tests.live_helpers import KEY, SECRET, check_consistency, modules

H = 3_600_000
KILLS = ("accept", "fill", "random", "accept", "fill")


class Killer:
    """Kills the bot process from inside the simulator at the chosen point of the life cycle."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.mode = ""
        self.fired = threading.Event()
        self.log: list[str] = []

    def arm(self, proc: subprocess.Popen[bytes], mode: str) -> None:
        self.proc, self.mode = proc, mode
        self.fired.clear()

    def hit(self, point: str, what: str) -> None:
        if self.proc is not None and self.mode == point and not self.fired.is_set():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.fired.set()
            self.log.append(f"{point}:{what}")


def _start(args: list[str], env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    with out.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "bot", *args], env=env, stdout=fh, stderr=fh)


def test_sigkill_at_order_life_cycle_points_then_resume(btc_1h: Path, tmp_path: Path) -> None:
    rng = random.Random(7)
    killer = Killer()
    db_url = f"sqlite:///{tmp_path / 'live.db'}"
    log_file = tmp_path / "bot.log"
    env = dict(os.environ, BYBIT_API_KEY=KEY, BYBIT_API_SECRET=SECRET)
    with sim_thread(SimConfig(data=[str(btc_1h)], bar_ms=300.0, history=300), modules()) as sim:
        acct = account_of(sim.state)
        acct.on_accept = lambda o: killer.hit("accept", o.link_id)
        acct.before_exec_push = lambda e: killer.hit("fill", e.order.link_id)
        base = ["run", "--mode", "live", "--strategy", "sma", "--set", f"exchange.rest_url={sim.rest_url}",
                "--set", f"exchange.ws_url={sim.ws_url}", "--set", f"storage.url={db_url}",
                "--set", "strategy.params.fast=2", "--set", "strategy.params.slow=5",
                "--set", "exchange.timeout_s=2", "--json"]
        for i, mode in enumerate(KILLS):
            proc = _start(base + (["--resume"] if i else []), env, log_file)
            killer.arm(proc, mode)
            if mode == "random":
                time.sleep(rng.uniform(9.0, 13.0))  # start-up (imports) takes most of it
                killer.hit("random", "timer")
            assert killer.fired.wait(90), f"kill {i} ({mode}) never happened: {log_file.read_text()[-2000:]}"
            assert proc.wait(30) == -signal.SIGKILL
        # Last start: resume and run to a fixed end, which completes the run cleanly.
        end = (sim.state.now_ms() // H + 40) * H
        from bot.timeutil import ms_to_iso  # noqa: PLC0415

        final = _start(base + ["--resume", "--to", ms_to_iso(end)], env, log_file)
        assert final.wait(120) == 0, log_file.read_text()[-3000:]
        db = core.open_journal_db(db_url)
        run = q.list_runs(db)[0]
        assert run["mode"] == "live" and run["status"] == "completed"
        seen = check_consistency(db, run["id"], acct)
        events = [e["kind"] for e in q.events(db, run["id"])]
        payloads: list[dict[str, Any]] = [e["payload"] for e in q.events(db, run["id"]) if e["kind"] == "reconcile"]
    # Starts reconcile before trading (a kill may land inside a start-up: a fill of the previous
    # process's order can execute then); the final start reconciled, then resumed.
    assert events.count("live_start") == 1 and events.count("live_resume") >= 1
    last = len(events) - 1 - events[::-1].index("reconcile")
    assert "live_resume" in events[last:] and len(payloads) >= 2
    # The kills hit orders in flight: some were merged from the venue after a restart.
    merged = sum(len(p["updated"]) + len(p["resolved"]) + p["fills_added"] for p in payloads)
    assert merged >= 2, payloads
    assert seen["orders"] >= 6 and seen["fills"] >= 6
    assert [k.split(":")[0] for k in killer.log] == list(KILLS)
