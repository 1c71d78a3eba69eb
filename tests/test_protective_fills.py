"""Protective exits as tables: OHLC rows, the strategy's targets, the exits config, and the fills
and exit reasons they must give (README, "Fill assumptions": protective exits).

Rules under test: a stop fills at its price when the bar's range reaches it, at the open when
the bar opens through it, less slippage; a take-profit at its price, or at the open when the bar
opens beyond it; a bar that reaches both takes the stop first unless the open gapped through the
target; a trailing stop moves only at a bar's close, from the best price of the closed bars; a
protection set at a bar's open watches that bar's range; after a protective exit the market
stays flat until the signal changes.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from bot import app as core
from bot.config import load_config
from storage import queries as q
from storage.db import open_database
from tests.helpers import HOUR, T0, ScriptedStrategy, make_data, one_line_error

D = Decimal
FLAT = (100.0, 100.0, 100.0, 100.0)
NO_FEE = {"broker.fee_rate": 0}

# name, rows (o, h, l, c), script {bar: target | (target, stop, tp)}, overrides,
# expected fills [(bar, side, qty, price, exit reason or None)]
CASES = [
    ("a stop fills at its price when the bar's low reaches it",
     [FLAT, FLAT, (100, 101, 97, 98), FLAT], {0: 1.0}, {**NO_FEE, "market.exits.stop_loss": 0.02},
     # 100 bought at bar 1's open 100: stop 98; bar 2's low 97 reaches it
     [(1, "Buy", "100", "100", None), (2, "Sell", "100", "98", "stop_loss")]),
    ("a bar that opens through the stop fills at the open (against you)",
     [FLAT, FLAT, (95, 96, 94, 95), FLAT], {0: 1.0}, {**NO_FEE, "market.exits.stop_loss": 0.02},
     [(1, "Buy", "100", "100", None), (2, "Sell", "100", "95", "stop_loss")]),
    ("slippage moves the stop's fill against you, rounded to the tick",
     [FLAT, FLAT, (100, 101, 97, 98), FLAT], {0: 1.0},
     {**NO_FEE, "broker.slippage_bps": 10, "market.exits.stop_loss": 0.02},
     # bought 99.9 at 100.1 (what cash pays for); stop floor(100.1 x 0.98) = 98.0; sold 98 x 0.999 = 97.902 -> 97.9
     [(1, "Buy", "99.9", "100.1", None), (2, "Sell", "99.9", "97.9", "stop_loss")]),
    ("a take-profit fills at its price when the bar's high reaches it",
     [FLAT, FLAT, (100, 106, 99.5, 104), FLAT], {0: 1.0}, {**NO_FEE, "market.exits.take_profit": 0.05},
     [(1, "Buy", "100", "100", None), (2, "Sell", "100", "105", "take_profit")]),
    ("a bar that opens beyond the target fills at the open (in your favour)",
     [FLAT, FLAT, (107, 108, 106, 107), FLAT], {0: 1.0}, {**NO_FEE, "market.exits.take_profit": 0.05},
     [(1, "Buy", "100", "100", None), (2, "Sell", "100", "107", "take_profit")]),
    ("a bar that reaches both: the stop is assumed first",
     [FLAT, FLAT, (100, 106, 97, 100), FLAT], {0: 1.0},
     {**NO_FEE, "market.exits.stop_loss": 0.02, "market.exits.take_profit": 0.05},
     [(1, "Buy", "100", "100", None), (2, "Sell", "100", "98", "stop_loss")]),
    ("a bar that reaches both after opening beyond the target: the target, at the open",
     [FLAT, FLAT, (106, 106, 97, 100), FLAT], {0: 1.0},
     {**NO_FEE, "market.exits.stop_loss": 0.02, "market.exits.take_profit": 0.05},
     [(1, "Buy", "100", "100", None), (2, "Sell", "100", "106", "take_profit")]),
    ("the protection set at the entry's open watches the rest of that bar",
     [FLAT, (100, 100, 97, 99), FLAT], {0: 1.0}, {**NO_FEE, "market.exits.stop_loss": 0.02},
     [(1, "Buy", "100", "100", None), (1, "Sell", "100", "98", "stop_loss")]),
    ("a trailing stop moves at the close only: a bar's own high never moves the stop it meets",
     # trail 5 (5 % of 100): 95 on bar 2 (its low 96 does not reach it, though its high 110 would
     # have made it 105), 105 after bar 2 closed; bar 3's low 104 reaches 105
     [FLAT, FLAT, (100, 110, 96, 109), (109, 109, 104, 105), FLAT], {0: 1.0},
     {**NO_FEE, "market.exits.trailing_stop": 0.05},
     [(1, "Buy", "100", "100", None), (3, "Sell", "100", "105", "trailing_stop")]),
    ("the tighter of stop-loss and trail fires, by its own name",
     [FLAT, FLAT, (100, 110, 99, 109), (109, 109, 104, 105), FLAT], {0: 1.0},
     {**NO_FEE, "market.exits.stop_loss": 0.02, "market.exits.trailing_stop": 0.05},
     # stop 98 below the trail's 105 after bar 2: the trail fires
     [(1, "Buy", "100", "100", None), (3, "Sell", "100", "105", "trailing_stop")]),
    ("a short's stop sits above the entry and its trail follows the lows",
     [FLAT, FLAT, (100, 100, 90, 91), (91, 96, 90, 95), FLAT], {0: -1.0},
     {**NO_FEE, "market.exits.stop_loss": 0.02, "market.exits.trailing_stop": 0.05},
     # sold 100 at 100: stop 102, trail 105 -> after bar 2 (low 90) 95; bar 3's high 96 reaches 95
     [(1, "Sell", "100", "100", None), (3, "Buy", "100", "95", "trailing_stop")]),
    ("an ATR multiple is measured at the decision's close",
     # ATR(2) at bar 2: true ranges 4 and 2 -> 3; stop 1 x 3 below the entry 100 = 97
     [(100, 101, 99, 100), (100, 102, 98, 100), (100, 101, 99, 100), (100, 100.5, 99.5, 100),
      (100, 100, 96, 97), FLAT], {2: 1.0},
     {**NO_FEE, "market.exits.stop_loss": "{atr: 1}", "market.exits.atr_period": 2},
     [(3, "Buy", "100", "100", None), (4, "Sell", "100", "97", "stop_loss")]),
    ("a decision's own stop and target prices win over the config",
     [FLAT, FLAT, (100, 104, 99, 103), FLAT], {0: (1.0, 95.0, 103.5)},
     {**NO_FEE, "market.exits.stop_loss": 0.005, "market.exits.take_profit": 0.1},
     [(1, "Buy", "100", "100", None), (2, "Sell", "100", "103.5", "take_profit")]),
    ("after a stop-out the market stays flat until the signal changes",
     # stopped on bar 1; the long re-issued on bar 2 is held; flat on bar 3 re-arms; long on bar 4 buys
     [FLAT, (100, 100, 97, 99), FLAT, FLAT, FLAT, FLAT], {0: 1.0, 2: 1.0, 3: 0.0, 4: 1.0},
     {**NO_FEE, "market.exits.stop_loss": 0.02},
     [(1, "Buy", "100", "100", None), (1, "Sell", "100", "98", "stop_loss"), (5, "Buy", "98", "100", None)]),
    ("spot: the stop sells what is held",
     [FLAT, FLAT, (100, 101, 97, 98), FLAT], {0: 1.0}, {"market.category": "spot", "market.exits.stop_loss": 0.02},
     # 99.9 bought, 0.0999 of it paid as the fee: 99.8001 held, sold at the stop
     [(1, "Buy", "99.9", "100", None), (2, "Sell", "99.8", "98", "stop_loss")]),
]


@pytest.mark.parametrize(("name", "rows", "script", "overrides", "expected"), CASES, ids=[c[0] for c in CASES])
def test_protective_fill_table(name: str, rows: list, script: dict, overrides: dict, expected: list,
                               sqlite_url: str) -> None:
    cfg = load_config(None, [f"{k}={v}" for k, v in overrides.items()])
    strategy = ScriptedStrategy(script, long_only=cfg.market.category == "spot")
    db = open_database(sqlite_url)
    summary = core.backtest(cfg, make_data(rows), strategy, db, show_progress=False)
    rid = summary["run_id"]
    orders = {o["id"]: o for o in q.orders(db, rid)}
    got = [((f["time"] - T0) // HOUR, f["side"], f["qty"], f["price"], orders[f["order_id"]]["exit_reason"])
           for f in q.fills(db, rid)]
    assert got == [(bar, side, D(qty), D(price), why) for bar, side, qty, price, why in expected]
    # Each exit's order points at the decision whose protection it was, journaled when it was set.
    set_by = {e["payload"]["exit_order_id"]: e["payload"]["decision_id"]
              for e in q.events(db, rid, kind="protection_set")}
    for o in orders.values():
        if o["exit_reason"]:
            assert o["decision_id"] == set_by[o["id"]] == orders[o["id"].removesuffix("x")]["decision_id"]
    # ... and the trade it closed says why; the summary counts the exits by reason.
    reasons = [t["exit_reason"] for t in q.trades(db, rid)]
    assert [r for r in reasons if r] == [why for *_, why in expected if why]
    for reason in ("stop_loss", "take_profit", "trailing_stop"):
        assert summary.get(f"{reason}_exits", 0) == reasons.count(reason)


@pytest.mark.parametrize(("setting", "match"), [
    ("market.exits.stop_loss=1.5", "market.exits.stop_loss: a stop's fraction of the entry price must be below 1"),
    ("market.exits.stop_loss=-0.1", "market.exits.stop_loss.fraction: Input should be greater than 0"),
    ("market.exits.take_profit={atr: 2, fraction: 0.1}", "market.exits.take_profit: give exactly one of fraction"),
    ("market.exits.trailing_stop=wide", "market.exits.trailing_stop: expected a fraction of the entry price"),
    ("market.exits.atr_period=0", "market.exits.atr_period: Input should be greater than or equal to 1"),
    ("market.exits.stop=0.02", "market.exits.stop: unknown key"),
])
def test_bad_exits_config_is_one_line(setting: str, match: str, bot_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "c.csv"
    data.write_text("timestamp,open,high,low,close,volume\n" + "".join(
        f"{T0 + i * HOUR},100,101,99,100,1\n" for i in range(5)))
    one_line_error(bot_cli("backtest", "--data", str(data), "--set", setting, cwd=tmp_path), match)


def test_a_decision_with_a_stop_on_the_wrong_side_is_an_error_not_a_trade(sqlite_url: str) -> None:
    cfg = load_config(None, ["broker.fee_rate=0"])
    db = open_database(sqlite_url)
    s = core.backtest(cfg, make_data([FLAT, FLAT, FLAT]), ScriptedStrategy({0: (1.0, 101.0, None)}), db,
                      show_progress=False)
    (d,) = [d for d in q.decisions(db, s["run_id"]) if d["error"]]
    assert d["status"] == "error" and "stop_price 101 must be below the close 100 for a long" in d["error"]
    assert q.fills(db, s["run_id"]) == []


def test_migration_0008_keeps_old_orders_and_trades_and_goes_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A journal written before 0008: its orders and trades read back with no exit reason; down again."""
    from alembic import command  # noqa: PLC0415
    from sqlalchemy import inspect, text  # noqa: PLC0415

    from storage.db import alembic_config, make_engine, upgrade  # noqa: PLC0415

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = alembic_config(engine)

    def migrate(fn, rev: str) -> None:  # type: ignore[no-untyped-def]
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            fn(cfg, rev)

    migrate(command.upgrade, "0007")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO runs (id, mode, status, strategy, symbol, timeframe, category, config, "
                          "initial_cash, started_at, updated_at, bars) VALUES ('r1', 'live', 'failed', 'sma', "
                          "'BTCUSDT', '1h', 'linear', '{}', '10000', '2024-01-01', '2024-01-01', 0)"))
        conn.execute(text("INSERT INTO orders (id, run_id, symbol, side, order_type, qty, status, filled_qty, "
                          "adopted, created_time, updated_time) VALUES ('o1', 'r1', 'BTCUSDT', 'Buy', 'Market', "
                          "'0.5', 'filled', '0.5', 0, 1, 1)"))
        conn.execute(text("INSERT INTO fills (exec_id, run_id, order_id, symbol, side, qty, price, fee, is_maker, "
                          "time) VALUES ('e1', 'r1', 'o1', 'BTCUSDT', 'Buy', '0.5', '40000', '20', 0, 1)"))
    upgrade(engine)
    (o,) = q.orders(engine, "r1")
    assert o["exit_reason"] is None and len(q.fills(engine, "r1")) == 1
    migrate(command.downgrade, "0007")
    assert "exit_reason" not in {c["name"] for c in inspect(engine).get_columns("orders")}
    with engine.connect() as conn:  # the schema at 0007 (the package's queries read the head's columns)
        assert conn.execute(text("SELECT count(*) FROM fills WHERE run_id = 'r1'")).scalar() == 1


