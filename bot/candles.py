"""Candles as column arrays: :class:`CandleData`, its :class:`GapReport` and the :class:`OHLCV` shape.

A leaf beside :mod:`bot.domain`: it imports nothing of the project except :mod:`bot.domain` and
:mod:`bot.timeutil` (both leaves), so strategies and models use it without reaching into a feed.
Reading and validating candle files is :mod:`bot.feeds.replay`'s job, not this module's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from bot.domain import Candle
from bot.timeutil import ms_to_iso


class OHLCV(Protocol):
    """Anything with candle column arrays (:class:`CandleData`, :class:`bot.bars.Bars`)."""

    time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


@dataclass(frozen=True, slots=True)
class GapReport:
    """Holes in a candle series: reported, never filled with invented prices.

    ``filler`` counts the zero-volume flat candles (open = high = low = close, volume 0: an
    exchange's filler for a bar without trades) dropped at load: they are holes too, and are
    counted among the gaps and missing bars.
    """

    count: int
    missing_bars: int
    largest_ms: int
    largest_at: int | None
    filler: int = 0

    @property
    def found(self) -> bool:
        """Anything to warn about: a gap, or filler candles dropped (even at the file's edges)."""
        return bool(self.count or self.filler)

    def describe(self, bar_ms: int) -> str:
        out = "no gaps"
        if self.count:
            at = ms_to_iso(self.largest_at) if self.largest_at is not None else "?"
            out = (f"{self.count} gaps, {self.missing_bars} missing bars, "
                   f"largest {self.largest_ms // bar_ms - 1} bars after {at}")
        if self.filler:
            out += f"; {self.filler} zero-volume flat filler candles dropped (treated as gaps)"
        return out

    def payload(self) -> dict[str, int | None]:
        """The report as a JSON object (the ``data_gaps`` event, ``bot evaluate --json``)."""
        return {"count": self.count, "missing_bars": self.missing_bars, "largest_ms": self.largest_ms,
                "largest_at": self.largest_at, "filler_dropped": self.filler}


def find_gaps(t: np.ndarray, bar_ms: int, filler: int = 0) -> GapReport:
    """The gaps in sorted open times ``t`` (int64 ms) on a ``bar_ms`` grid (``filler``: the
    number of filler candles already dropped from ``t``)."""
    dt = np.diff(t)
    mask = dt > bar_ms
    if not mask.any():
        return GapReport(0, 0, 0, None, filler)
    big = int(np.argmax(dt))
    return GapReport(
        count=int(mask.sum()),
        missing_bars=int(((dt[mask] // bar_ms) - 1).sum()),
        largest_ms=int(dt[big]),
        largest_at=int(t[big]),
        filler=filler,
    )


def filler_mask(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Zero-volume flat candles (open = high = low = close, volume 0): no trade happened, the
    exchange repeated the last price. They carry no information and are treated as gaps."""
    return (v == 0) & (o == h) & (h == lo) & (lo == c)


@dataclass(frozen=True, slots=True)
class CandleData:
    """Validated candles as column arrays (float64, time int64 ms)."""

    symbol: str
    timeframe: str
    time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    source: str
    gaps: GapReport

    def __len__(self) -> int:
        return int(self.time.shape[0])

    def slice(self, start: int, stop: int) -> CandleData:
        return CandleData(
            self.symbol, self.timeframe, self.time[start:stop], self.open[start:stop],
            self.high[start:stop], self.low[start:stop], self.close[start:stop],
            self.volume[start:stop], self.source, self.gaps,
        )

    def candle(self, i: int) -> Candle:
        return Candle(
            self.symbol, self.timeframe, int(self.time[i]), float(self.open[i]), float(self.high[i]),
            float(self.low[i]), float(self.close[i]), float(self.volume[i]),
        )

    def candles(self) -> Iterator[Candle]:
        for i in range(len(self)):
            yield self.candle(i)

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for arr in (self.time, self.open, self.high, self.low, self.close, self.volume):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]


def merge_order(close_times: Sequence[np.ndarray]) -> np.ndarray:
    """Market index of every bar of several markets, in (close time, config order) order."""
    if len(close_times) < 2:
        return np.zeros(sum(len(t) for t in close_times), dtype=np.int32)
    times = np.concatenate(close_times)
    which = np.concatenate([np.full(len(t), i, dtype=np.int32) for i, t in enumerate(close_times)])
    return which[np.lexsort((which, times))]


def union_times(times: Sequence[np.ndarray]) -> np.ndarray:
    """Every distinct time of several arrays, ascending. (A sort and a neighbour compare:
    ``np.unique`` takes a hundred times longer on millions of bar times.)"""
    if not times:
        return np.zeros(0, dtype=np.int64)
    t = np.sort(np.concatenate(times), kind="stable")
    keep = np.ones(len(t), dtype=bool)
    np.not_equal(t[1:], t[:-1], out=keep[1:])
    return t[keep]
