"""``bot journal explain``: every explanation kind, orders and fills, missing keys, unknown ids, --png."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.domain import Decision, DecisionStatus, Fill, Order, OrderRequest, OrderStatus, Side, client_order_id
from bot.feeds.replay import load_candles
from storage.db import open_database
from storage.journal import Journal

runner = CliRunner()
H = 3_600_000


@pytest.fixture
def journal(sqlite_url: str, btc_1h: Path) -> dict[str, str]:
    """A journal with one decision of every kind (real candle times), an order and a fill."""
    data = load_candles(btc_1h, symbol="BTCUSDT", timeframe="1h", bar_ms=H)
    times = [int(t) for t in data.time[100:148]]
    t = times[-1]
    engine = open_database(sqlite_url)
    j = Journal.start_run(engine, mode="backtest", strategy="rollout", symbol="BTCUSDT", timeframe="1h",
                          category="linear", config={}, initial_cash=10_000, data_source=str(btc_1h))
    attribution = [0.9 / 47] * 47 + [0.1]
    kinds = {
        "rollout": {"kind": "rollout", "probs": {"down": 0.2, "flat": 0.3, "up": 0.5}, "confidence": 0.5,
                    "signal": "long", "attribution": attribution, "times": times,
                    "top_steps": [{"time": times[-1 - i], "weight": attribution[-1 - i]} for i in range(5)],
                    "regime": "mean_reversion", "recent_share": 0.35, "head_fusion": "mean"},
        "dsc": {"kind": "dsc", "probs": {"down": 0.6, "flat": 0.3, "up": 0.1}, "confidence": 0.6,
                "signal": "short", "top_features": [{"feature": "ret_1", "score": 0.4}],
                "top_steps": [{"time": times[-2], "score": -0.2}, {"time": times[-1], "score": 0.5}],
                "feature_scores": {"ret_1": 0.4, "vol_24": -0.1}, "method": "input_x_gradient"},
        "gru_sizer": {"kind": "gru_sizer", "level": 7, "level_probs": [0.0] * 7 + [0.7, 0.3, 0.0, 0.0],
                      "predicted_path": [0.001, 0.002], "predicted_closes": [50000.0, 50100.0],
                      "regime": "bull"},
        "sma": {"kind": "sma", "fast_sma": 1.5, "slow_sma": 1.2, "rule": "fast > slow -> long"},
        "partial": {"kind": "rollout", "probs": {"up": "not a number"}, "attribution": [0.5, None],
                    "top_steps": "oops", "extra_key": 3},
    }
    ids = {}
    for i, (name, expl) in enumerate(kinds.items()):
        bar = t - i * H  # the rollout decision closes its window at t
        did = f"{j.run_id}-{bar}"
        ids[name] = did
        j.record_decision(did, Decision("BTCUSDT", bar, 1.0, 0.5, "m1", expl), 40_000.0, DecisionStatus.ORDER)
    req = OrderRequest(client_order_id(j.run_id, "BTCUSDT", t), "BTCUSDT", Side.BUY, Decimal("0.25"),
                       decision_id=ids["rollout"])
    order = Order.from_request(req, t + H)
    j.record_order(order)
    order = order.transition(OrderStatus.SUBMITTED, t + H).transition(
        OrderStatus.FILLED, t + H, filled_qty=Decimal("0.25"), avg_fill_price=Decimal("40010"))
    j.update_order(order)
    j.record_fill(Fill("x1", req.client_order_id, "BTCUSDT", Side.BUY, Decimal("0.25"), Decimal("40010"),
                       Decimal("10.0025"), t + H))
    j.finish("completed", {})
    ids["order"] = req.client_order_id
    ids["url"] = sqlite_url
    return ids


def explain(ids: dict[str, str], *args: str) -> str:
    res = runner.invoke(app, ["journal", "explain", *args, "--db", ids["url"]], terminal_width=160)
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


def test_order_id_explains_its_decision_with_orders_fills_and_attribution(journal: dict[str, str]) -> None:
    out = explain(journal, journal["order"])
    assert f"decision {journal['rollout']}" in out
    assert "class probabilities" in out and "50.0%" in out
    assert "weight over the window (48 steps" in out  # old rollout weights: unsigned
    assert "mean_reversion" in out and "head fusion" in out
    assert journal["order"] in out and "x1" in out  # the order and the fill it caused
    assert out.count("* ") >= 2  # the most weighted older steps are starred in the bar chart


def test_json_format_gives_the_whole_record(journal: dict[str, str]) -> None:
    info = json.loads(explain(journal, journal["rollout"], "--format", "json"))
    assert info["decision"]["explanation"]["regime"] == "mean_reversion"
    assert [o["id"] for o in info["orders"]] == [journal["order"]]
    assert [f["exec_id"] for f in info["fills"]] == ["x1"]


@pytest.mark.parametrize(("kind", "expected"), [
    ("dsc", ["class probabilities", "top time steps", "features (summed", "input_x_gradient"]),
    ("gru_sizer", ["position level distribution", "level 7", "predicted closes", "bull"]),
    ("sma", ["fast / slow SMA", "fast > slow -> long"]),
    ("partial", ["extra_key", "(no orders)", "(no fills)"]),
])
def test_every_kind_and_missing_keys(journal: dict[str, str], kind: str, expected: list[str]) -> None:
    out = explain(journal, journal[kind])
    for text in expected:
        assert text in out, (text, out)


@pytest.mark.parametrize("kind", ["order", "dsc", "gru_sizer", "sma", "partial"])
def test_png_for_every_kind(journal: dict[str, str], tmp_path: Path, kind: str) -> None:
    png = tmp_path / "sub" / f"{kind}.png"
    explain(journal, journal[kind], "--png", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_unknown_id_is_one_clear_line(journal: dict[str, str]) -> None:
    res = subprocess.run([sys.executable, "-c", "from bot.cli import main; main()", "journal", "explain",
                          "nope-123", "--db", journal["url"]], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip() == "error: no decision or order with id 'nope-123' in the journal"
