"""Volatility only: long while the last day's realised volatility is at most a level fitted on
training bars, else flat. The baseline a model must beat to show it knows more than "quiet
markets drift up": it reads nothing but the size of recent moves, never their direction.

The feature of bar t is :func:`models.vol_regime.window_vol` of the ``lookback`` log returns
ending at close t (closes t - lookback .. t only). ``max_vol`` is the ``quantile`` of that feature
over training bars: ``bot walkforward`` fits it on each fold's training window; a backtest
without ``max_vol`` fits it on the first ``train_fraction`` of the file and trades only the rest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from bot.bars import Bars
from bot.candles import CandleData
from bot.domain import Decision
from bot.errors import ConfigError
from models.vol_regime import realised_vol, window_vol
from strategies.base import Strategy, StrategyContext, StrategyParams
from strategies.spec import StrategySpec


class VolOnlyParams(StrategyParams):
    lookback: int = Field(24, ge=2)
    quantile: float = Field(0.5, gt=0, lt=1)
    max_vol: float | None = Field(None, gt=0)
    train_fraction: float = Field(0.5, gt=0, lt=1)


def fit_max_vol(close: np.ndarray, lookback: int, quantile: float) -> float:
    """The ``quantile`` of the causal realised volatility over these (training) closes."""
    vol = realised_vol(np.asarray(close, dtype=np.float64), lookback)
    vol = vol[np.isfinite(vol)]
    if not vol.size:
        raise ConfigError(f"vol_only: too few training bars to fit max_vol (need more than {lookback + 2})")
    return float(np.quantile(vol, quantile))


class VolOnly(Strategy):
    name = "vol_only"
    Params = VolOnlyParams

    def __init__(self, params: VolOnlyParams, ctx: StrategyContext) -> None:
        super().__init__(params, ctx)
        if params.max_vol is None:
            raise ConfigError("strategy.params.max_vol: required outside a backtest (vol_only fits it on "
                              "training bars in `bot backtest` and `bot walkforward`)")
        self._lookback, self._max = params.lookback, float(params.max_vol)
        self._last: float | None = None

    @classmethod
    def for_backtest(cls, raw: dict[str, Any], ctx: StrategyContext,
                     data: CandleData) -> tuple[Strategy, int, str | None]:
        params = cls.parse_params(raw)
        assert isinstance(params, VolOnlyParams)
        if params.max_vol is not None:
            return cls(params, ctx), 0, None
        cut = int(len(data) * params.train_fraction)
        fitted = fit_max_vol(data.close[:cut], params.lookback, params.quantile)
        strategy = cls(params.model_copy(update={"max_vol": fitted}), ctx)
        return strategy, cut, (f"vol_only: max_vol {fitted:.6g} fitted on the first {cut} bars; "
                               f"backtesting the {len(data) - cut} later bars")

    @property
    def warmup(self) -> int:
        return self._lookback + 1

    def on_start(self, bars: Bars) -> None:
        self._last = None

    def on_bar(self, bars: Bars) -> Decision | None:
        if bars.n <= self._lookback:
            return None
        vol = window_vol(bars.close[bars.n - self._lookback - 1:bars.n])
        target = 1.0 if vol <= self._max else 0.0
        if target == self._last:
            return None
        self._last = target
        rule = f"vol {vol:.4g} {'<=' if target else '>'} {self._max:.4g} -> {'long' if target else 'flat'}"
        return Decision(symbol=bars.symbol, bar_time=bars.last_time(), target=target, confidence=1.0,
                        explanation={"kind": "vol_only", "vol": vol, "max_vol": self._max, "rule": rule})


SPEC = StrategySpec(name="vol_only", cls=VolOnly,
                    description="Baseline: long while realised volatility is low, else flat")
