"""Leverage and liquidation of linear markets in the simulated broker, as tables.

Rules under test (README, "Fill assumptions", rule 10; broker/margin.py): isolated margin
IM = |qty| x entry / leverage; Bybit's liquidation price long ``entry - (IM - MM) / |qty|``
(short ``+``), MM = |qty| x entry x MMR (0.5 %); a bar whose low (long) / high (short) reaches
it closes the position at the bankruptcy price ``entry -/+ IM / |qty|`` (the trader loses the
margin, plus the closing fee); an opening fill needs its margin and fee from the available
balance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from bot import app as core
from bot.config import load_config
from bot.domain import Category, Instrument
from broker.margin import MarginRule
from storage import queries as q
from storage.db import open_database
from tests.helpers import HOUR, T0, ScriptedStrategy, make_data

D = Decimal
ROOT = Path(__file__).resolve().parents[1]
BTC = Instrument("BTCUSDT", Category.LINEAR, D("0.1"), D("0.001"), D("0.001"), D("5"))
FLAT = (100.0, 100.0, 100.0, 100.0)
LEV10 = ["market.leverage=10", "risk.max_exposure=10"]


def test_bybit_worked_examples() -> None:
    """Bybit's help-centre example: 1 BTC long at 20,000 with 50x, MMR 0.5 % -> 19,700; the
    short mirrors it; bankruptcy at the 0 % margin price."""
    rule = MarginRule(leverage=D(50))
    ins = Instrument("BTCUSDT", Category.LINEAR, D("0.1"), D("0.001"), D("0.001"))
    assert rule.initial_margin(D(1), D(20_000)) == 400
    assert rule.maintenance_margin(D(1), D(20_000)) == 100
    assert rule.liquidation_price(D(1), D(20_000), ins) == D("19700")
    assert rule.liquidation_price(D(-1), D(20_000), ins) == D("20300")
    assert rule.bankruptcy_price(D(1), D(20_000), ins) == D("19600")
    assert rule.bankruptcy_price(D(-1), D(20_000), ins) == D("20400")
    # Rounded to the tick against the trader: the trigger towards the entry, the close away from it.
    assert MarginRule(leverage=D(3)).liquidation_price(D(1), D(100), ins) == D("67.2")  # 66.8333 up
    assert MarginRule(leverage=D(3)).bankruptcy_price(D(1), D(100), ins) == D("66.6")  # 66.6667 down


# name, rows (o, h, l, c), script {bar: target}, overrides,
# expected liquidation (bar, side, qty, price, fee) or None, expected final cash
CASES = [
    (
        "a 10x long whose bar low reaches the liquidation price",
        # qty = floor_lot(5 x 10000 / (100 x (1 + 5 x 0.001))) = 497.512, IM 4,975.12;
        # LP = 100 - (100/10 - 100 x 0.5 %) = 90.5
        [FLAT, FLAT, (99, 99.5, 95, 96), (96, 97, 90.5, 91), (91, 92, 90, 91)],
        {0: 5.0}, LEV10,
        (3, "Sell", "497.512", "90", "44.77608"),  # closed at the bankruptcy price 100 - 10
        "4930.35272",  # 10,000 - margin 4,975.12 - fees 49.7512 (open) - 44.77608 (liquidation)
    ),
    (
        "a 10x short whose bar high reaches the liquidation price",
        # LP = 100 + 9.5 = 109.5; bankruptcy 110
        [FLAT, FLAT, (101, 105, 100, 104), (104, 109.5, 103, 108), FLAT],
        {0: -5.0}, LEV10,
        (3, "Buy", "497.512", "110", "54.72632"),
        "4920.40248",  # 10,000 - 4,975.12 - 49.7512 - 54.72632
    ),
    (
        "a bar that opens through the liquidation price: still closed at the bankruptcy price",
        [FLAT, FLAT, (85, 88, 80, 86), FLAT],
        {0: 5.0}, LEV10,
        (2, "Sell", "497.512", "90", "44.77608"),
        "4930.35272",
    ),
    (
        "a low one tick above the liquidation price does not liquidate",
        [FLAT, FLAT, (99, 99, 90.6, 95), (95, 95, 95, 95)],
        {0: 5.0, 2: 0.0}, LEV10,
        None,
        "7415.42516",  # 10,000 - 497.512 x 5 - 49.7512 - 47.26364 (sold at 95, the next open)
    ),
    (
        "3x: liquidation and bankruptcy prices rounded to the tick against the trader",
        # qty = floor_lot(2 x 10000 / (100 x 1.002)) = 199.6; LP = 100 - (33.33 - 0.5) = 67.17 -> 67.2
        # (up to the tick); bankruptcy 66.67 -> 66.6 (down)
        [FLAT, FLAT, (80, 80, 67.2, 70), FLAT],
        {0: 2.0}, ["market.leverage=3", "risk.max_exposure=3"],
        (2, "Sell", "199.6", "66.6", "13.29336"),
        "3300.10664",  # 10,000 - 199.6 x (100 - 66.6) - 19.96 - 13.29336
    ),
]


@pytest.mark.parametrize(("name", "rows", "script", "sets", "liq", "cash"), CASES, ids=[c[0] for c in CASES])
def test_liquidation_table(name: str, rows: list, script: dict, sets: list, liq: tuple | None, cash: str,
                           sqlite_url: str) -> None:
    cfg = load_config(None, sets)
    db = open_database(sqlite_url)
    s = core.backtest(cfg, make_data(rows), ScriptedStrategy(script), db, show_progress=False)
    fills = q.fills(db, s["run_id"])
    liquidations = [((f["time"] - T0) // HOUR, f["side"], f["qty"], f["price"], f["fee"])
                    for f in fills if f["reason"] == "liquidation"]
    events = q.events(db, s["run_id"], kind="liquidation")
    if liq is None:
        assert liquidations == [] and events == [] and s["liquidations"] == 0
    else:
        bar, side, qty, price, fee = liq
        assert liquidations == [(bar, side, D(qty), D(price), D(fee))]
        (event,) = events
        assert event["payload"]["bankruptcy_price"] == price and event["time"] == T0 + bar * HOUR
        assert s["liquidations"] == 1
        # The liquidation closed the trade; no position is left.
        assert s["open_position"] == 0 and q.trades(db, s["run_id"])[-1]["exit_time"] == T0 + bar * HOUR
    eq = q.equity(db, s["run_id"])
    assert eq[-1]["cash"] == pytest.approx(float(cash), abs=1e-9)


def test_the_margin_shrinks_an_opening_fill_it_cannot_pay() -> None:
    """Target 10 at 10x: floor_lot(10 x 10000 / (100 x 1.01)) = 990.099, whose margin and fee at
    the close (99.99 x 100.1 % ...) fit; the bar opens at 101: 990.099 x 101 x (0.1 + 0.001) >
    10,000, so the fill shrinks to floor_lot(10000 / (101 x 0.101)) = 980.296."""
    cfg = load_config(None, LEV10)
    db = open_database("sqlite://")
    rows = [FLAT, (101.0, 101.0, 101.0, 101.0), (101.0, 101.0, 101.0, 101.0)]
    s = core.backtest(cfg, make_data(rows), ScriptedStrategy({0: 10.0}), db, show_progress=False)
    (fill,) = q.fills(db, s["run_id"])
    assert fill["qty"] == D("980.296") and fill["price"] == D("101") and fill["reason"] == ""


@pytest.mark.parametrize(("sets", "line"), [
    (["risk.max_exposure=2"], "risk.max_exposure 2 is above the market's leverage 1"),
    (["market.leverage=3", "risk.max_exposure=5"], "risk.max_exposure 5 is above the market's leverage 3"),
    (["market.category=spot", "market.leverage=2"], "spot markets trade without leverage"),
    (["market.leverage=0.5"], "market.leverage: Input should be greater than or equal to 1"),
])
def test_leverage_config_is_validated(sets: list, line: str) -> None:
    from bot.errors import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError, match=line.replace(".", r"\.")):
        load_config(None, sets)


def bot(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def _crash_file(tmp_path: Path, max_leverage: str | None = None) -> Path:
    """Flat, a rise (the SMA goes long at its first cross), then one bar whose low is 25 % under the entry."""
    prices = [100.0] * 30 + [100.0 + i for i in range(1, 11)]
    rows = ["timestamp,open,high,low,close,volume"]
    for i, p in enumerate(prices):
        prev = prices[i - 1] if i else p
        rows.append(f"{T0 + i * HOUR},{prev},{max(prev, p)},{min(prev, p)},{p},1")
    n = len(prices)
    rows += [f"{T0 + n * HOUR},110,110,75,100,1", f"{T0 + (n + 1) * HOUR},100,101,99,100,1"]
    path = tmp_path / "bybit_BTCUSDT_1h.csv"
    path.write_text("\n".join(rows) + "\n")
    if max_leverage is not None:
        path.with_name(path.name + ".instrument.json").write_text(json.dumps(
            {"symbol": "BTCUSDT", "tick_size": "0.1", "qty_step": "0.001", "min_qty": "0.001", "min_notional": "5",
             "max_leverage": max_leverage}))
    return path


def test_a_leveraged_backtest_journals_the_liquidation(tmp_path: Path) -> None:
    """End to end: an SMA long at 5x leverage (isolated margin: a fifth of its notional) meets a
    bar 25 % down, past its liquidation price (about 19.5 % under the entry): a fill with its
    reason in `bot journal fills`, a `liquidation` event, the summary's count."""
    data = _crash_file(tmp_path, max_leverage="25")
    db = f"sqlite:///{tmp_path / 'j.db'}"
    r = bot("backtest", "--strategy", "sma", "--data", str(data), "--db", db, "--set", "market.leverage=5",
            "--set", "risk.max_exposure=5", "--set", "strategy.params.fast=3", "--set", "strategy.params.slow=6",
            "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["liquidations"] == 1
    fills = bot("journal", "fills", "--run", "latest", "--db", db, "--format", "json", cwd=tmp_path)
    liq = [f for f in json.loads(fills.stdout) if f["reason"] == "liquidation"]
    assert len(liq) == 1 and liq[0]["side"] == "Sell"
    events = bot("journal", "events", "--run", "latest", "--db", db, "--format", "json", cwd=tmp_path)
    (event,) = [e for e in json.loads(events.stdout) if e["kind"] == "liquidation"]
    p = event["payload"]
    assert p["leverage"] == "5" and p["side"] == "long" and D(p["bankruptcy_price"]) == D(liq[0]["price"])
    # entry x (1 - 1/5) rounded down to the tick; the liquidation price 0.5 % of the entry above it
    entry = D(p["entry_price"])
    assert D(p["bankruptcy_price"]) == (entry * D("0.8") / D("0.1")).to_integral_value(rounding="ROUND_FLOOR") / 10
    table = bot("journal", "summary", "--run", "latest", "--db", db, cwd=tmp_path)
    assert "liquidations" in table.stdout and table.returncode == 0
    why = bot("journal", "explain", liq[0]["order_id"], "--db", db, cwd=tmp_path)
    assert why.returncode == 2 and why.stderr.strip() == (
        f"error: order '{liq[0]['order_id']}' has no decision behind it: the venue's liquidation of the position "
        "(bot journal events: liquidation)")


def test_leverage_above_the_instruments_maximum_is_one_line(tmp_path: Path) -> None:
    data = _crash_file(tmp_path, max_leverage="25")
    r = bot("backtest", "--strategy", "sma", "--data", str(data), "--db", f"sqlite:///{tmp_path / 'j.db'}",
            "--set", "market.leverage=50", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: BTCUSDT: market.leverage 50 is above the instrument's maximum 25 ({data.name}.instrument.json)"]


def test_a_venue_liquidation_is_a_fill_with_its_reason() -> None:
    """Live: Bybit's liquidation executions (``execType`` BustTrade, no orderLinkId) are booked as
    fills of the venue's order, with reason ``liquidation``; funding executions are not fills."""
    from broker.bybit import parse  # noqa: PLC0415

    bust = {"symbol": "BTCUSDT", "execId": "e1", "orderId": "venue-liq-1", "orderLinkId": "", "side": "Sell",
            "execQty": "0.5", "execPrice": "90", "execFee": "0.0275", "execTime": "1700000000000",
            "isMaker": False, "feeCurrency": "USDT", "execType": "BustTrade", "orderType": "Market"}
    f = parse.fill(bust)
    assert parse.is_trade(bust) and f.reason == "liquidation" and f.client_order_id == "venue-liq-1"
    assert f.qty == D("0.5") and f.price == D("90") and f.cash_change == D("44.9725")
    assert parse.fill({**bust, "execType": "Trade", "orderLinkId": "mine"}).reason == ""
    funding = {**bust, "execType": "Funding"}
    assert not parse.is_trade(funding) and parse.is_funding(funding)


@pytest.mark.parametrize(("stop", "exit_price", "liquidated"), [
    ("0.05", "95", False),  # stop 95 lies between the entry 100 and the liquidation price 90.5: it fills first
    ("0.2", "90", True),  # stop 80 lies beyond it: the bar liquidates at the bankruptcy price 90 first
])
def test_a_stop_and_the_liquidation_in_one_bar(stop: str, exit_price: str, liquidated: bool,
                                              sqlite_url: str) -> None:
    cfg = load_config(None, [*LEV10, f"market.exits.stop_loss={stop}"])
    db = open_database(sqlite_url)
    rows = [FLAT, FLAT, (96, 97, 89, 90), FLAT]
    s = core.backtest(cfg, make_data(rows), ScriptedStrategy({0: 5.0}), db, show_progress=False)
    entry, out = q.fills(db, s["run_id"])
    assert entry["price"] == D("100") and out["price"] == D(exit_price) and (out["time"] - T0) // HOUR == 2
    assert (out["reason"] == "liquidation") is liquidated and s["liquidations"] == int(liquidated)
    assert s.get("stop_loss_exits", 0) == int(not liquidated) and s["open_position"] == 0
