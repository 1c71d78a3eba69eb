"""Operating a bot, all at once: one paper run on the local Bybit simulator is watched from the
dashboard (``bot serve``'s app in headless Chromium), scraped by Prometheus' text format over
HTTP, and sends its fill alerts to a webhook on 127.0.0.1; the three agree with the journal.

The simulator's market stops by itself after a few bars (``SimClock.pause_at``) so that the run is
still running, whatever the machine's load, while it is looked at; then it trades to its end."""

from __future__ import annotations

import asyncio
import os
import socket
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot import app as core
from bot.api import create_app
from bot.config import load_config
from bot.live import RunOptions
from bot.timeutil import ms_to_iso
from broker.bybit_sim import SimConfig, SimServer
from storage import queries as q
from tests import cdp
from tests.live_helpers import FLIP, started_frozen, until
from tests.serve_helpers import PROBE, TOKEN, serving
from tests.webhook import Receiver, fills_in

H = 3_600_000
BARS, PAUSE = 24, 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def journal_fills(db: object, rid: str) -> list[tuple[str, Decimal, str, Decimal]]:
    return [(f["side"].lower(), f["qty"], f["symbol"], f["price"]) for f in q.fills(db, rid)]


async def test_paper_run_watched_scraped_and_alerting(btc_1h: Path, tmp_path: Path, receiver: Receiver,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "flip.py").write_text(FLIP)  # a new position every bar: an order and a fill a bar
    monkeypatch.setenv("BOT_ALERT_URLS", receiver.url())
    probe = core.load_data(load_config(None, []), str(btc_1h))
    a = int(probe.time[400])
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    port = free_port()
    metrics = f"http://127.0.0.1:{port}/metrics"
    async with SimServer(SimConfig(data=[str(btc_1h)], bar_ms=100.0, start=a - 2 * H)) as sim:
        cfg = load_config(None, [f"exchange.rest_url={sim.rest_url}", f"exchange.ws_url={sim.ws_url}",
                                 f"storage.url={db_url}", f"strategy.name={tmp_path / 'flip.py'}:Flip",
                                 "logging.level=warning", "exchange.timeout_s=2", f"metrics.port={port}",
                                 "alerts.min_interval_s=0", "alerts.max_per_minute=100000"])
        run = asyncio.ensure_future(started_frozen(sim, db_url, "paper_start", core.paper(
            cfg, date_from=ms_to_iso(a), date_to=ms_to_iso(a + BARS * H),
            options=RunOptions(stream_check_s=0.1)), at_ms=a))
        clock = sim.state.clock
        await until(lambda: not clock.paused and clock.now_ms() > a or run.done(), "the market to open", 120)
        clock.pause_at(a + PAUSE * H)  # the run waits there, running, while it is looked at
        db = core.open_journal_db(db_url)
        await until(lambda: len(q.list_runs(db)) == 1 and q.resolve_run(db, "latest")["bars"] >= PAUSE - 1
                    or run.done(), "the first bars", 120)
        assert not run.done(), run.result()
        rid = q.resolve_run(db, "latest")["id"]

        # Prometheus: the figures so far are the journal's.
        mid = scrape(metrics)
        assert mid[("bot_bars_total", frozenset({("symbol", "BTCUSDT")}))] == len(q.equity(db, rid))
        assert sum(v for (n, _), v in mid.items() if n == "bot_fills_total") == len(q.fills(db, rid)) >= 2

        # The webhook: a fill alert, exactly the journal's fill.
        await until(lambda: bool(fills_in(receiver.messages)), "a fill alert", 60)
        assert set(fills_in(receiver.messages)) <= set(journal_fills(db, rid))

        # The dashboard, in Chromium: it follows the running run, draws it and says why.
        with serving(create_app(db_url, TOKEN)) as base, cdp.chromium() as chrome:
            async with cdp.page_session(chrome) as page:
                await cdp.navigate(page, f"{base}/?token={TOKEN}&refresh=1")
                seen = await cdp.poll(page, PROBE, lambda p: p["state"] == "ready" and p["run"] == rid
                                      and p["traces"] >= 1 and p["decisions"] >= 1, timeout=120)
                shot = await cdp.screenshot(page, Path(os.environ.get("BOT_OPS_SHOT", tmp_path / "dashboard.png")),
                                            seen["width"], seen["height"])
                errors = cdp.errors(page.events)
        assert seen["status"] == "running" and seen["points"] >= PAUSE - 1 and seen["positions"] == 1
        assert errors == [] and shot.stat().st_size > 10_000

        clock.resume()
        summary = await run
    assert summary["run_id"] == rid and q.resolve_run(db, rid)["status"] == "completed"
    fills = journal_fills(db, rid)
    assert len(fills) >= BARS // 2
    # No rate limit here: every journaled fill was alerted, once.
    await asyncio.to_thread(receiver.wait_for, lambda: len(fills_in(receiver.messages)) >= len(fills),
                            "every fill alerted", 60)
    assert sorted(fills_in(receiver.messages)) == sorted(fills)
    with pytest.raises(OSError):  # the metrics endpoint closed with the run
        scrape(metrics)
