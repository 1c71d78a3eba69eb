"""Two markets on the local Bybit simulator: paper and live make the backtest's decisions, orders
and fills over one wallet; a live two-market run survives SIGKILL + ``--resume`` with journal and
exchange agreeing on every order, fill and both positions; a symbol the venue does not list is
one clear line."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from bot import app as core
from bot.config import Config, load_config
from bot.errors import BotError
from bot.funding import load_funding
from bot.live import WARMUP_MARGIN, RunOptions
from bot.timeutil import ms_to_iso
from broker.bybit_sim import SimConfig, SimServer
from broker.bybit_sim.private import account_of
from broker.bybit_sim.testing import sim_thread
from storage import queries as q
from storage.records import comparable_journal
from tests.live_helpers import KEY, SECRET, check_consistency, modules, set_keys, started_frozen

H = 3_600_000
N_BARS = 20
ETH_RULES = {"tick_size": 0.01, "qty_step": 0.01, "min_qty": 0.01}

torch.set_num_threads(1)


def _tree(rest: str, ws: str, db_url: str, funding: tuple[str, str] = ("auto", "auto")) -> dict[str, Any]:
    return {
        "markets": [
            {"symbol": "BTCUSDT", "allocation": 0.5, "strategy": {"name": "sma", "params": {"fast": 2, "slow": 5}},
             "funding": funding[0]},
            {"symbol": "ETHUSDT", "allocation": 0.5, **ETH_RULES, "funding": funding[1],
             "strategy": {"name": "sma", "params": {"fast": 3, "slow": 6}}},
        ],
        "exchange": {"rest_url": rest, "ws_url": ws, "timeout_s": 2},
        "storage": {"url": db_url}, "logging": {"level": "warning"},
    }


def _cfg(tmp_path: Path, rest: str, ws: str, db_url: str, funding: tuple[str, str] = ("auto", "auto")) -> Config:
    p = tmp_path / "two.yaml"
    p.write_text(yaml.safe_dump(_tree(rest, ws, db_url, funding)))
    return load_config(p)


def _strip(rows: list[dict], *cols: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in cols} for r in rows]


def _same(a: list[dict], b: list[dict], what: str) -> None:
    assert len(a) == len(b), (what, len(a), len(b))
    for x, y in zip(a, b, strict=True):
        diff = {k: (x.get(k), y.get(k)) for k in x.keys() | y.keys() if x.get(k) != y.get(k)}
        assert not diff, (what, x.get("id") or x.get("time"), diff)


async def test_two_markets_backtest_paper_and_live_agree(data_dir: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    set_keys(monkeypatch)
    files = [data_dir / "bybit_BTCUSDT_1h.csv.gz", data_dir / "bybit_ETHUSDT_1h.csv.gz"]
    probe = core.load_data(load_config(None, ["market.symbol=ETHUSDT"]), str(files[1]))
    a = int(probe.time[400])  # both files have hundreds of bars before it
    b = a + N_BARS * H
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    data = [str(f) for f in files]
    # The venue settles funding from the files beside the candles; paper and the backtest from the same files.
    funding = (str(data_dir / "bybit_BTCUSDT_funding_8h.csv.gz"), str(data_dir / "bybit_ETHUSDT_funding_8h.csv.gz"))
    # Bars of 1.5 s: the venue's first intra-bar push (a third into the bar) comes well after both
    # markets' orders, which therefore fill at the next bar's open as in the backtest.
    async with SimServer(SimConfig(data=data, bar_ms=1500.0, start=a - 3 * H), modules()) as sim:
        cfg = _cfg(tmp_path, sim.rest_url, sim.ws_url, db_url, funding)
        live = await started_frozen(sim, db_url, "live_start", core.live(
            cfg, date_from=ms_to_iso(a), date_to=ms_to_iso(b),
            options=RunOptions(reconcile_every_s=3600, stream_check_s=0.1)), at_ms=a)
        db = core.open_journal_db(db_url)
        seen = check_consistency(db, live["run_id"], account_of(sim.state))
    async with SimServer(SimConfig(data=data, bar_ms=15.0, start=a - 2 * H)) as sim:
        paper = await started_frozen(sim, db_url, "paper_start", core.paper(
            _cfg(tmp_path, sim.rest_url, sim.ws_url, db_url, funding), date_from=ms_to_iso(a), date_to=ms_to_iso(b)),
            at_ms=a)
    markets = []
    for m, f in zip(cfg.markets, files, strict=True):
        strategy = core.build_strategy(cfg, market=m)
        w = strategy.warmup + WARMUP_MARGIN
        markets.append(core.MarketData(core.load_data(cfg, str(f), ms_to_iso(a - w * H), ms_to_iso(b), market=m),
                                       strategy, history=w, funding=load_funding(m.funding)))
    bt = core.backtest_markets(cfg, markets, db, show_progress=False)

    runs_id = {"live": live["run_id"], "paper": paper["run_id"]}
    runs = {name: comparable_journal(db, s["run_id"]) for name, s in
            (("live", live), ("paper", paper), ("backtest", bt))}
    # An order decided on the last bar is still working when the backtest's data ends, while paper
    # and live let it fill before they stop: compare everything before it.
    last = f"-{b - H}-"
    for r in runs.values():
        r["orders"] = [o for o in r["orders"] if last not in o["id"]]
        # Fills of one time sort by exec id, which differs by venue: order them by order id.
        r["fills"] = sorted((f for f in r["fills"] if last not in f["order_id"]),
                            key=lambda f: (f["time"], f["order_id"]))
    assert live["candles"] == 2 * N_BARS and [m["symbol"] for m in live["markets"]] == ["BTCUSDT", "ETHUSDT"]
    assert {f["symbol"] for f in runs["backtest"]["fills"]} == {"BTCUSDT", "ETHUSDT"}
    for name in ("paper", "live"):
        _same(runs[name]["decisions"], runs["backtest"]["decisions"], f"{name} decisions")
        _same(_strip(runs[name]["orders"], "exchange_order_id"),
              _strip(runs["backtest"]["orders"], "exchange_order_id"), f"{name} orders")
        _same(_strip(runs[name]["fills"], "exec_id"), _strip(runs["backtest"]["fills"], "exec_id"), f"{name} fills")
        _same(runs[name]["equity"], runs["backtest"]["equity"], f"{name} equity")
    assert live["final_equity"] == bt["final_equity"]
    for name in ("paper", "live"):  # every settlement of the window, on the position each market held
        assert _strip(q.funding(db, runs_id[name]), "run_id") == _strip(q.funding(db, bt["run_id"]), "run_id"), name
    assert q.funding(db, bt["run_id"])
    assert seen["orders"] >= 4 and set(seen["positions"]) == {"BTCUSDT", "ETHUSDT"}


class Killer:
    """Kills the bot process from inside the simulator at the chosen point of the life cycle."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.mode, self.symbol = "", ""
        self.fired = threading.Event()
        self.log: list[str] = []

    def arm(self, proc: subprocess.Popen[bytes], mode: str, symbol: str) -> None:
        self.proc, self.mode, self.symbol = proc, mode, symbol
        self.fired.clear()

    def hit(self, point: str, symbol: str) -> None:
        if self.proc is not None and self.mode == point and self.symbol == symbol and not self.fired.is_set():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.fired.set()
            self.log.append(f"{point}:{symbol}")


