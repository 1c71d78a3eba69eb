"""Alerts (bot/alerts.py) against a real HTTP receiver on 127.0.0.1, through apprise's json://
URL: paper runs on the local Bybit simulator alert what their journal holds, the rate limit holds
messages back and says how many, no secret ever reaches a message, a bad URL is refused."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot import app as core
from bot.alert_messages import Message
from bot.alerts import AlertObserver, AlertSender, RateLimiter, Redactor, known_secrets, load_services
from bot.config import AlertsConfig, load_config
from bot.errors import ConfigError
from bot.live import RunOptions
from bot.timeutil import ms_to_iso
from broker.bybit_sim import SimConfig, SimServer
from storage import queries as q
from storage.journal import Committed
from tests.live_helpers import FLIP, KEY, SECRET, started_frozen
from tests.webhook import TOKEN, Receiver, fills_in

ROOT = Path(__file__).resolve().parents[1]
HOUR, DAY = 3_600_000, 86_400_000
A_INDEX = 400  # first traded bar of the simulator runs


def field(message: dict[str, Any], name: str) -> str:
    m = re.search(rf"^{re.escape(name)}: (.*)$", message["message"], re.M)
    assert m, (name, message)
    return m.group(1)


async def paper_run(btc_1h: Path, tmp_path: Path, *sets: str, bars: int = 48,
                    strategy: tuple[str, ...] = ("strategy.name=sma", "strategy.params.fast=3",
                                                 "strategy.params.slow=8")) -> tuple[dict[str, Any], Any]:
    """An in-process paper run on the simulator over ``bars`` hourly bars (crossing UTC midnight)."""
    probe = core.load_data(load_config(None, []), str(btc_1h))
    a, b = int(probe.time[A_INDEX]), int(probe.time[A_INDEX + bars])
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    async with SimServer(SimConfig(data=[str(btc_1h)], bar_ms=20.0, start=a - 2 * HOUR)) as sim:
        cfg = load_config(None, [f"exchange.rest_url={sim.rest_url}", f"exchange.ws_url={sim.ws_url}",
                                 f"storage.url={db_url}", "logging.level=error", *strategy, *sets])
        summary = await started_frozen(sim, db_url, "paper_start", core.paper(
            cfg, date_from=ms_to_iso(a), date_to=ms_to_iso(b), options=RunOptions(stream_check_s=0.1)), at_ms=a)
    return summary, core.open_journal_db(db_url)


NO_LIMIT = ("alerts.min_interval_s=0", "alerts.max_per_minute=100000", "alerts.queue_size=10000")


# -- (a) fills and the day's summary ---------------------------------------------------------------
async def test_paper_run_alerts_each_fill_as_journaled(btc_1h: Path, tmp_path: Path, receiver: Receiver,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_ALERT_URLS", receiver.url())
    summary, db = await paper_run(btc_1h, tmp_path, *NO_LIMIT)
    run = summary["run_id"]
    fills = q.fills(db, run)
    assert len(fills) >= 4
    sent = receiver.titled("Fill") + receiver.titled(f"{len(fills)} fills")
    assert sent and all(f"run {run} (paper)" in m["message"] for m in sent)
    assert sorted(fills_in(receiver.messages)) == sorted(
        (f["side"].lower(), f["qty"], f["symbol"], f["price"]) for f in fills)
    assert set(receiver.paths) == {f"/hook/{TOKEN}"}

    # Each UTC day change of the bars: the day just ended, from its journal rows.
    equity = q.equity(db, run)
    days = sorted({r["time"] // DAY for r in equity})
    summaries = {m["title"].removeprefix("Daily summary "): m for m in receiver.titled("Daily summary")}
    assert sorted(summaries) == [ms_to_iso(d * DAY)[:10] for d in days[:-1]]
    for d in days[:-1]:
        m = summaries[ms_to_iso(d * DAY)[:10]]
        last = [r for r in equity if r["time"] // DAY == d][-1]
        assert Decimal(field(m, "equity").replace(",", "")) == Decimal(f"{last['equity']:.2f}")
        assert int(field(m, "fills")) == sum(1 for f in fills if f["time"] // DAY == d)

    receiver.wait_for(lambda: bool(receiver.titled(f"Run {run}")), "the run's end")
    end = receiver.titled(f"Run {run}")
    assert len(end) == 1 and end[0]["title"] == f"Run {run} completed" and end[0]["type"] == "success"
    assert int(field(end[0], "fills")) == len(fills)
    assert Decimal(field(end[0], "equity").replace(",", "")) == Decimal(f"{summary['final_equity']:.2f}")


# -- (b) the kill switch -----------------------------------------------------------------------------
async def test_kill_switch_alerts_with_its_reason(btc_1h: Path, tmp_path: Path, receiver: Receiver,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_ALERT_URLS", receiver.url())
    summary, db = await paper_run(btc_1h, tmp_path, "risk.max_drawdown=0.0005", *NO_LIMIT)
    kills = [e for e in q.events(db, summary["run_id"]) if e["kind"] == "kill_switch"]
    assert len(kills) == 1
    k = kills[0]["payload"]
    sent = receiver.titled("Kill switch")
    assert len(sent) == 1 and sent[0]["title"] == "Kill switch: max_drawdown" and sent[0]["type"] == "failure"
    assert field(sent[0], "reason") == k["reason"]
    assert Decimal(field(sent[0], "equity").replace(",", "")) == Decimal(f"{k['equity']:.2f}")
    assert field(sent[0], "time") == ms_to_iso(kills[0]["time"])
    assert field(sent[0], "action").startswith("flatten")
    # The flattening order's fill says why it went out.
    assert any("kill switch (max_drawdown)" in m["message"] for m in receiver.titled("Fill"))


# -- (c) the rate limit --------------------------------------------------------------------------------
def flip(tmp_path: Path) -> tuple[str, ...]:
    (tmp_path / "flip.py").write_text(FLIP)
    return (f"strategy.name={tmp_path / 'flip.py'}:Flip",)


async def test_rate_limit_caps_messages_and_counts_the_rest(btc_1h: Path, tmp_path: Path, receiver: Receiver,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A fill every bar, at most 3 messages a minute: the rest are counted, none is lost."""
    monkeypatch.setenv("BOT_ALERT_URLS", receiver.url())
    began = time.monotonic()
    summary, db = await paper_run(btc_1h, tmp_path, "alerts.min_interval_s=0", "alerts.max_per_minute=3",
                                  "alerts.daily_summary=false", strategy=flip(tmp_path), bars=40)
    minutes = (time.monotonic() - began) // 60 + 1
    fills = q.fills(db, summary["run_id"])
    assert len(fills) >= 20
    receiver.wait_for(lambda: bool(receiver.titled("Run ")), "the run's end")
    limited = [m for m in receiver.messages if not m["title"].startswith("Run ")]
    assert 1 <= len(limited) <= 3 * minutes
    told = len(fills_in(limited))
    folded = sum(int(n) for m in limited for n in re.findall(r"^\+(\d+) earlier fills", m["message"], re.M))
    held = re.search(r"not alerted \(rate limit\): (\d+) fills", receiver.titled("Run ")[0]["message"])
    assert held, receiver.titled("Run ")
    assert told + folded + int(held.group(1)) == len(fills)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_rate_limiter_per_kind_interval_global_cap_and_held_counts() -> None:
    clock = FakeClock()
    rl = RateLimiter(min_interval_s=60, max_per_minute=3, clock=clock)
    assert rl.admit("fill", 2) == 0
    assert rl.admit("fill", 1) is None and rl.admit("fill", 4) is None  # within 60 s of the last fill
    assert rl.admit("order_rejected") == 0 and rl.admit("feed_stale") == 0
    assert rl.admit("kill_switch") is None  # 3 in this minute already, all kinds together
    clock.t += 60
    assert rl.admit("fill", 1) == 5  # the held fills are told with the next fill message
    assert rl.take_held() == {"kill_switch": 1}
    assert rl.take_held() == {}


