"""Shared set-up of the ``bot serve`` tests (no tests here): a journal of real runs, a live server.

The journal holds real runs through the real engine on the real Bybit candles: a backtest whose
journaled config names a PostgreSQL URL with a password (planted as an older version stored it;
the run itself journals to SQLite: the config is what a user's would be), a backtest stopped by
its kill switch, a two-market backtest (BTCUSDT and ETHUSDT, one wallet) and a paper replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from bot import app as core
from bot.api.server import make_server
from bot.config import load_config
from bot.domain import timeframe_ms
from bot.feeds.replay import load_candles
from bot.timeutil import parse_date
from storage.db import open_database
from storage.schema import runs
from tests.conftest import DATA_DIR, ROOT
from tests.helpers import scratch_journal

PASSWORD = "Hunter2-s3cret-pw"
PG_URL = f"postgresql+psycopg://trader:{PASSWORD}@db.internal:5432/journal"
TOKEN = "serve-test-token-0123456789abcdef"
BTC_1H = DATA_DIR / "bybit_BTCUSDT_1h.csv.gz"


@dataclass(slots=True)
class Journal:
    url: str
    root: Path
    ids: dict[str, str] = field(default_factory=dict)


_JOURNAL: Journal | None = None


def candles(start: str, end: str, symbol: str = "BTCUSDT"):  # type: ignore[no-untyped-def]
    path = DATA_DIR / f"bybit_{symbol}_1h.csv.gz"
    if not path.exists():
        pytest.fail(f"real market data not found at {path} (set BOT_DATA_DIR)")
    return load_candles(path, symbol=symbol, timeframe="1h", bar_ms=timeframe_ms("1h"),
                        start_ms=parse_date(start), end_ms=parse_date(end))


def journal() -> Journal:
    """The four runs, journaled once per test process (oldest first: backtest, kill, portfolio, paper)."""
    global _JOURNAL
    if _JOURNAL is not None:
        return _JOURNAL
    root, url = scratch_journal("serve_tests_")
    db = open_database(url)
    j = Journal(url, root)
    data = candles("2024-01-10", "2024-03-08")
    sma = ["strategy.name=sma", "strategy.params.fast=10", "strategy.params.slow=30", "logging.level=warning"]

    def backtest(key: str, *sets: str) -> None:
        cfg = load_config(None, [*sma, *sets])
        strategy = core.build_strategy(cfg)
        j.ids[key] = core.backtest(cfg, data, strategy, db, show_progress=False)["run_id"]
        time.sleep(0.01)  # distinct start times: "newest first" is well defined

    backtest("backtest", f"storage.url={PG_URL}")
    # The journal masks a URL's password when it stores the config (bot/redact.py); a journal an
    # older version wrote may still hold one: the API must mask it too.
    with db.begin() as conn:
        row = conn.execute(select(runs.c.config).where(runs.c.id == j.ids["backtest"])).scalar_one()
        conn.execute(update(runs).where(runs.c.id == j.ids["backtest"])
                     .values(config={**row, "storage": {**row["storage"], "url": PG_URL}}))
    backtest("kill", f"storage.url={url}", "risk.max_drawdown=0.04")
    two = load_config(ROOT / "examples" / "portfolio.yaml", [
        "markets.0.strategy.name=sma", f"storage.url={url}", "logging.level=warning"])
    markets = [core.MarketData(candles("2024-01-10", "2024-03-08", m.symbol), core.build_strategy(two, market=m))
               for m in two.markets]
    j.ids["portfolio"] = core.backtest_markets(two, markets, db, show_progress=False)["run_id"]
    time.sleep(0.01)
    cfg = load_config(None, [*sma, f"storage.url={url}"])
    market = core.MarketData(candles("2024-02-01", "2024-02-20"), core.build_strategy(cfg))
    j.ids["paper"] = asyncio.run(core.paper_replay(cfg, [market], db))["run_id"]
    _JOURNAL = j
    return j


@contextlib.contextmanager
def serving(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """``app`` on uvicorn in a thread, on a free port; yields its base URL."""
    server = make_server(app, host, 0, log_level="warning")
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def copy_journal(j: Journal, dest: Path) -> str:
    """A copy of the shared journal for a test that adds runs to it (SQLite's online backup)."""
    import sqlite3

    dest.mkdir(parents=True, exist_ok=True)
    src, dst = sqlite3.connect(j.root / "journal.db"), sqlite3.connect(dest / "journal.db")
    with dst:
        src.backup(dst)
    src.close()
    dst.close()
    return f"sqlite:///{dest / 'journal.db'}"


#: What the page shows, read in the page.
PROBE = r"""
(() => {
  const chart = document.getElementById('equity-chart');
  const rows = (id) => document.querySelectorAll('#' + id + ' tbody tr:not(.empty)').length;
  const d = window.dashboard || {};
  return JSON.stringify({
    state: document.body.dataset.state, run: d.runId || null, refreshes: d.refreshes || 0, errors: d.errors || [],
    traces: chart.querySelectorAll('.main-svg g.trace').length,
    points: chart.data && chart.data[0] ? chart.data[0].x.length : 0,
    positions: rows('positions'), decisions: rows('decisions'),
    why: Array.from(document.querySelectorAll('#decisions td.why')).map(td => td.textContent),
    status: document.getElementById('run-status').textContent,
    options: document.getElementById('run-picker').options.length,
    alerts: Array.from(document.querySelectorAll('#alerts li:not(.none)')).map(li => li.textContent),
    plotly: typeof Plotly !== 'undefined' ? Plotly.version : null,
    width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight});
})()
"""
