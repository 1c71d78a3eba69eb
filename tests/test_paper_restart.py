"""Restart: a paper run (a real ``bot run`` subprocess) is killed with SIGKILL several times and
resumed with ``--resume``; its final journal equals an uninterrupted run's. (The market is
frozen while the bot is down and the bot has every closed bar when it is killed: bars missed
while down are caught up without trading, test_live_catch_up, so only a restart within the bar
can give the uninterrupted journal.)
SIGTERM stops a run cleanly (status ``stopped``, journal flushed) and it resumes the same way."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from bot import app as core
from bot.config import load_config
from bot.live import RunOptions
from bot.timeutil import ms_to_iso
from broker.bybit_sim import SimConfig
from broker.bybit_sim.testing import sim_thread
from storage import queries as q
from storage.records import comparable_journal

A_INDEX, N_BARS, BAR_MS = 900, 80, 60.0
SETS = ["strategy.params.fast=3", "strategy.params.slow=8", "broker.slippage_bps=1", "logging.level=error"]


def _bot(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "from bot.cli import main; main()", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "BOT_DEBUG": "1"})


def _poll(db_path: Path, sql: str, until: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    """Wait until ``sql`` returns at least ``until`` (or the process exits); return the value."""
    eng = create_engine(f"sqlite:///{db_path}")
    deadline = time.monotonic() + timeout
    val = -1
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with eng.connect() as conn:
                    val = int(conn.execute(text(sql)).scalar() or 0)
            except Exception:  # noqa: BLE001 - the table may not exist yet
                val = -1
            if val >= until:
                return val
            time.sleep(0.05)
    finally:
        eng.dispose()
    return val


def _subscribed(sim: Any, until: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    """Wait until the simulator has taken ``until`` kline subscriptions: the bot (started or
    resumed) is on the stream, so the market may move without a bar reaching it late, in one batch
    with the next (a catch-up bar, which a slow start-up on a loaded machine would otherwise make)."""
    deadline = time.monotonic() + timeout
    while sim.state.stats["kline_subscriptions"] < until:
        assert proc.poll() is None, "the bot exited before it subscribed"
        assert time.monotonic() < deadline, "the bot never subscribed to its candles"
        time.sleep(0.02)


#: Protective exits tight enough to trigger within the run: their levels, trails and the
#: stopped-out rule must survive the kills too.
EXITS = ["market.exits.stop_loss=0.004", "market.exits.take_profit=0.006", "market.exits.trailing_stop=0.005"]


@pytest.mark.parametrize("extra", [[], EXITS], ids=["plain", "exits"])
def test_kill_9_and_resume_gives_the_uninterrupted_journal(btc_1h: Path, tmp_path: Path, extra: list[str]) -> None:
    rng = random.Random(20261122)
    probe = core.load_data(load_config(None, []), str(btc_1h))
    a, b = int(probe.time[A_INDEX]), int(probe.time[A_INDEX + N_BARS])
    db_path = tmp_path / "killed.db"
    with sim_thread(SimConfig(data=[str(btc_1h)], bar_ms=BAR_MS, start=a)) as sim:
        clock = sim.state.clock
        common = ["run", "--mode", "paper", "--db", f"sqlite:///{db_path}", "--json",
                  "--set", f"exchange.rest_url={sim.rest_url}", "--set", f"exchange.ws_url={sim.ws_url}"]
        for s in SETS + extra:
            common += ["--set", s]
        # The market stands still while a bot process starts, so the kills land mid-run however
        # slow this machine is; it moves while the bot trades.
        sim.thread.call(clock.pause)
        proc = _bot([*common, "--from", ms_to_iso(a), "--to", ms_to_iso(b)], tmp_path)
        _poll(db_path, "SELECT count(*) FROM events WHERE kind = 'paper_start'", 1, proc)
        _subscribed(sim, 1, proc)
        sim.thread.call(clock.resume)
        bars_sql = "SELECT bars FROM runs WHERE mode = 'paper'"
        seen, kills, statuses = 0, 0, []
        for _ in range(3):
            seen = _poll(db_path, bars_sql, seen + rng.randint(1, 5), proc)
            sim.thread.call(clock.pause)
            seen = _poll(db_path, bars_sql, (sim.state.now_ms() - a) // 3_600_000, proc)
            time.sleep(rng.uniform(0.0, 0.1))
            assert proc.poll() is None, "the run ended before it could be killed"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            kills += 1
            with create_engine(f"sqlite:///{db_path}").connect() as conn:
                status, seen = conn.execute(text("SELECT status, bars FROM runs")).one()
                statuses.append(status)
            proc = _bot([*common, "--resume"], tmp_path)
            _poll(db_path, "SELECT count(*) FROM events WHERE kind = 'paper_resume'", kills, proc)
            _subscribed(sim, kills + 1, proc)
            sim.thread.call(clock.resume)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert kills == 3
        assert set(statuses) == {"running"}  # kill -9 leaves no chance to close the run
        db = core.open_journal_db(f"sqlite:///{db_path}")
        runs = q.list_runs(db)
        assert len(runs) == 1 and runs[0]["status"] == "completed"
        killed = comparable_journal(db, runs[0]["id"])
        resumes = [e for e in q.events(db, runs[0]["id"]) if e["kind"] == "paper_resume"]
        assert len(resumes) == kills

    # The uninterrupted run on the same bars, played live from the same start.
    ref_path = tmp_path / "ref.db"
    with sim_thread(SimConfig(data=[str(btc_1h)], bar_ms=BAR_MS, start=a)) as sim:
        clock = sim.state.clock
        sim.thread.call(clock.pause)
        proc = _bot(["run", "--mode", "paper", "--db", f"sqlite:///{ref_path}", "--json",
                     "--set", f"exchange.rest_url={sim.rest_url}", "--set", f"exchange.ws_url={sim.ws_url}",
                     *[x for s in SETS + extra for x in ("--set", s)], "--from", ms_to_iso(a), "--to", ms_to_iso(b)],
                    tmp_path)
        _poll(ref_path, "SELECT count(*) FROM events WHERE kind = 'paper_start'", 1, proc)
        _subscribed(sim, 1, proc)
        sim.thread.call(clock.resume)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
    ref_db = core.open_journal_db(f"sqlite:///{ref_path}")
    reference = comparable_journal(ref_db, q.list_runs(ref_db)[0]["id"])
    assert len(reference["equity"]) == N_BARS and len(reference["fills"]) >= 4
    if extra:
        assert any(o["exit_reason"] for o in reference["orders"]), "no protective exit in the run"
    for table in ("decisions", "orders", "fills", "trades", "equity"):
        assert len(killed[table]) == len(reference[table]), table
        for k, r in zip(killed[table], reference[table], strict=True):
            assert k == r, (table, {c: (k.get(c), r.get(c)) for c in k.keys() | r.keys() if k.get(c) != r.get(c)})


async def test_sigterm_marks_stopped_then_resume_completes(btc_1h: Path, tmp_path: Path) -> None:
    from bot.feeds.bybit import BybitFeed
    from broker.bybit_sim import SimServer

    probe = core.load_data(load_config(None, []), str(btc_1h))
    a, b = int(probe.time[A_INDEX]), int(probe.time[A_INDEX + 40])
    url = f"sqlite:///{tmp_path / 'term.db'}"
    async with SimServer(SimConfig(data=[str(btc_1h)], bar_ms=30.0, start=a)) as sim:
        cfg = load_config(None, [f"exchange.rest_url={sim.rest_url}", f"exchange.ws_url={sim.ws_url}",
                                 f"storage.url={url}", *SETS])
        sent = []

        class Terminating(BybitFeed):
            def _deliver(self, c):  # type: ignore[no-untyped-def]
                super()._deliver(c)
                if c.open_time == a + 15 * 3_600_000 and not sent:
                    sent.append(c.open_time)
                    os.kill(os.getpid(), signal.SIGTERM)  # handled by the run's signal handler

        first = await core.paper(cfg, date_from=ms_to_iso(a), date_to=ms_to_iso(b),
                                 options=RunOptions(feed_factory=Terminating))
        db = core.open_journal_db(url)
        run = q.resolve_run(db, first["run_id"])
        assert run["status"] == "stopped" and 1 <= run["bars"] < 40
        assert len(q.equity(db, first["run_id"])) == run["bars"]  # flushed up to the last bar processed
        done = await core.paper(cfg, run_id=first["run_id"])  # --run-id ID
    assert done["run_id"] == first["run_id"] and done["candles"] == 40
    assert q.resolve_run(db, first["run_id"])["status"] == "completed"
    assert [r["time"] for r in q.equity(db, first["run_id"])] == [int(t) for t in probe.time[A_INDEX:A_INDEX + 40]]
