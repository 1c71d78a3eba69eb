"""Start-up survives signals: a real ``bot run --mode live`` process on the simulator is killed
(SIGKILL) or stopped (SIGTERM) at each named step of its start-up (``BOT_SIGNAL_AT``, the process
signals itself: bot/signals.py), and ``--resume`` continues what was journaled; a backtest
stopped by SIGTERM (``docker stop``) ends ``interrupted`` with every row it processed and no
writer process left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bot import app as core
from bot.timeutil import ms_to_iso
from broker.bybit_sim import SimConfig
from broker.bybit_sim.private import account_of
from broker.bybit_sim.testing import sim_thread
from storage import queries as q
from tests.live_helpers import KEY, SECRET, check_consistency, modules, still_until_subscribed

H = 3_600_000


def _bot(args: list[str], log: Path, at: str | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ, BYBIT_API_KEY=KEY, BYBIT_API_SECRET=SECRET)
    env.pop("BOT_SIGNAL_AT", None)
    if at:
        env["BOT_SIGNAL_AT"] = at
    with log.open("ab") as fh:
        fh.write(f"\n=== bot {' '.join(args[-3:])} at={at}\n".encode())
        fh.flush()
        return subprocess.Popen([sys.executable, "-m", "bot", *args], env=env, stdout=fh, stderr=fh, cwd=cwd)


def _wait(proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"bot did not exit: {log.read_text()[-3000:]}") from None


def _live_args(sim: object, db_url: str) -> list[str]:
    return ["run", "--mode", "live", "--strategy", "sma", "--set", f"exchange.rest_url={sim.rest_url}",  # type: ignore[attr-defined]
            "--set", f"exchange.ws_url={sim.ws_url}", "--set", f"storage.url={db_url}",  # type: ignore[attr-defined]
            "--set", "strategy.params.fast=2", "--set", "strategy.params.slow=5",
            "--set", "exchange.timeout_s=2", "--json"]


def test_sigkill_at_every_start_up_step_then_resume(btc_1h: Path, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'live.db'}"
    log = tmp_path / "bot.log"
    with sim_thread(SimConfig(data=[str(btc_1h)], bar_ms=300.0, history=300), modules()) as sim:
        base = _live_args(sim, db_url)
        # Killed after the venue answered, before anything was journaled: nothing to resume,
        # said in one line, and a fresh start is possible.
        assert _wait(_bot(base, log, "venue_ready"), log) == -signal.SIGKILL
        resume = subprocess.run([sys.executable, "-m", "bot", *base, "--resume"], capture_output=True, timeout=120,
                                env=dict(os.environ, BYBIT_API_KEY=KEY, BYBIT_API_SECRET=SECRET))
        err = resume.stderr.decode()
        assert resume.returncode == 2, err
        assert err.strip().splitlines() == ["error: no unfinished live run to resume in the journal: "
                                            "start a new one without --resume"]
        # A fresh start killed the moment its run is written, then every step of a resume.
        assert _wait(_bot(base, log, "run_opened"), log) == -signal.SIGKILL
        for at in ("run_opened", "run_begun", "reconciled"):
            assert _wait(_bot([*base, "--resume"], log, at), log) == -signal.SIGKILL, at
        end = (sim.state.now_ms() // H + 30) * H
        with still_until_subscribed(sim):
            final = _bot([*base, "--resume", "--to", ms_to_iso(end)], log)
        assert _wait(final, log, 180) == 0, log.read_text()[-3000:]
        db = core.open_journal_db(db_url)
        runs = q.list_runs(db)
        assert len(runs) == 1 and runs[0]["status"] == "completed", runs
        kinds = [e["kind"] for e in q.events(db, runs[0]["id"])]
        assert kinds.count("live_start") == 1 and kinds.count("live_resume") == 1  # the last start only
        seen = check_consistency(db, runs[0]["id"], account_of(sim.state))
    assert runs[0]["bars"] >= 20 and seen["orders"] >= 1


def test_sigterm_during_live_start_up_stops_cleanly_and_resumes(btc_1h: Path, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'live.db'}"
    log = tmp_path / "bot.log"
    with sim_thread(SimConfig(data=[str(btc_1h)], bar_ms=300.0, history=300), modules()) as sim:
        base = _live_args(sim, db_url)
        # Before the run exists: Ctrl-C's path (the start-up unwinds), exit 143, one line.
        assert _wait(_bot(base, log, "venue_ready:TERM"), log) == 143
        assert log.read_text().rstrip().endswith("terminated (SIGTERM)")
        db = core.open_journal_db(db_url)
        assert q.list_runs(db) == []
        # The run just written: the runner's handlers are already there, so it ends stopped.
        assert _wait(_bot(base, log, "run_opened:TERM"), log) == 0, log.read_text()[-3000:]
        runs = q.list_runs(db)
        assert len(runs) == 1 and runs[0]["status"] == "stopped" and runs[0]["bars"] == 0, runs
        end = (sim.state.now_ms() // H + 10) * H
        assert _wait(_bot([*base, "--resume", "--to", ms_to_iso(end)], log), log, 180) == 0, log.read_text()[-3000:]
    run = q.list_runs(db)[0]
    assert run["id"] == runs[0]["id"] and run["status"] == "completed" and run["bars"] >= 5


PAUSE_AT = 255_000

PAUSING = f'''
import time
from pathlib import Path

from bot.domain import Decision
from strategies.base import Strategy


class Pausing(Strategy):
    """Flips between long and flat every 5,000 bars; at bar {PAUSE_AT} it says so and waits."""

    name = "pausing"

    def on_bar(self, bars):
        i = bars.n - 1
        if i == {PAUSE_AT}:
            Path("paused").write_text(str(i))
            while True:
                time.sleep(0.05)
        if i % 5000 == 0:
            return Decision(bars.symbol, bars.last_time(), float((i // 5000) % 2))
        return None
'''


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_sigterm_stops_a_backtest_as_interrupted_with_its_rows_and_no_writer_left(tmp_path: Path) -> None:
    # 260k bars: the journal goes through the second writer process (storage/journal_process.py).
    n = 260_000
    rng = np.random.default_rng(5)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    pd.DataFrame({"timestamp": 1_500_000_000_000 - 1_500_000_000_000 % H + np.arange(n) * H, "open": open_,
                  "high": np.maximum(open_, close) * 1.001, "low": np.minimum(open_, close) * 0.999,
                  "close": close, "volume": 1.0}).to_csv(tmp_path / "walk.csv", index=False)
    (tmp_path / "pausing.py").write_text(PAUSING)
    db_url = f"sqlite:///{tmp_path / 'bt.db'}"
    log = tmp_path / "bot.log"
    proc = _bot(["backtest", "--data", "walk.csv", "--strategy", "pausing.py:Pausing", "--db", db_url, "--json"],
                log, cwd=tmp_path)
    deadline = time.monotonic() + 300
    while not (tmp_path / "paused").exists():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the backtest never reached its pause"
        time.sleep(0.05)
    writers = _children(proc.pid)
    assert writers, "no equity writer process"
    proc.send_signal(signal.SIGTERM)  # what docker stop sends
    assert _wait(proc, log) == 143, log.read_text()[-3000:]
    assert log.read_text().rstrip().endswith("terminated (SIGTERM)")
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{p}").exists() and "zombie" not in Path(f"/proc/{p}/status").read_text().lower()
              for p in writers):
        assert time.monotonic() < deadline, "the equity writer outlived the backtest"
        time.sleep(0.05)
    db = core.open_journal_db(db_url)
    run = q.list_runs(db)[0]
    assert run["status"] == "interrupted" and run["error"] == "interrupted by the user"
    # Every bar the engine marked (bars 0 .. PAUSE_AT: a bar is marked before its decision) has
    # its equity row, in order, and nothing beyond it.
    assert run["bars"] == PAUSE_AT + 1
    eq = q.equity(db, run["id"])
    times = [r["time"] for r in eq]
    assert len(times) == PAUSE_AT + 1 and times == sorted(set(times)) and np.all(np.diff(times) == H)
    orders, fills = q.orders(db, run["id"]), q.fills(db, run["id"])
    assert len(orders) == PAUSE_AT // 5000 - 1 and len(fills) == len(orders)
