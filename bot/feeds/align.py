"""Markets of one feed and the fixed order of bars that close together.

Bars of different markets that close at the same time T (open time + timeframe) leave in the
order of the feed's market list. A bar is held until every market due at T has taken its bar
closing at T (a market is due when T is a multiple of its timeframe: Bybit's timeframes up to
1d are aligned to the epoch), or until ``align_s`` seconds passed since the first bar closing at
T was taken; then what is there leaves in list order. Groups leave in close-time order, so a
market's own bars stay in order; a bar whose close time has already left (a late one) leaves
at once. With one market every group is complete when its bar is taken: nothing waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bot.domain import Candle, timeframe_ms

#: Bybit kline interval strings by bot timeframe.
INTERVALS = {"1m": "1", "3m": "3", "5m": "5", "15m": "15", "30m": "30", "1h": "60", "2h": "120",
             "4h": "240", "6h": "360", "12h": "720", "1d": "D"}


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """One market of a feed: its place in the list, its symbol, timeframe and kline topic."""

    index: int
    symbol: str
    timeframe: str
    tf_ms: int
    topic: str


def market_specs(markets: Sequence[tuple[str, str]]) -> list[MarketSpec]:
    """Specs in list order; no markets, a symbol listed twice or an unknown timeframe is a ValueError."""
    if not markets:
        raise ValueError("a feed needs at least one (symbol, timeframe) market")
    specs: list[MarketSpec] = []
    seen: set[str] = set()
    for i, (symbol, timeframe) in enumerate(markets):
        if symbol in seen:
            raise ValueError(f"market {symbol} is listed twice; one feed serves each symbol once")
        seen.add(symbol)
        tf_ms = timeframe_ms(timeframe)
        if timeframe not in INTERVALS:
            raise ValueError(f"timeframe {timeframe!r} has no Bybit kline interval")
        specs.append(MarketSpec(i, symbol, timeframe, tf_ms, f"kline.{INTERVALS[timeframe]}.{symbol}"))
    return specs


class CloseAligner:
    """Holds taken bars by close time and lets them go in (close time, list index) order.

    ``last_open`` is the feed's per-symbol open time of the last bar taken; a market counts as
    done with close time T once that bar closes at or after T (its bar at T taken, or skipped).
    Callers update ``last_open`` before :meth:`add`, then ask :meth:`ready`.
    """

    def __init__(self, markets: Sequence[MarketSpec], last_open: Mapping[str, int | None], align_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.markets = list(markets)
        self.last_open = last_open
        self.align_s = align_s
        self.clock = clock
        self._groups: dict[int, dict[int, Candle]] = {}
        self._first: dict[int, float] = {}
        self._late: list[Candle] = []
        self._released: int | None = None

    def add(self, m: MarketSpec, c: Candle) -> None:
        close = c.open_time + m.tf_ms
        if self._released is not None and close <= self._released:
            self._late.append(c)
            return
        group = self._groups.setdefault(close, {})
        if not group:
            self._first[close] = self.clock()
        group[m.index] = c

    def deadline(self) -> float | None:
        """When the oldest held group leaves even if incomplete (``clock`` time); None: nothing held."""
        if not self._groups:
            return None
        return self._first[min(self._groups)] + self.align_s

    def held(self) -> int:
        return sum(len(g) for g in self._groups.values())

    def ready(self) -> list[Candle]:
        """Bars free to leave now, in order: late ones first, then complete or expired groups."""
        out, self._late = self._late, []
        now = self.clock()
        while self._groups:
            close = min(self._groups)
            if not self._complete(close) and now < self._first[close] + self.align_s:
                break
            group = self._groups.pop(close)
            del self._first[close]
            out.extend(group[i] for i in sorted(group))
            self._released = close
        return out

    def _complete(self, close: int) -> bool:
        for m in self.markets:
            last = self.last_open.get(m.symbol)
            if close % m.tf_ms == 0 and last is not None and last + m.tf_ms < close:
                return False
        return True
