"""An operator can follow every order in the log: a paper run (replayed file) and a live run on
the simulator (real ``bot`` processes, JSON logs) log each order sent, acknowledged, filled
(qty, price, fee) and, live, rejected with Bybit's code and message; the lines agree with the
journal and carry no secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from bot import app as core
from bot.timeutil import ms_to_iso
from broker.bybit_sim import SimConfig
from broker.bybit_sim.private import account_of
from broker.bybit_sim.testing import sim_thread
from storage import queries as q
from tests.helpers import clock_held_until_subscribed
from tests.live_helpers import KEY, SECRET, modules

H = 3_600_000
SETS = ["strategy.params.fast=2", "strategy.params.slow=5", "logging.format=json", "logging.level=info"]


def _run(args: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> list[dict[str, Any]]:
    cmd = [sys.executable, "-m", "bot", *args, "--strategy", "sma", "--json"]
    for s in SETS:
        cmd += ["--set", s]
    res = subprocess.run(cmd, capture_output=True, timeout=timeout, env=dict(os.environ, **(env or {})))
    err = res.stderr.decode()
    assert res.returncode == 0, err[-3000:]
    for s in (KEY, SECRET):
        assert s not in err and s not in res.stdout.decode()
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def _by(lines: list[dict[str, Any]], event: str) -> dict[str, dict[str, Any]]:
    got: dict[str, dict[str, Any]] = {}
    for x in lines:
        if x["event"] == event:
            assert x["order"] not in got or event == "order_partially_filled", (event, x)
            got[x["order"]] = x
    return got


def _check_against_journal(lines: list[dict[str, Any]], db: Any, run_id: str) -> list[dict[str, Any]]:
    orders = q.orders(db, run_id)
    sent, acked = _by(lines, "order_sent"), _by(lines, "order_acknowledged")
    assert set(sent) == {o["id"] for o in orders}
    for o in orders:
        s = sent[o["id"]]
        assert (Decimal(s["qty"]), s["side"], s["symbol"], s["decision"]) == (o["qty"], o["side"], o["symbol"],
                                                                             o["decision_id"])
    assert {o["id"] for o in orders if o["exchange_order_id"]} == set(acked)
    fills = [x for x in lines if x["event"] in ("order_filled", "order_partially_filled")]
    journal_fills = {f["exec_id"]: f for f in q.fills(db, run_id)}
    assert sorted(x["exec_id"] for x in fills) == sorted(journal_fills)
    for x in fills:
        f = journal_fills[x["exec_id"]]
        assert (Decimal(x["qty"]), Decimal(x["price"]), Decimal(x["fee"]), x["order"]) == (
            f["qty"], f["price"], f["fee"], f["order_id"])
    return orders


def test_a_paper_run_logs_every_order_sent_acknowledged_and_filled(btc_1h: Path, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'paper.db'}"
    lines = _run(["run", "--mode", "paper", "--feed", "replay", "--data", str(btc_1h), "--from", "2025-01-01",
                  "--to", "2025-01-08", "--db", db_url])
    db = core.open_journal_db(db_url)
    run = q.list_runs(db)[0]
    orders = _check_against_journal(lines, db, run["id"])
    assert len(orders) >= 10 and all(o["status"] == "filled" for o in orders[:-1])
    assert len(_by(lines, "order_filled")) >= len(orders) - 1


def test_a_live_run_logs_every_order_and_bybits_refusals(btc_1h: Path, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'live.db'}"
    with sim_thread(SimConfig(data=[str(btc_1h)], bar_ms=300.0, history=300), modules()) as sim:
        acct = account_of(sim.state)

        def withdraw(_e: Any) -> None:  # after the first fill the account's USDT is withdrawn
            acct.coins["USDT"] = Decimal("1")
            acct.before_exec_push = None

        acct.before_exec_push = withdraw
        with clock_held_until_subscribed(sim):  # a slow start-up must not eat the 40 bars
            end = (sim.state.now_ms() // H + 40) * H
            lines = _run(["run", "--mode", "live", "--set", f"exchange.rest_url={sim.rest_url}",
                          "--set", f"exchange.ws_url={sim.ws_url}", "--set", f"storage.url={db_url}",
                          "--set", "exchange.timeout_s=2", "--to", ms_to_iso(end)],
                         env={"BYBIT_API_KEY": KEY, "BYBIT_API_SECRET": SECRET})
    db = core.open_journal_db(db_url)
    run = q.list_runs(db)[0]
    orders = _check_against_journal(lines, db, run["id"])
    assert any(o["status"] == "filled" for o in orders)
    rejected = _by(lines, "order_rejected")
    assert rejected, [x["event"] for x in lines]
    assert rejected == {k: v for k, v in rejected.items() if k in {o["id"] for o in orders
                                                                  if o["status"] == "rejected"}}
    for x in rejected.values():
        assert x["code"] == 110007 and "ab not enough for new order" in x["reason"], x


async def test_a_paper_order_the_cash_cannot_pay_at_the_fill_price_is_logged_cancelled(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    from bot.config import load_config
    from tests.helpers import ScriptedStrategy, make_data

    # Bought on bar 5's close at 100; bar 6 opens at 20,000,000: the cash pays for less than a lot.
    rows = [(100.0, 100.0, 100.0, 100.0)] * 6 + [(2e7, 2e7, 2e7, 2e7)] * 3
    cfg = load_config(None, [f"storage.url=sqlite:///{tmp_path / 'p.db'}"])
    db = core.open_journal_db(cfg.storage.url)
    with capture_logs() as logs:
        s = await core.paper_replay(cfg, [core.MarketData(make_data(rows), ScriptedStrategy({5: 1.0}), 0)], db)
    [order] = q.orders(db, s["run_id"])
    assert order["status"] == "cancelled"
    steps = [(x["event"], x.get("reason")) for x in logs if x.get("order") == order["id"]]
    assert steps == [("order_sent", None), ("order_acknowledged", None),
                     ("order_cancelled", "insufficient cash at the fill price")]