def committed(run: str, fills: list[dict[str, Any]]) -> Committed:
    return Committed(run, [], {}, [], {}, fills, [], [], [], {})


def test_held_fills_are_folded_into_the_next_fill_message(receiver: Receiver) -> None:
    clock = FakeClock()
    cfg = AlertsConfig(min_interval_s=60)
    sender = AlertSender(load_services([receiver.url()]), Redactor([]))
    obs = AlertObserver(cfg, sender, 10_000.0, RateLimiter(cfg.min_interval_s, cfg.max_per_minute, clock))
    obs.run_id, obs.mode = "r1", "paper"

    def fill(i: int) -> dict[str, Any]:
        return {"exec_id": f"e{i}", "order_id": f"o{i}", "symbol": "BTCUSDT", "side": "Buy",
                "qty": Decimal("0.01"), "price": Decimal("40000.5") + i, "fee": Decimal("0.4"),
                "fee_currency": "USDT", "time": 1_700_000_000_000}

    for i in range(4):  # sent, held, held, held
        obs.committed(committed("r1", [fill(i)]))
        clock.t += 10
    clock.t += 60
    obs.committed(committed("r1", [fill(4), fill(5)]))
    obs.finished(None, "completed")
    fills = receiver.titled("Fill") + receiver.titled("2 fills")
    assert [len(fills_in([m])) for m in fills] == [1, 2]
    assert "+3 earlier fills not alerted (rate limit)" in fills[1]["message"]
    assert fills_in([fills[1]])[1] == ("buy", Decimal("0.01"), "BTCUSDT", Decimal("40005.5"))
    assert "not alerted" not in receiver.titled("Run r1")[0]["message"]  # nothing left held at the end


