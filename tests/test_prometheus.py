"""Prometheus metrics (bot/prometheus.py): a paper run on the local Bybit simulator is scraped over
HTTP while it trades and at its end, and every figure equals the journal's; the observer read
straight from committed journal batches (rejects, kill switch, reconciliation, reconnects, marks);
a metrics port in use is one line and exit 2 before any run is journaled."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from bot import app as core
from bot.app import parts
from bot.app import venue as venue_app
from bot.config import load_config
from bot.live import RunOptions
from bot.observe import RunObserver
from bot.prometheus import LATENCY_BUCKETS, PrometheusObserver, reconcile_ok
from bot.reconcile import Report
from bot.timeutil import ms_to_iso
from broker.bybit_sim import SimConfig, SimServer
from storage import queries as q
from storage.journal import Committed
from tests.live_helpers import FLIP, live_cfg, modules, set_keys, sim_cfg, started_frozen
from tests.test_cli import bot

H = 3_600_000
N_BARS = 40

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(url: str) -> str:
    """A real HTTP GET, as Prometheus scrapes."""
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (sample name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def by_label(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {lab: v for (n, lab), v in samples.items() if n == name}


class ScrapeAtEnd(RunObserver):
    """Placed before the metrics observer: scrapes its endpoint over HTTP when the run has
    committed its last rows, just before the endpoint shuts down."""

    def __init__(self, metrics: PrometheusObserver) -> None:
        self.metrics, self.text = metrics, ""

    def finished(self, runner: Any, status: str) -> None:
        self.text = get(self.metrics.url)


def scraped_at_end(monkeypatch: pytest.MonkeyPatch) -> list[tuple[PrometheusObserver, ScrapeAtEnd]]:
    """Paper and live runs get the configured observers with a :class:`ScrapeAtEnd` in front."""
    made: list[tuple[PrometheusObserver, ScrapeAtEnd]] = []

    def observers(cfg: Any) -> list[RunObserver]:
        real = parts.run_observers(cfg)
        [metrics] = [o for o in real if isinstance(o, PrometheusObserver)]
        made.append((metrics, ScrapeAtEnd(metrics)))
        return [made[-1][1], *real]

    monkeypatch.setattr(venue_app, "run_observers", observers)
    return made


async def test_paper_run_scraped_over_http_equals_the_journal(btc_1h: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "flip.py").write_text(FLIP)  # every bar wants the other position: an order and a fill a bar
    made = scraped_at_end(monkeypatch)
    probe = core.load_data(load_config(None, []), str(btc_1h))
    a = int(probe.time[400])
    b = a + N_BARS * H
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    began = time.time()
    async with SimServer(SimConfig(data=[str(btc_1h)], bar_ms=150.0, start=a - 2 * H)) as sim:
        cfg = load_config(None, [f"exchange.rest_url={sim.rest_url}", f"exchange.ws_url={sim.ws_url}",
                                 f"storage.url={db_url}", f"strategy.name={tmp_path / 'flip.py'}:Flip",
                                 "logging.level=warning", "exchange.timeout_s=2", "metrics.port=0"])
        run = asyncio.ensure_future(started_frozen(sim, db_url, "paper_start", core.paper(
            cfg, date_from=ms_to_iso(a), date_to=ms_to_iso(b)), at_ms=a))
        with capture_logs() as logs:
            mid = await _scrape_while_running(made, run)
            summary = await run
    metrics, at_end = made[0]
    db = core.open_journal_db(db_url)
    rid = summary["run_id"]
    assert q.resolve_run(db, rid)["status"] == "completed"
    [listening] = [x for x in logs if x["event"] == "metrics_listening"]
    assert listening["port"] == metrics.port > 0 and listening["url"] == metrics.url

    end = parse(at_end.text)
    equity, orders, fills = q.equity(db, rid), q.orders(db, rid), q.fills(db, rid)
    assert len(equity) == N_BARS == q.resolve_run(db, rid)["bars"]
    assert value(end, "bot_bars_total", symbol="BTCUSDT") == len(equity)
    assert len(fills) >= N_BARS // 2
    for side in ("Buy", "Sell"):
        mine = [f for f in fills if f["side"] == side]
        assert value(end, "bot_fills_total", symbol="BTCUSDT", side=side.lower()) == len(mine)
        assert value(end, "bot_filled_notional_total", symbol="BTCUSDT", side=side.lower()) == pytest.approx(
            float(sum((f["qty"] * f["price"] for f in mine), Decimal(0))), rel=1e-12)
    in_status = {dict(lab)["status"]: v for lab, v in by_label(end, "bot_orders").items() if v}
    assert in_status == dict(Counter(o["status"] for o in orders))
    last = equity[-1]
    assert value(end, "bot_equity") == pytest.approx(float(last["equity"]), abs=1e-6)
    assert value(end, "bot_cash") == pytest.approx(float(last["cash"]), abs=1e-6)
    assert value(end, "bot_position", symbol="BTCUSDT") == pytest.approx(float(last["position"]))
    assert value(end, "bot_exposure", symbol="BTCUSDT") == pytest.approx(
        float(last["position"]) * float(last["price"]) / float(last["equity"]))
    journaled = q.resolve_run(db, rid)["strategy"]  # a strategy file is named by its path and class
    assert journaled.endswith("flip.py:Flip")
    assert value(end, "bot_run_info", run_id=rid, mode="paper", strategy=journaled) == 1
    assert began <= value(end, "bot_start_time_seconds") <= time.time()
    groups = value(end, "bot_decision_latency_seconds_count")
    assert 0 < groups <= N_BARS
    assert value(end, "bot_decision_latency_seconds_bucket", le="+Inf") == groups
    assert {dict(lab)["le"] for lab in by_label(end, "bot_decision_latency_seconds_bucket")} == \
        {str(b) for b in LATENCY_BUCKETS} | {"+Inf"}
    # The simulator replays 2024's candles: the wall clock is long past their close.
    assert value(end, "bot_feed_lag_seconds", symbol="BTCUSDT") > 86_400
    assert value(end, "bot_kill_switch") == 0
    rejected = [e for e in q.events(db, rid) if e["kind"] == "order_rejected"]
    assert sum(by_label(end, "bot_order_rejects_total").values()) == len(rejected)

    # Scraped mid-run: the run was trading, and every counter only grew since.
    bars_mid = value(mid, "bot_bars_total", symbol="BTCUSDT")
    assert 3 <= bars_mid < N_BARS
    for key, v in mid.items():
        if key[0].endswith("_total"):
            assert end[key] >= v, key
    with pytest.raises(urllib.error.URLError):  # the endpoint closed with the run
        get(metrics.url)
    # A resumed run's observer starts from what the journal holds: the orders in their statuses.
    resumed = PrometheusObserver()
    resumed.load_journal(db, rid)
    assert {dict(lab)["status"]: v for lab, v in by_label(read(resumed), "bot_orders").items() if v} == in_status
    assert value(read(resumed), "bot_kill_switch") == 0


async def test_live_run_reports_its_reconciliation_and_kill_switch(btc_1h: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    set_keys(monkeypatch)
    made = scraped_at_end(monkeypatch)
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    async with SimServer(sim_cfg(btc_1h, 250.0, history=400), modules()) as sim:
        cfg = live_cfg(sim.rest_url, sim.ws_url, db_url, "risk.max_drawdown=0.002", "strategy.params.fast=2",
                       "strategy.params.slow=5", "metrics.port=0")
        end = (sim.state.now_ms() // H + 30) * H
        summary = await core.live(cfg, date_to=ms_to_iso(end), options=RunOptions(stream_check_s=0.1))
    db = core.open_journal_db(db_url)
    events = q.events(db, summary["run_id"])
    [start] = [e for e in events if e["kind"] == "reconcile"]  # before the first bar, positions agreed
    assert start["payload"]["position_venue"] == start["payload"]["position_journal"]
    assert [e["kind"] for e in events].count("kill_switch") == 1
    s = parse(made[0][1].text)
    assert value(s, "bot_run_info", run_id=summary["run_id"], mode="live", strategy="sma") == 1
    assert value(s, "bot_reconcile_ok", symbol="BTCUSDT") == 1
    assert value(s, "bot_reconcile_timestamp_seconds", symbol="BTCUSDT") > 0
    assert value(s, "bot_kill_switch") == 1
    fills = q.fills(db, summary["run_id"])
    assert sum(by_label(s, "bot_fills_total").values()) == len(fills) > 0
    resumed = PrometheusObserver()
    resumed.load_journal(db, summary["run_id"])  # a resumed run's kill switch stays tripped
    assert value(read(resumed), "bot_kill_switch") == 1


async def _scrape_while_running(made: list[Any], run: asyncio.Future[Any]) -> Samples:
    """Scrape the endpoint over HTTP until the running run has marked a few bars."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert not run.done(), "the run ended before it was scraped"
        if made and made[0][0].port:
            got = parse(await asyncio.to_thread(get, made[0][0].url))
            if got.get(("bot_bars_total", frozenset({("symbol", "BTCUSDT")})), 0) >= 3:
                assert not run.done()
                return got
        await asyncio.sleep(0.05)
    raise AssertionError("no scrape showed three bars")


