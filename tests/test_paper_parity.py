"""Parity: the same candles through the backtest path and through paper mode on the simulator
(accelerated clock, live WebSocket feed) give the same decisions, orders, fills and equity."""

from __future__ import annotations

from pathlib import Path

from bot import app as core
from bot.config import load_config
from bot.live import WARMUP_MARGIN, RunOptions
from bot.timeutil import ms_to_iso
from broker.bybit_sim import SimConfig, SimServer
from storage import queries as q
from storage.records import comparable_journal
from tests.live_helpers import started_frozen

A_INDEX = 400      # first traded bar in the file
N_BARS = 150


def paper_cfg(url: str, rest: str, db: str):  # type: ignore[no-untyped-def]
    return load_config(None, [f"exchange.rest_url={rest}", f"exchange.ws_url={url}", f"storage.url={db}",
                              "strategy.name=sma", "strategy.params.fast=3", "strategy.params.slow=8",
                              "broker.slippage_bps=2", "logging.level=warning"])


async def test_paper_on_simulator_equals_backtest(btc_1h: Path, tmp_path: Path) -> None:
    sim_cfg = SimConfig(data=[str(btc_1h)], bar_ms=12.0, updates_per_bar=2)
    data_probe = core.load_data(load_config(None, []), str(btc_1h))
    a = int(data_probe.time[A_INDEX])
    b = int(data_probe.time[A_INDEX + N_BARS])
    sim_cfg.start = a - 2 * 3_600_000  # the sim is two bars before A: A onwards arrives live over WS
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    async with SimServer(sim_cfg) as sim:
        cfg = paper_cfg(sim.ws_url, sim.rest_url, db_url)
        summary = await started_frozen(sim, db_url, "paper_start", core.paper(
            cfg, date_from=ms_to_iso(a), date_to=ms_to_iso(b), options=RunOptions(ping_interval_s=0.2)), at_ms=a)
        assert sim.state.stats["ws_pings"] >= 2  # the feed's heartbeat
    assert summary["candles"] == N_BARS and summary["orders"] >= 6
    db = core.open_journal_db(db_url)
    paper = comparable_journal(db, summary["run_id"])
    assert q.resolve_run(db, summary["run_id"])["status"] == "completed"

    # The backtest sees the same warm-up as history (never traded), then the same bars.
    strategy = core.build_strategy(cfg)
    w = strategy.warmup + WARMUP_MARGIN
    data = core.load_data(cfg, str(btc_1h), ms_to_iso(a - w * 3_600_000), ms_to_iso(b))
    bt = core.backtest(cfg, data, strategy, db, show_progress=False, history=w)
    back = comparable_journal(db, bt["run_id"])
    for table in ("decisions", "orders", "fills", "trades", "equity"):
        assert paper[table] == back[table], table
    assert [r["time"] for r in paper["equity"]] == [int(t) for t in data.time[w:]]
    assert summary["final_equity"] == bt["final_equity"]