MINUTE = 60_000
BOTH = [FLAT, FLAT, (100, 106, 97, 100), FLAT]  # bar 2 reaches the stop 98 and the target 105


@pytest.mark.parametrize(("minutes", "want"), [
    # (o, h, l, c) of bar 2's first minutes: the first that reaches a level decides
    ([(100, 100.5, 99.5, 100), (100, 106, 100, 105), (105, 105, 97, 98)], ("105", "take_profit")),
    ([(100, 100, 97, 98), (98, 106, 98, 105)], ("98", "stop_loss")),
    ([(100, 106, 97, 100)], ("98", "stop_loss")),       # one minute reaches both: the stop again
    ([], ("98", "stop_loss")),                           # no finer bars for this bar: the stop first
])
def test_finer_bars_order_a_bar_that_reached_both(minutes: list, want: tuple, sqlite_url: str) -> None:
    cfg = load_config(None, ["broker.fee_rate=0", "market.exits.stop_loss=0.02", "market.exits.take_profit=0.05"])
    db = open_database(sqlite_url)
    fine = make_data(minutes or [FLAT], t0=T0 + (2 if minutes else 9) * HOUR, bar_ms=MINUTE)
    s = core.backtest(cfg, make_data(BOTH), ScriptedStrategy({0: 1.0}), db, show_progress=False, intrabar=fine)
    fills = q.fills(db, s["run_id"])
    reasons = [o["exit_reason"] for o in q.orders(db, s["run_id"]) if o["exit_reason"]]
    assert (fills[-1]["price"], reasons) == (D(want[0]), [want[1]])


