"""Hand-built decisions in the explanation contract's shape (issue 14), journaled over a small
synthetic candle file whose candles of 14:00 and 09:00 are sharp down moves; shared by the tests
of ``bot journal explain``, the report and the dashboard."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from bot.domain import Decision, DecisionStatus, Fill, Order, OrderRequest, OrderStatus, Side, client_order_id
from storage.db import open_database
from storage.journal import Journal

H = 3_600_000
#: The decision bar: 2024-03-02 15:00 UTC; the window's 48 steps end there.
T = int(datetime(2024, 3, 2, 15, tzinfo=UTC).timestamp() * 1000)
WINDOW = 48
SHARP = {T - H: -0.03, T - 6 * H: -0.025}  # 14:00 and 09:00: sharp down moves; others +0.1 %
FAITH = {"k": 5, "windows": 2000, "older_top_k_drop": 0.0093, "older_random_k_drop": 0.003,
         "newest_drop": 0.012, "rank": 1}


def write_candles(path: Path, n: int = 80) -> Path:
    """Hourly candles ending two bars after T: +0.1 % each, the two SHARP ones down."""
    rows = ["timestamp,open,high,low,close,volume"]
    price = 64_000.0
    for i in range(n):
        t = T - (n - 3 - i) * H
        r = SHARP.get(t, 0.001)
        close = price * (1 + r)
        rows.append(f"{t},{price:.2f},{max(price, close) * 1.002:.2f},{min(price, close) * 0.998:.2f},"
                    f"{close:.2f},100")
        price = close
    path.write_text("\n".join(rows) + "\n")
    return path


def steps(newest: float, big: tuple[float, float], base: float = 0.001) -> list[float]:
    """A window's steps: ``base`` everywhere, ``big`` on 14:00 and 09:00, ``newest`` last."""
    s = [base] * WINDOW
    s[WINDOW - 2], s[WINDOW - 7] = big
    s[-1] = newest
    return s


def contract(method: str, toward: str | None, target: str, st: list[float],
             features: dict[str, float] | None) -> dict[str, Any]:
    return {"method": method, "toward": toward, "target": target, "steps": st, "bar_ms": H,
            "features": features, "faithfulness": FAITH}


EXPLANATIONS: dict[str, dict[str, Any]] = {
    "dsc": {"kind": "dsc", "probs": {"down": 0.14, "flat": 0.3, "up": 0.56}, "confidence": 0.56, "signal": "long",
            "rule": {"threshold": 0.5, "text": "p(up) = 0.56 >= 0.50 -> long"},
            "attribution": contract("signed_grad_x_input", "up", "p(up) - p(down)", steps(0.02, (0.05, -0.04)),
                                    {"rsi_14": 0.031, "volume_ratio": 0.022, "ret_1": -0.004})},
    "rollout": {"kind": "rollout", "probs": {"down": 0.29, "flat": 0.3, "up": 0.41}, "confidence": 0.41,
                "signal": "flat", "rule": {"threshold": 0.5, "text": "p(up) = 0.41 < 0.50 -> flat"},
                "attribution": contract("grad_rollout", None, "p(predicted class)", steps(0.3, (0.12, 0.08), 0.01),
                                        None)},
    "gru_sizer": {"kind": "gru_sizer", "level": 6, "level_probs": [0.0] * 6 + [0.6, 0.4, 0.0, 0.0, 0.0],
                  "rule": {"level": 6, "max_exposure": 1.0, "text": "level 6 of 10 -> 60 % of equity"},
                  "attribution": contract("signed_grad_x_input", "larger position", "expected level",
                                          steps(-0.1, (0.4, 0.3), 0.01), {"ret_1": -0.2, "rsi_14": 0.1})},
    "old_rollout": {"kind": "rollout", "probs": {"down": 0.2, "flat": 0.3, "up": 0.5}, "confidence": 0.5,
                    "signal": "long", "attribution": steps(0.27, (0.1, 0.05), 0.0125),
                    "times": [T - (WINDOW - 1 - i) * H for i in range(WINDOW)],
                    "top_steps": [{"time": T, "weight": 0.27}], "regime": "mixed", "recent_share": 0.35},
    "old_dsc": {"kind": "dsc", "probs": {"down": 0.6, "flat": 0.3, "up": 0.1}, "confidence": 0.6, "signal": "short",
                "top_features": [{"feature": "ret_1", "score": 0.4}],
                "top_steps": [{"time": T - 6 * H, "score": -0.2}, {"time": T, "score": 0.5}],
                "feature_scores": {"ret_1": 0.4, "vol_24": -0.1}, "method": "input_x_gradient"},
}
#: (side, qty, fill price) of the order each decision caused; absent: none (it held).
ORDERS = {"dsc": (Side.BUY, "0.12", "64210"), "gru_sizer": (Side.SELL, "0.05", "64180"),
          "old_rollout": (Side.BUY, "0.25", "40010")}
TARGETS = {"dsc": 1.0, "rollout": 0.0, "gru_sizer": 0.6, "old_rollout": 1.0, "old_dsc": -1.0}


def build(url: str, candles: Path, strategy: str = "dsc") -> dict[str, str]:
    """One run holding every decision above (ids by name), their orders and fills."""
    engine = open_database(url)
    j = Journal.start_run(engine, mode="backtest", strategy=strategy, symbol="BTCUSDT", timeframe="1h",
                          category="linear", config={}, initial_cash=10_000, data_source=str(candles))
    ids = {"url": url}
    for i, (name, expl) in enumerate(EXPLANATIONS.items()):
        did = f"{j.run_id}-{name}"
        ids[name] = did
        status = DecisionStatus.ORDER if name in ORDERS else DecisionStatus.HOLD
        j.record_decision(did, Decision("BTCUSDT", T, TARGETS[name], 0.5, "m1", expl), 64_000.0, status)
        if name not in ORDERS:
            continue
        side, qty, px = ORDERS[name]
        req = OrderRequest(client_order_id(j.run_id, "BTCUSDT", T + i), "BTCUSDT", side, Decimal(qty),
                           decision_id=did)
        order = Order.from_request(req, T + H)
        j.record_order(order)
        j.update_order(order.transition(OrderStatus.SUBMITTED, T + H).transition(
            OrderStatus.FILLED, T + H, filled_qty=Decimal(qty), avg_fill_price=Decimal(px)))
        j.record_fill(Fill(f"x-{name}", req.client_order_id, "BTCUSDT", side, Decimal(qty), Decimal(px),
                           Decimal("1"), T + H))
    j.finish("completed", {})
    return ids
