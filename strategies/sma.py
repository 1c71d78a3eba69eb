"""SMA crossover baseline: long while the fast mean is above the slow one, else flat (or short)."""

from __future__ import annotations

from collections import deque

import numpy as np
from pydantic import Field, model_validator

from bot.bars import Bars
from bot.domain import Decision
from strategies.base import Strategy, StrategyContext, StrategyParams
from strategies.spec import StrategySpec


class SMAParams(StrategyParams):
    fast: int = Field(10, ge=1)
    slow: int = Field(30, ge=2)
    allow_short: bool = False

    @model_validator(mode="after")
    def _order(self) -> SMAParams:
        if self.fast >= self.slow:
            raise ValueError("fast must be smaller than slow")
        return self


class SMACrossover(Strategy):
    """Incremental: O(1) per bar, no recomputation over the history."""

    name = "sma"
    Params = SMAParams

    def __init__(self, params: SMAParams, ctx: StrategyContext) -> None:
        super().__init__(params, ctx)
        self._fast_n = params.fast
        self._slow_n = params.slow
        self._short = -1.0 if (params.allow_short and not ctx.long_only) else 0.0
        self._reset()

    def _reset(self) -> None:
        self._fast_q: deque[float] = deque()
        self._slow_q: deque[float] = deque()
        self._fast_sum = 0.0
        self._slow_sum = 0.0
        self._last: float | None = None

    @property
    def warmup(self) -> int:
        return self._slow_n

    def on_start(self, bars: Bars) -> None:
        # Rebuild the running sums from the bars already seen (a resumed run).
        self._reset()
        # Every bar shown before the first on_bar is history the engine will not deliver again.
        for c in bars.close[-self._slow_n:].tolist():
            self._push(c)

    def _push(self, c: float) -> None:
        fq, sq = self._fast_q, self._slow_q
        fq.append(c)
        sq.append(c)
        self._fast_sum += c
        self._slow_sum += c
        if len(fq) > self._fast_n:
            self._fast_sum -= fq.popleft()
        if len(sq) > self._slow_n:
            self._slow_sum -= sq.popleft()

    def on_bar(self, bars: Bars) -> Decision | None:
        # _push inlined: this runs once per bar on the backtest hot path.
        c = bars.last_close()
        fq, sq = self._fast_q, self._slow_q
        fq.append(c)
        sq.append(c)
        self._fast_sum += c
        self._slow_sum += c
        if len(fq) > self._fast_n:
            self._fast_sum -= fq.popleft()
        if len(sq) > self._slow_n:
            self._slow_sum -= sq.popleft()
        elif len(sq) < self._slow_n:
            return None
        fast = self._fast_sum / self._fast_n
        slow = self._slow_sum / self._slow_n
        target = 1.0 if fast > slow else self._short
        if target == self._last:
            return None  # no new view: the target has not changed
        self._last = target
        return Decision(
            symbol=bars.symbol,
            bar_time=bars.last_time(),
            target=target,
            confidence=1.0,
            explanation={"kind": "sma", "fast_sma": fast, "slow_sma": slow, "rule": "fast > slow -> long"},
        )

    def quiet(self, upcoming: dict[str, np.ndarray], advance: bool = True) -> int:
        """The bars before the next crossover, by :meth:`on_bar`'s own arithmetic (add the new
        close, subtract the one leaving the window, in that order: bit-identical means) over a
        list instead of deques: the engine then marks them as one block."""
        fn, sn = self._fast_n, self._slow_n
        if len(self._slow_q) < sn:
            return 0  # warming up: bar by bar
        ext = [*self._slow_q, *upcoming["close"].tolist()]  # the window, then the bars to come
        fs, ss, last, short = self._fast_sum, self._slow_sum, self._last, self._short
        k, m = 0, len(ext) - sn
        while k < m:
            c = ext[sn + k]
            f = fs + c - ext[sn + k - fn]
            s = ss + c - ext[k]
            if (1.0 if f / fn > s / sn else short) != last:
                break  # bar k decides: on_bar computes it again, from the state before it
            fs, ss, k = f, s, k + 1
        if k and advance:
            self._fast_sum, self._slow_sum = fs, ss
            self._fast_q = deque(ext[sn + k - fn:sn + k])
            self._slow_q = deque(ext[k:sn + k])
        return k

SPEC = StrategySpec(
    name="sma",
    cls=SMACrossover,
    report="bot.report.sections:SMA",
    reasons="bot.report.reasons:sma_reasons",
    description="SMA crossover baseline: long while the fast mean is above the slow one",
)