# -- the observer, fed committed journal batches ---------------------------------------------------
def batch(**rows: Any) -> Committed:
    empty: dict[str, Any] = {"decisions": [], "decision_updates": {}, "new_orders": [], "order_updates": {},
                             "fills": [], "trades": [], "equity": [], "events": [], "run_update": {}}
    return Committed("r1", **{**empty, **rows})


def event(kind: str, **payload: Any) -> dict[str, Any]:
    return {"run_id": "r1", "time": 0, "kind": kind, "payload": payload}


def order(oid: str, status: str, symbol: str = "BTCUSDT") -> dict[str, Any]:
    return {"id": oid, "run_id": "r1", "symbol": symbol, "side": "Buy", "qty": Decimal("0.01"), "status": status}


def read(obs: PrometheusObserver) -> Samples:
    return parse(generate_latest(obs.registry).decode())


def test_rejected_orders_and_order_statuses() -> None:
    obs = PrometheusObserver()
    obs.committed(batch(new_orders=[order("r1-BTCUSDT-1-0", "submitted"), order("r1-ETHUSDT-1-0", "submitted",
                                                                               "ETHUSDT")]))
    obs.committed(batch(new_orders=[order("r1-BTCUSDT-2-0", "rejected")],
                        events=[event("order_rejected", order_id="r1-BTCUSDT-2-0", reason="110007")]))
    obs.committed(batch(order_updates={"r1-BTCUSDT-1-0": {"status": "filled"},
                                       "r1-ETHUSDT-1-0": {"status": "rejected"}},
                        events=[event("order_rejected", order_id="r1-ETHUSDT-1-0", reason="venue said no")]))
    s = read(obs)
    assert value(s, "bot_order_rejects_total", symbol="BTCUSDT") == 1
    assert value(s, "bot_order_rejects_total", symbol="ETHUSDT") == 1
    assert {tuple(sorted(dict(lab).items())): v for lab, v in by_label(s, "bot_orders").items() if v} == {
        (("status", "filled"), ("symbol", "BTCUSDT")): 1, (("status", "rejected"), ("symbol", "BTCUSDT")): 1,
        (("status", "rejected"), ("symbol", "ETHUSDT")): 1}
    assert value(s, "bot_orders", symbol="BTCUSDT", status="submitted") == 0


