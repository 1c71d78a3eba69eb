"""Engine behaviour: failing strategies, kill switches, write-ahead ordering, accounting invariants."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import app as core
from bot.config import load_config
from bot.domain import Category, Instrument, OrderRequest, Side
from broker.simulated import SimulatedBroker
from storage import queries as q
from storage.db import open_database
from tests.helpers import ScriptedStrategy, make_data, random_walk


def test_a_strategy_exception_is_a_journaled_no_trade(sqlite_url: str) -> None:
    db = open_database(sqlite_url)
    s = core.backtest(load_config(None), random_walk(30), ScriptedStrategy({2: 1.0, 5: "boom", 8: 0.0}), db,
                     show_progress=False)
    decisions = q.decisions(db, s["run_id"])
    assert [d["status"] for d in decisions] == ["order", "error", "order"]
    err = decisions[1]
    assert err["target"] is None and "RuntimeError: model exploded" in err["error"]
    assert not any(o["decision_id"] == err["id"] for o in q.orders(db, s["run_id"]))
    assert q.resolve_run(db, s["run_id"])["status"] == "completed"  # the loop went on


@pytest.mark.parametrize(("explanation", "error"), [
    ({"p": float("nan")}, "Out of range float values"), ({"k": "x", "p": float("-inf")}, "Out of range"),
    ({"p": [1.0, float("nan")]}, "Out of range"), ({"p": {"q": object()}}, "TypeError: Object of type object"),
    ({"p": object()}, "TypeError: Object of type object"), ({(1, 2): 1.0}, "TypeError: keys must be"),
])
def test_unserialisable_explanation_becomes_an_error_decision(sqlite_url: str, explanation: dict, error: str) -> None:
    class BadExplainer(ScriptedStrategy):
        def on_bar(self, bars):  # type: ignore[no-untyped-def]
            d = super().on_bar(bars)
            if d is None:
                return None
            from dataclasses import replace

            return replace(d, explanation=explanation)

    db = open_database(sqlite_url)
    s = core.backtest(load_config(None), random_walk(10), BadExplainer({3: 1.0}), db, show_progress=False)
    (d,) = q.decisions(db, s["run_id"])
    assert d["status"] == "error" and error in d["error"], d["error"]


def test_a_flat_or_nested_json_explanation_is_journaled_as_given(sqlite_url: str) -> None:
    """The flat-dict shortcut of the JSON check accepts what the encoder accepts (int keys too)."""
    given = {"kind": "x", "n": 3, "ok": True, "none": None, "p": 0.25, 7: "int key"}

    class Explainer(ScriptedStrategy):
        def on_bar(self, bars):  # type: ignore[no-untyped-def]
            d = super().on_bar(bars)
            from dataclasses import replace

            return None if d is None else replace(d, explanation=given)

    db = open_database(sqlite_url)
    s = core.backtest(load_config(None), random_walk(10), Explainer({3: 1.0}), db, show_progress=False)
    (d,) = q.decisions(db, s["run_id"])
    assert d["status"] != "error" and d["explanation"] == {**{k: v for k, v in given.items() if k != 7}, "7": "int key"}


def _crash_data():  # type: ignore[no-untyped-def]
    rows = [(100, 100, 100, 100)] * 3 + [(100, 100, 60, 60)] + [(60, 60, 60, 60)] * 4
    return make_data(rows)


def test_kill_switch_flattens_and_is_journaled(sqlite_url: str) -> None:
    db = open_database(sqlite_url)
    cfg = load_config(None, ["risk.max_drawdown=0.25", "risk.kill_action=flatten", "broker.fee_rate=0"])
    s = core.backtest(cfg, _crash_data(), ScriptedStrategy({0: 1.0, 5: 1.0}), db, show_progress=False)
    (ev,) = [e for e in q.events(db, s["run_id"]) if e["kind"] == "kill_switch"]
    assert ev["payload"]["reason"] == "max_drawdown" and ev["payload"]["action"] == "flatten"
    fills = q.fills(db, s["run_id"])
    assert [f["side"] for f in fills] == ["Buy", "Sell"]  # flattened, and the later long is refused
    assert s["open_position"] == 0


def test_kill_switch_freeze_keeps_the_position_and_stops_trading(sqlite_url: str) -> None:
    db = open_database(sqlite_url)
    cfg = load_config(None, ["risk.max_drawdown=0.25", "risk.kill_action=freeze", "broker.fee_rate=0"])
    s = core.backtest(cfg, _crash_data(), ScriptedStrategy({0: 1.0, 5: 0.0}), db, show_progress=False)
    assert [f["side"] for f in q.fills(db, s["run_id"])] == ["Buy"]
    assert [d["status"] for d in q.decisions(db, s["run_id"])] == ["order", "frozen"]


def test_cooldown_blocks_orders(sqlite_url: str) -> None:
    db = open_database(sqlite_url)
    cfg = load_config(None, ["risk.cooldown_bars=5"])
    s = core.backtest(cfg, random_walk(20), ScriptedStrategy({1: 1.0, 3: 0.0, 9: 0.0}), db, show_progress=False)
    assert [d["status"] for d in q.decisions(db, s["run_id"])] == ["order", "blocked", "order"]


def test_rebalance_threshold_holds_small_changes_but_always_closes_and_flips(sqlite_url: str) -> None:
    db = open_database(sqlite_url)
    flat = make_data([(100, 100, 100, 100)] * 16)
    script = {0: 1.0, 3: 1.0, 5: 0.99, 7: 0.01, 9: -0.01, 11: -0.02, 13: 0.0}
    cfg = load_config(None, ["risk.rebalance_threshold=0.05", "broker.fee_rate=0"])
    s = core.backtest(cfg, flat, ScriptedStrategy(script), db, show_progress=False)
    assert [d["status"] for d in q.decisions(db, s["run_id"])] == [
        "order",  # 0 -> 100%: a change of 100% of equity
        "hold",   # 100% re-issued
        "hold",   # 1% trim, below the 5% threshold
        "order",  # 100% -> 1%
        "order",  # 1% long -> 1% short: a flip always goes out
        "hold",   # 1% -> 2% short
        "order",  # to flat always goes out
    ]
    assert s["open_position"] == 0
    off = core.backtest(load_config(None, ["broker.fee_rate=0"]), flat, ScriptedStrategy(script), db,
                       show_progress=False)
    assert [d["status"] for d in q.decisions(db, off["run_id"])] == [
        "order", "hold", "order", "order", "order", "order", "order"]


def test_orders_point_at_the_decision_that_caused_them(sqlite_url: str) -> None:
    db = open_database(sqlite_url)
    s = core.backtest(load_config(None), random_walk(60), ScriptedStrategy({i: (i % 3) / 2 for i in range(0, 60, 4)}),
                     db, show_progress=False)
    decisions = {d["id"]: d for d in q.decisions(db, s["run_id"])}
    for o in q.orders(db, s["run_id"]):
        assert decisions[o["decision_id"]]["status"] == "order"
        assert o["id"].startswith(s["run_id"])


INS = Instrument("BTCUSDT", Category.LINEAR, Decimal("0.01"), Decimal("0.001"), Decimal("0.001"), Decimal("0"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 3000), st.integers(5_000, 15_000)), min_size=1, max_size=25),
       st.integers(5_000, 15_000))
def test_accounting_identity_holds_for_any_fill_sequence(trades: list, mark_cents: int) -> None:
    """equity == initial + realised + unrealised - fees whatever the fills (Decimal: the only error is
    the 28-digit rounding of the average entry price)."""
    broker = SimulatedBroker(INS, 1_000_000, 0.001, 0)
    for k, (buy, qty_milli, px_cents) in enumerate(trades):
        req = OrderRequest(f"o{k}", "BTCUSDT", Side.BUY if buy else Side.SELL, Decimal(qty_milli) / 1000)
        broker.submit(req, k)
        px = px_cents / 100
        broker.on_bar(k, px, px, px, px)
    mark = Decimal(mark_cents) / 100
    pos = broker.position()
    unrealized = (mark - pos.avg_price) * pos.qty if pos.qty else Decimal(0)
    equity = broker.balance(float(mark)).equity
    assert abs(equity - (Decimal(1_000_000) + pos.realized_pnl + unrealized - broker.fees)) < Decimal("1e-15")


def test_sma_warm_start_equals_seeing_every_bar() -> None:
    """Bars shown to on_start count exactly as if on_bar had seen them."""
    from bot.bars import Bars
    from strategies.base import StrategyContext
    from strategies.sma import SMACrossover, SMAParams

    data = random_walk(120, seed=7)
    ctx = StrategyContext("BTCUSDT", "1h", long_only=False)

    def decisions(warm: int) -> list[tuple[int, float]]:
        s = SMACrossover(SMAParams(fast=3, slow=8), ctx)
        bars = Bars.preloaded("BTCUSDT", "1h", data.time, data.open, data.high, data.low, data.close, data.volume)
        for _ in range(warm):
            bars.advance()
        s.on_start(bars)
        out = []
        while bars.advance():
            d = s.on_bar(bars)
            if d is not None:
                out.append((d.bar_time, d.target, round(d.explanation["fast_sma"], 9)))
        return out

    cold, warm = decisions(0), decisions(40)
    later = [d for d in cold if d[0] > int(data.time[39])]
    # After warm-up the warm strategy's first decision restates the current view, then they agree.
    assert warm[1:] == later[-len(warm) + 1:]
    assert warm[0][2] == round(float(data.close[38:41].mean()), 9)
