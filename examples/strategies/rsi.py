"""RSI mean reversion, a strategy in one file outside the project (walked through in docs/strategies.md).

Long when the 14-bar RSI falls below 30 (oversold), out (or short, if allowed) when it rises
above 70 (overbought); in between it keeps its view. Run it with

    bot backtest --strategy ./examples/strategies/rsi.py:RsiReversion --data ../shared/data/bybit_BTCUSDT_1h.csv.gz

No lookahead: the RSI of bar t is updated from the close of bar t only, once, when that bar closes.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, model_validator

from bot.bars import Bars
from bot.domain import Decision
from strategies.base import Strategy, StrategyContext, StrategyParams
from strategies.spec import StrategySpec


class RsiParams(StrategyParams):
    period: int = Field(14, ge=2)
    lower: float = Field(30.0, gt=0, lt=100)
    upper: float = Field(70.0, gt=0, lt=100)
    allow_short: bool = False

    @model_validator(mode="after")
    def _order(self) -> RsiParams:
        if self.lower >= self.upper:
            raise ValueError("lower must be below upper")
        return self


class RsiReversion(Strategy):
    """Wilder's RSI, updated incrementally: O(1) per bar."""

    name = "rsi"
    Params = RsiParams

    def __init__(self, params: RsiParams, ctx: StrategyContext) -> None:
        super().__init__(params, ctx)
        self._short = -1.0 if (params.allow_short and not ctx.long_only) else 0.0
        self._reset()

    def _reset(self) -> None:
        self._prev: float | None = None   # the last close seen
        self._seen = 0                    # price changes seen
        self._gain = 0.0                  # Wilder-smoothed mean gain / loss per bar
        self._loss = 0.0
        self._target: float | None = None

    @property
    def warmup(self) -> int:
        return self.params.period + 1

    def on_start(self, bars: Bars) -> None:
        # A resumed run shows the bars seen so far once; the engine will not deliver them again.
        self._reset()
        for c in bars.close.tolist():
            self._push(c)

    def _push(self, close: float) -> float | None:
        """Feed one close; the RSI once ``period`` changes have been seen, else None."""
        prev, self._prev = self._prev, close
        if prev is None:
            return None
        change = close - prev
        n = self.params.period
        self._seen += 1
        if self._seen <= n:  # the first average is a plain mean of the first n changes
            self._gain += max(change, 0.0) / n
            self._loss += max(-change, 0.0) / n
            if self._seen < n:
                return None
        else:
            self._gain = (self._gain * (n - 1) + max(change, 0.0)) / n
            self._loss = (self._loss * (n - 1) + max(-change, 0.0)) / n
        if self._loss == 0.0:
            return 100.0 if self._gain > 0 else 50.0
        return 100.0 - 100.0 / (1.0 + self._gain / self._loss)

    def on_bar(self, bars: Bars) -> Decision | None:
        rsi = self._push(bars.last_close())
        if rsi is None or not math.isfinite(rsi):
            return None
        p = self.params
        if rsi < p.lower:
            target, rule = 1.0, f"rsi < {p.lower:g} -> long"
        elif rsi > p.upper:
            target, rule = self._short, f"rsi > {p.upper:g} -> {'short' if self._short else 'flat'}"
        else:
            return None  # between the bands: keep the current view
        if target == self._target:
            return None
        self._target = target
        return Decision(
            symbol=bars.symbol,
            bar_time=bars.last_time(),
            target=target,
            confidence=min(1.0, abs(rsi - 50.0) / 50.0),
            explanation={"kind": "rsi", "rsi": round(rsi, 4), "lower": p.lower, "upper": p.upper, "rule": rule},
        )

    def state_dict(self) -> dict[str, Any]:
        return {"target": self._target, "changes_seen": self._seen}


def rsi_reasons(e: dict[str, Any]) -> list[str]:
    """What the report's trade hovers and ``bot journal explain`` say about one decision."""
    out = [f"RSI {float(e['rsi']):.1f} (bands {e.get('lower', '?')}/{e.get('upper', '?')})"]
    if e.get("rule"):
        out.append(f"rule: {e['rule']}")
    return out


# Optional: without SPEC the bot makes one from the class (generic report section and reasons).
SPEC = StrategySpec(name="rsi", cls=RsiReversion, reasons=rsi_reasons,
                    description="RSI mean reversion: long when oversold, out when overbought")