def test_rejections_stale_feed_and_reconcile_trouble_alert_clean_reconciles_do_not(receiver: Receiver) -> None:
    sender = AlertSender(load_services([receiver.url()]), Redactor([]))
    obs = AlertObserver(AlertsConfig(min_interval_s=0), sender, 10_000.0)
    obs.run_id, obs.mode = "r2", "live"
    t = 1_700_000_000_000
    order = {"id": "r2-4314-1-0", "decision_id": None, "symbol": "ETHUSDT", "side": "Sell", "qty": Decimal("0.5")}
    rejected = {"time": t, "kind": "order_rejected", "payload": {"order_id": order["id"], "reason": "110007: ab"}}
    clean = {"symbol": "ETHUSDT", "resolved": [], "updated": [], "adopted": [], "fills_added": 0,
             "position_venue": "0.5", "position_journal": "0.5"}
    events = [rejected, rejected,  # once when sent, once when the venue's answer came: one alert
              {"time": t, "kind": "feed_stale", "payload": {"symbol": "ETHUSDT", "last_bar": t - 3 * HOUR,
                                                            "server_time": t, "behind_ms": 3 * HOUR}},
              {"time": t, "kind": "reconcile", "payload": clean},
              {"time": t, "kind": "reconcile", "payload": {**clean, "position_venue": "0.6"}},
              {"time": t, "kind": "reconcile_periodic", "payload": {
                  "symbol": "ETHUSDT", "fills_recovered": 0, "qty_books": "0.5", "qty_venue": "0.6",
                  "cash_books": "100", "cash_venue": "90"}},
              {"time": t, "kind": "feed_reconnect", "payload": {}}]
    obs.committed(Committed("r2", [], {}, [order], {}, [], [], [], events, {}))
    obs.finished(None, "stopped")
    assert [m["title"] for m in receiver.messages] == [
        "Order rejected: sell 0.5 ETHUSDT", "Feed stale: ETHUSDT 180 min behind",
        "Reconciliation: ETHUSDT differs from the venue", "Reconciliation: ETHUSDT books resynced", "Run r2 stopped"]
    rej, _, rec, books, end = receiver.messages
    assert field(rej, "reason") == "110007: ab" and field(rej, "order") == order["id"] and rej["type"] == "warning"
    assert field(rec, "position") == "venue 0.6, journal 0.5"
    assert field(books, "position") == "books 0.5, venue 0.6 (resynced to the venue)"
    assert end["type"] == "warning"