def test_kill_switch_reconnects_and_stale_feeds() -> None:
    obs = PrometheusObserver()
    assert value(read(obs), "bot_kill_switch") == 0
    obs.committed(batch(events=[event("feed_reconnect", symbol="BTCUSDT,ETHUSDT", error="ConnectionError", wait_s=1),
                                event("feed_stale", symbol="ETHUSDT", last_bar=0, server_time=1, behind_ms=9)]))
    obs.committed(batch(events=[event("feed_reconnect", symbol="BTCUSDT,ETHUSDT", error="timeout", wait_s=2),
                                event("kill_switch", reason="max_drawdown", equity=7400.0, action="flatten")]))
    s = read(obs)
    assert value(s, "bot_feed_reconnects_total") == 2
    assert value(s, "bot_feed_stale_total", symbol="ETHUSDT") == 1
    assert value(s, "bot_kill_switch") == 1


def test_reconciliation_results() -> None:
    agree = Report(position_venue="0.010", position_journal="0.01").as_dict()
    differ = Report(position_venue="0.02", position_journal="0.01").as_dict()
    dust = Report(position_venue="0.0100004", position_journal="0.01", dust="0.0000004").as_dict()
    assert reconcile_ok("reconcile", agree) and reconcile_ok("reconcile", dust)
    assert not reconcile_ok("reconcile", differ)
    obs = PrometheusObserver()
    before = time.time()
    obs.committed(batch(events=[event("reconcile", symbol="BTCUSDT", **agree),
                                event("reconcile", symbol="ETHUSDT", **differ)]))
    s = read(obs)
    assert value(s, "bot_reconcile_ok", symbol="BTCUSDT") == 1
    assert value(s, "bot_reconcile_ok", symbol="ETHUSDT") == 0
    assert before <= value(s, "bot_reconcile_timestamp_seconds", symbol="ETHUSDT") <= time.time()
    # Periodic: missed fills recovered alone leave the books agreeing; a books difference does not.
    obs.committed(batch(events=[event("reconcile_periodic", symbol="ETHUSDT", fills_recovered=2)]))
    assert value(read(obs), "bot_reconcile_ok", symbol="ETHUSDT") == 1
    obs.committed(batch(events=[event("reconcile_periodic", symbol="BTCUSDT", fills_recovered=0, qty_books="0.01",
                                      qty_venue="0.02", cash_books="10", cash_venue="9")]))
    assert value(read(obs), "bot_reconcile_ok", symbol="BTCUSDT") == 0
    obs.committed(batch(events=[event("reconcile", symbol="BTCUSDT", **agree),
                                event("reconcile_mismatch", symbol="BTCUSDT", broker_qty=0.02, engine_qty=0.01)]))
    assert value(read(obs), "bot_reconcile_ok", symbol="BTCUSDT") == 0


