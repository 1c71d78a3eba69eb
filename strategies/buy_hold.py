"""Buy and hold: fully long from the first bar on (a baseline every backtest can be set beside)."""

from __future__ import annotations

from bot.bars import Bars
from bot.domain import Decision
from strategies.base import Strategy, StrategyContext, StrategyParams
from strategies.spec import StrategySpec


class BuyHold(Strategy):
    """Target 1.0 once; never another decision, so fees are paid on the way in only (and on the
    way out where a run closes its position)."""

    name = "buy_hold"

    def __init__(self, params: StrategyParams, ctx: StrategyContext) -> None:
        super().__init__(params, ctx)
        self._done = False

    def on_start(self, bars: Bars) -> None:
        self._done = False

    def on_bar(self, bars: Bars) -> Decision | None:
        if self._done:
            return None
        self._done = True
        return Decision(symbol=bars.symbol, bar_time=bars.last_time(), target=1.0, confidence=1.0,
                        explanation={"kind": "buy_hold", "rule": "always long"})


SPEC = StrategySpec(name="buy_hold", cls=BuyHold, description="Baseline: fully long from the first bar on")