def test_intrabar_data_from_the_command_line(bot_cli, tmp_path, data_dir) -> None:  # type: ignore[no-untyped-def]
    """The shared 1m file orders the hourly bars that reached both levels; 1m markets are refused."""
    args = ["backtest", "--strategy", "sma", "--data", str(data_dir / "bybit_BTCUSDT_1h.csv.gz"), "--from",
            "2025-05-31", "--to", "2025-06-29", "--set", "strategy.params.fast=3", "--set", "strategy.params.slow=8",
            "--set", "market.exits.stop_loss=0.003", "--set", "market.exits.take_profit=0.003", "--json"]
    runs = {}
    one_m = data_dir / "bybit_BTCUSDT_1m.csv.gz"
    for name, extra in (("plain", []), ("1m", ["--set", f"market.intrabar_data={one_m}"])):
        r = bot_cli(*args, *extra, "--db", f"sqlite:///{tmp_path / name}.db", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        runs[name] = json.loads(r.stdout)
    plain, fine = runs["plain"], runs["1m"]
    assert plain["n_trades"] == fine["n_trades"]
    exits = plain["stop_loss_exits"] + plain["take_profit_exits"]
    assert fine["stop_loss_exits"] + fine["take_profit_exits"] == exits
    assert fine["take_profit_exits"] > plain["take_profit_exits"]  # some "stop first" bars went the other way
    one_line_error(bot_cli(*args[:-1], "--set", f"market.intrabar_data={tmp_path / 'none.csv'}", cwd=tmp_path),
                   "data file not found")
    one_line_error(bot_cli("backtest", "--data", str(one_m), "--set", "market.timeframe=1m", "--set",
                           f"market.intrabar_data={one_m}", "--db", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path),
                   "BTCUSDT: market.intrabar_data (1m candles) needs a timeframe above 1m, not 1m")


def test_journal_trades_say_why(bot_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`bot journal trades`: a short reason in the table, the reason itself with --wide and in JSON."""
    data = tmp_path / "bybit_BTCUSDT_1h.csv"
    rows = [FLAT, FLAT, (100, 101, 97, 98), FLAT, FLAT, (100, 106, 99.5, 104), FLAT]
    data.write_text("timestamp,open,high,low,close,volume\n" + "".join(
        f"{T0 + i * HOUR},{o},{h},{lo},{c},1\n" for i, (o, h, lo, c) in enumerate(rows)))
    (tmp_path / "s.py").write_text(
        "from bot.domain import Decision\nfrom strategies.base import Strategy, StrategyParams\n\n\n"
        "class S(Strategy):\n    name = 's'\n    Params = StrategyParams\n\n    def on_bar(self, bars):\n"
        "        i = bars.n - 1\n        t = {0: 1.0, 3: 0.0, 4: 1.0}.get(i)\n"
        "        return None if t is None else Decision(bars.symbol, bars.last_time(), t)\n")
    db = f"sqlite:///{tmp_path / 'j.db'}"
    r = bot_cli("backtest", "--strategy", f"{tmp_path / 's.py'}:S", "--data", str(data), "--db", db, "--set",
                "market.exits.stop_loss=0.02", "--set", "market.exits.take_profit=0.05", "--set", "broker.fee_rate=0",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    table = bot_cli("journal", "trades", "--db", db, cwd=tmp_path).stdout
    assert "why" in table and [ln.split()[-1] for ln in table.splitlines()[-2:]] == ["stop", "target"]
    wide = bot_cli("journal", "trades", "--db", db, "--wide", cwd=tmp_path).stdout
    assert "stop_loss" in wide and "take_profit" in wide
    rows_json = json.loads(bot_cli("journal", "trades", "--db", db, "--format", "json", cwd=tmp_path).stdout)
    assert [t["exit_reason"] for t in rows_json] == ["stop_loss", "take_profit"]