def test_marks_fills_and_exposure_of_two_markets() -> None:
    obs = PrometheusObserver()
    # Equity blocks as the engines hand them over: (symbol, times, equity, cash, position, price);
    # each row's equity is the portfolio's at that market's bar.
    obs.committed(batch(equity=[("BTCUSDT", [0, H], [10_000.0, 10_050.0], [5_000.0, 5_000.0], [0.1, 0.1],
                                 [50_000.0, 50_500.0]),
                                ("ETHUSDT", [0, H], [10_000.0, 10_040.0], [5_000.0, 5_000.0], [-1.0, -1.0],
                                 [3_000.0, 3_010.0])],
                        fills=[{"symbol": "ETHUSDT", "side": "Sell", "qty": Decimal("1.0"), "price": Decimal("3000")},
                               {"symbol": "BTCUSDT", "side": "Buy", "qty": Decimal("0.1"),
                                "price": Decimal("50000")}]))
    s = read(obs)
    assert value(s, "bot_bars_total", symbol="BTCUSDT") == value(s, "bot_bars_total", symbol="ETHUSDT") == 2
    assert value(s, "bot_equity") == 10_040.0 and value(s, "bot_cash") == 5_000.0  # the last market marked
    assert value(s, "bot_position", symbol="ETHUSDT") == -1.0
    assert value(s, "bot_exposure", symbol="ETHUSDT") == pytest.approx(-3_010.0 / 10_040.0)
    assert value(s, "bot_exposure", symbol="BTCUSDT") == pytest.approx(0.1 * 50_500.0 / 10_050.0)
    assert value(s, "bot_fills_total", symbol="ETHUSDT", side="sell") == 1
    assert value(s, "bot_filled_notional_total", symbol="BTCUSDT", side="buy") == 5_000.0


def test_two_observers_keep_their_own_registries() -> None:
    a, b = PrometheusObserver(), PrometheusObserver()
    a.committed(batch(events=[event("feed_reconnect", symbol="BTCUSDT")]))
    assert value(read(a), "bot_feed_reconnects_total") == 1
    assert value(read(b), "bot_feed_reconnects_total") == 0


# -- the command line ------------------------------------------------------------------------------
def test_a_metrics_port_in_use_is_one_line_and_no_run(btc_1h: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'j.db'}"
    args = ("run", "--mode", "paper", "--feed", "replay", "--data", str(btc_1h), "--from", "2024-01-01",
            "--to", "2024-01-05", "--speed", "0", "--db", db)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        r = bot(*args, "--metrics-port", str(port))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"metrics port {port} on 127.0.0.1 is not free" in lines[0], r.stderr
    assert q.list_runs(core.open_journal_db(db)) == []
    r = bot(*args, "--metrics-port", "70000")
    assert r.returncode == 2 and r.stderr.strip() == \
        "error: invalid configuration: metrics.port: Input should be less than or equal to 65535", r.stderr
    assert q.list_runs(core.open_journal_db(db)) == []
