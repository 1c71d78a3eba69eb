"""Many bots, one journal: four ``bot run --mode paper`` processes (two markets, two parameter
sets) on one simulator write to one fresh PostgreSQL journal at once. They migrate it one after
the other, none fails on a lock, every run keeps its own rows (each equal to a backtest of the same
bars: nothing lost, nothing from another run), and ``bot journal runs`` names each run's host and
process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bot import app as core
from bot.config import load_config
from bot.live import WARMUP_MARGIN
from bot.timeutil import ms_to_iso
from broker.bybit_sim import SimConfig
from broker.bybit_sim.testing import sim_thread
from storage import queries as q
from storage.records import comparable_journal
from tests.test_cli import bot

HOUR = 3_600_000
A_INDEX, N_BARS = 700, 40
BOTS = [("BTCUSDT", 3, 8), ("ETHUSDT", 3, 8), ("BTCUSDT", 5, 12), ("ETHUSDT", 4, 10)]


def _sets(symbol: str, fast: int, slow: int) -> list[str]:
    return [f"market.symbol={symbol}", "strategy.name=sma", f"strategy.params.fast={fast}",
            f"strategy.params.slow={slow}", "broker.slippage_bps=2", "logging.level=error"]


def test_four_paper_bots_share_one_postgresql_journal(btc_1h: Path, data_dir: Path, tmp_path: Path,
                                                      pg_schema_url: Callable[[], str]) -> None:
    url = pg_schema_url()
    files = {"BTCUSDT": btc_1h, "ETHUSDT": data_dir / "bybit_ETHUSDT_1h.csv.gz"}
    probe = core.load_data(load_config(None, []), str(btc_1h))
    a, b = int(probe.time[A_INDEX]), int(probe.time[A_INDEX + N_BARS])
    with sim_thread(SimConfig(data=[str(p) for p in files.values()], bar_ms=150.0, start=a - 2 * HOUR)) as sim:
        stats = sim.state.stats
        sim.thread.call(lambda: sim.state.clock.pause_at(a))
        subscribed, asked = stats["kline_subscriptions"], stats["time_requests"]
        procs = []
        for symbol, fast, slow in BOTS:
            args = ["run", "--mode", "paper", "--db", url, "--json", "--from", ms_to_iso(a), "--to", ms_to_iso(b),
                    "--set", f"exchange.rest_url={sim.rest_url}", "--set", f"exchange.ws_url={sim.ws_url}"]
            for s in _sets(symbol, fast, slow):
                args += ["--set", s]
            procs.append(subprocess.Popen([sys.executable, "-c", "from bot.cli import main; main()", *args],
                                          cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          env={**os.environ, "BOT_DEBUG": "1"}))
        # The market stands still until every bot has subscribed and asked the venue's time.
        deadline = time.monotonic() + 240
        while not (stats["kline_subscriptions"] >= subscribed + 4 and stats["time_requests"] >= asked + 4):
            assert time.monotonic() < deadline, "the bots never all subscribed"
            assert all(p.poll() is None for p in procs), [p.communicate()[1].decode()[-2000:] for p in procs
                                                          if p.poll() is not None]
            time.sleep(0.02)
        sim.thread.call(sim.state.clock.resume)
        outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()[-3000:]
        assert "lock" not in err.decode().lower()
    summaries = [json.loads(out) for out, _ in outs]
    db = core.open_journal_db(url)
    ref = core.open_journal_db(f"sqlite:///{tmp_path / 'ref.db'}")
    host = socket.gethostname()
    for (symbol, fast, slow), p, summary in zip(BOTS, procs, summaries, strict=True):
        run = q.resolve_run(db, summary["run_id"])
        assert (run["status"], run["symbol"], run["host"], run["pid"]) == ("completed", symbol, host, p.pid)
        assert run["config"]["markets"][0]["strategy"]["params"] == {"fast": fast, "slow": slow}
        paper = comparable_journal(db, run["id"])
        # The same bars through the backtest path: the run's rows, no fewer, no more, none of another run's.
        cfg = load_config(None, _sets(symbol, fast, slow))
        strategy = core.build_strategy(cfg)
        w = strategy.warmup + WARMUP_MARGIN
        data = core.load_data(cfg, str(files[symbol]), ms_to_iso(a - w * HOUR), ms_to_iso(b))
        back = comparable_journal(ref, core.backtest(cfg, data, strategy, ref, show_progress=False,
                                                     history=w)["run_id"])
        assert len(paper["equity"]) == N_BARS and len(paper["fills"]) >= 4
        for table in ("decisions", "orders", "fills", "trades", "equity"):
            assert paper[table] == back[table], (symbol, fast, table)
        assert all(o["id"].startswith(f"{run['id']}-") for o in q.orders(db, run["id"]))
    res = bot("journal", "runs", "--db", url, "--format", "json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    listed = {r["id"]: (r["host"], r["pid"]) for r in json.loads(res.stdout)}
    assert listed == {s["run_id"]: (host, p.pid) for s, p in zip(summaries, procs, strict=True)}
    table = bot("journal", "runs", "--wide", "--db", url, cwd=tmp_path, env={"COLUMNS": "200"})
    assert all(str(p.pid) in table.stdout for p in procs) and "host" in table.stdout


def test_processes_that_open_a_new_postgresql_journal_at_once_migrate_it_in_turn(
        pg_schema_url: Callable[[], str]) -> None:
    url = pg_schema_url()
    code = f"from storage.db import open_database; print(open_database({url!r}).url.database)"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err.decode()[-500:] for _, err in results]
    db = core.open_journal_db(url)
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM journal_version").scalar() == 1