@contextlib.contextmanager
def _reaped(procs: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    """A failing test never leaves a bot process running."""
    try:
        yield
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def _start(args: list[str], env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    with out.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "bot", *args], env=env, stdout=fh, stderr=fh)


def test_two_market_live_survives_sigkill_and_resume(data_dir: Path, tmp_path: Path) -> None:
    kills = (("accept", "ETHUSDT"), ("fill", "BTCUSDT"), ("fill", "ETHUSDT"), ("accept", "BTCUSDT"))
    killer = Killer()
    db_url = f"sqlite:///{tmp_path / 'live.db'}"
    log_file = tmp_path / "bot.log"
    env = dict(os.environ, BYBIT_API_KEY=KEY, BYBIT_API_SECRET=SECRET)
    files = [str(data_dir / "bybit_BTCUSDT_1h.csv.gz"), str(data_dir / "bybit_ETHUSDT_1h.csv.gz")]
    procs: list[subprocess.Popen[bytes]] = []
    with sim_thread(SimConfig(data=files, bar_ms=300.0, history=300), modules()) as sim, _reaped(procs):
        acct = account_of(sim.state)
        acct.on_accept = lambda o: killer.hit("accept", o.symbol)
        acct.before_exec_push = lambda e: killer.hit("fill", e.order.symbol)
        cfg_file = tmp_path / "two.yaml"
        cfg_file.write_text(yaml.safe_dump(_tree(sim.rest_url, sim.ws_url, db_url)))
        base = ["run", "--mode", "live", "--config", str(cfg_file), "--json"]
        for i, (mode, symbol) in enumerate(kills):
            proc = _start(base + (["--resume"] if i else []), env, log_file)
            procs.append(proc)
            killer.arm(proc, mode, symbol)
            assert killer.fired.wait(120), f"kill {i} ({mode} {symbol}) never happened: {log_file.read_text()[-2000:]}"
            assert proc.wait(30) == -signal.SIGKILL
        end = (sim.state.now_ms() // H + 30) * H
        final = _start(base + ["--resume", "--to", ms_to_iso(end)], env, log_file)
        procs.append(final)
        assert final.wait(180) == 0, log_file.read_text()[-3000:]
        db = core.open_journal_db(db_url)
        run = q.list_runs(db)[0]
        assert run["mode"] == "live" and run["status"] == "completed" and run["symbol"] == "BTCUSDT,ETHUSDT"
        seen = check_consistency(db, run["id"], acct)
        events = [e["kind"] for e in q.events(db, run["id"])]
        reconciled = {e["payload"]["symbol"] for e in q.events(db, run["id"]) if e["kind"] == "reconcile"}
    assert events.count("live_start") == 1 and events.count("live_resume") >= 1
    assert reconciled == {"BTCUSDT", "ETHUSDT"}
    assert [k for k in killer.log] == [f"{m}:{s}" for m, s in kills]
    assert set(seen["positions"]) == {"BTCUSDT", "ETHUSDT"} and seen["fills"] >= 6
    assert {o["symbol"] for o in q.orders(db, run["id"])} == {"BTCUSDT", "ETHUSDT"}


@pytest.mark.parametrize("mode", ["paper", "live"])
async def test_a_symbol_the_venue_does_not_list_is_one_line(data_dir: Path, tmp_path: Path, monkeypatch,  # type: ignore[no-untyped-def]
                                                            mode: str) -> None:
    set_keys(monkeypatch)
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    async with SimServer(SimConfig(data=[str(data_dir / "bybit_BTCUSDT_1h.csv.gz")], bar_ms=200.0),
                         modules()) as sim:
        tree = _tree(sim.rest_url, sim.ws_url, db_url)
        tree["markets"][1]["symbol"] = "XRPUSDT"
        p = tmp_path / "bad.yaml"
        p.write_text(yaml.safe_dump(tree))
        cfg = load_config(p)
        run = core.paper(cfg) if mode == "paper" else core.live(cfg)
        with pytest.raises(BotError) as exc:
            await run
    msg = str(exc.value)
    assert "XRPUSDT" in msg and "\n" not in msg
    assert not q.list_runs(core.open_journal_db(db_url))