# -- (d) no secret in any message ----------------------------------------------------------------------
async def test_no_secret_reaches_any_message(btc_1h: Path, tmp_path: Path, receiver: Receiver,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BYBIT_API_KEY", KEY)
    monkeypatch.setenv("BYBIT_API_SECRET", SECRET)
    monkeypatch.setenv("BOT_ALERT_URLS", receiver.url())
    summary, _ = await paper_run(btc_1h, tmp_path, *NO_LIMIT, strategy=flip(tmp_path), bars=30)
    receiver.wait_for(lambda: bool(receiver.titled(f"Run {summary['run_id']}")), "the run's end")
    assert len(receiver.messages) >= 10
    for m in receiver.messages:
        text = json.dumps(m)
        for secret in (KEY, SECRET, TOKEN, receiver.url()):
            assert secret not in text


def test_redactor_removes_every_known_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BYBIT_API_KEY", KEY)
    monkeypatch.setenv("BYBIT_API_SECRET", SECRET)
    urls = ["tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/-100987654", "discord://112233445566778899/"
            "Wb0dXhvkRTqgMmEU-Fw0aFsE7_hd_5l3o2", "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ",
            "mailto://alice:pa55word@example.org"]
    cfg = load_config(None, ["storage.url=postgresql+psycopg://bot:dbPa55w0rd@db.internal:5432/journal"])
    redact = Redactor(known_secrets(cfg, urls))
    secrets = [KEY, SECRET, "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "Wb0dXhvkRTqgMmEU-Fw0aFsE7_hd_5l3o2",
               "TIiajkdnlazkcOXrIdevi7FQ", "pa55word", "dbPa55w0rd", *urls]
    for s in secrets:
        out = redact(f"Fill: buy 0.01 BTCUSDT @ 40000.5\nreason: venue said {s} (code 10001)")
        assert s not in out and "***" in out
        assert out.startswith("Fill: buy 0.01 BTCUSDT @ 40000.5\nreason: venue said ")
    assert redact("qty 0.012 at 2024-01-01T00:00:00Z") == "qty 0.012 at 2024-01-01T00:00:00Z"


def test_sender_failure_is_logged_never_raised(receiver: Receiver) -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    sender = AlertSender(load_services([f"json://127.0.0.1:{dead}/x", receiver.url()]), Redactor([]))
    assert sender.send(Message("fill", "t", "b")) is False
    assert (sender.failed, sender.sent) == (1, 1) and len(receiver.messages) == 1


# -- (e) a bad URL is refused by the CLI -----------------------------------------------------------------
def test_bad_url_is_named_by_position_never_by_text() -> None:
    with pytest.raises(ConfigError) as err:
        load_services(["json://127.0.0.1:9/ok", f"nosuchservice://{TOKEN}@example.org"])
    assert "entry 2 of 2" in str(err.value) and TOKEN not in str(err.value)


def bot(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os  # noqa: PLC0415

    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=300, check=False)


REPLAY = ("run", "--mode", "paper", "--feed", "replay", "--speed", "0", "--from", "2025-01-01", "--to",
          "2025-01-04", "--set", "strategy.params.fast=3", "--set", "strategy.params.slow=8")


def test_cli_refuses_a_bad_url_with_exit_2_before_the_run(btc_1h: Path, tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    r = bot(*REPLAY, "--data", str(btc_1h), "--db", f"sqlite:///{db}", cwd=tmp_path,
            env={"BOT_ALERT_URLS": f"json://127.0.0.1:9/ok, tgram://{TOKEN}"})
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "BOT_ALERT_URLS: entry 2 of 2" in lines[0], r.stderr
    assert TOKEN not in r.stderr + r.stdout
    assert not db.exists()  # refused before the journal was opened


def test_cli_replay_alerts_and_survives_a_dead_service(btc_1h: Path, tmp_path: Path, receiver: Receiver) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    db = f"sqlite:///{tmp_path / 'j.db'}"
    r = bot(*REPLAY, "--data", str(btc_1h), "--db", db, "--json", cwd=tmp_path,
            env={"BOT_ALERT_URLS": f"json://127.0.0.1:{dead}/dead/{TOKEN} {receiver.url()}"})
    assert r.returncode == 0, r.stderr
    run = json.loads(r.stdout)["run_id"]
    assert [m["title"] for m in receiver.titled("Run ")] == [f"Run {run} completed"]
    assert receiver.titled("Fill")  # the default limits: one fill message a minute
    assert "alert_send_failed" in r.stderr and TOKEN not in r.stderr
