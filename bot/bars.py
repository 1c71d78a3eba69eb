"""The bar buffer strategies read from.

A strategy sees bars ``[0, n)`` only: every accessor returns a view that ends at the current
bar, so a backtest that preloads the whole history still cannot leak the future into a decision
(the idea of backtesting.py's ``_Data``). Live feeds append; backtests reveal preloaded bars one
by one. Both drive the same engine code. A leaf beside :mod:`bot.domain`: it imports nothing of
the project except :mod:`bot.domain`.
"""

from __future__ import annotations

import numpy as np

from bot.domain import Candle

_FIELDS = ("time", "open", "high", "low", "close", "volume")


class Bars:
    __slots__ = ("symbol", "timeframe", "n", "_t", "_o", "_h", "_l", "_c", "_v", "_preloaded")

    def __init__(self, symbol: str, timeframe: str, capacity: int = 1024) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        self.n = 0
        cap = max(capacity, 16)
        self._t = np.zeros(cap, dtype=np.int64)
        self._o = np.zeros(cap)
        self._h = np.zeros(cap)
        self._l = np.zeros(cap)
        self._c = np.zeros(cap)
        self._v = np.zeros(cap)
        self._preloaded = 0

    @classmethod
    def preloaded(cls, symbol: str, timeframe: str, time: np.ndarray, open_: np.ndarray,
                  high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray) -> Bars:
        """History held in memory but hidden; :meth:`advance` reveals one bar at a time."""
        b = cls(symbol, timeframe, capacity=16)
        b._t, b._o, b._h, b._l, b._c, b._v = (np.ascontiguousarray(a) for a in
                                              (time, open_, high, low, close, volume))
        b._t = b._t.astype(np.int64, copy=False)
        b._preloaded = len(time)
        return b

    # -- writers -------------------------------------------------------------------------------
    def advance(self) -> bool:
        """Reveal the next preloaded bar; False when history is exhausted."""
        if self.n >= self._preloaded:
            return False
        self.n += 1
        return True

    def append(self, c: Candle) -> None:
        """Append a live closed candle. Candles at or before the last bar are ignored."""
        if self.n and c.open_time <= self._t[self.n - 1]:
            return
        if self._preloaded > self.n:
            raise RuntimeError("cannot append live candles while preloaded bars are still hidden")
        if self.n == self._t.shape[0]:
            self._grow()
        i = self.n
        self._t[i] = c.open_time
        self._o[i] = c.open
        self._h[i] = c.high
        self._l[i] = c.low
        self._c[i] = c.close
        self._v[i] = c.volume
        self.n = i + 1
        self._preloaded = self.n

    def _grow(self) -> None:
        cap = self._t.shape[0] * 2
        for name in ("_t", "_o", "_h", "_l", "_c", "_v"):
            old = getattr(self, name)
            new = np.zeros(cap, dtype=old.dtype)
            new[: old.shape[0]] = old
            setattr(self, name, new)

    def upcoming(self, end: int) -> dict[str, np.ndarray]:
        """The hidden preloaded bars ``[n, end)``: for the engine's fast-forward only, which hands
        them to its strategy and broker as the bars about to close (``Strategy.quiet``)."""
        end = min(end, self._preloaded)
        n = self.n
        return {"time": self._t[n:end], "open": self._o[n:end], "high": self._h[n:end],
                "low": self._l[n:end], "close": self._c[n:end], "volume": self._v[n:end]}

    # -- readers (views ending at the current bar) ----------------------------------------------
    @property
    def time(self) -> np.ndarray:
        return self._t[: self.n]

    @property
    def open(self) -> np.ndarray:
        return self._o[: self.n]

    @property
    def high(self) -> np.ndarray:
        return self._h[: self.n]

    @property
    def low(self) -> np.ndarray:
        return self._l[: self.n]

    @property
    def close(self) -> np.ndarray:
        return self._c[: self.n]

    @property
    def volume(self) -> np.ndarray:
        return self._v[: self.n]

    def __len__(self) -> int:
        return self.n

    def last(self) -> tuple[int, float, float, float, float, float]:
        """(time, open, high, low, close, volume) of the current bar as Python scalars."""
        i = self.n - 1
        return (self._t.item(i), self._o.item(i), self._h.item(i), self._l.item(i), self._c.item(i),
                self._v.item(i))

    def last_close(self) -> float:
        return self._c.item(self.n - 1)

    def last_time(self) -> int:
        return self._t.item(self.n - 1)

    def ohlc_at(self, i: int) -> tuple[float, float, float, float]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self._o.item(i), self._h.item(i), self._l.item(i), self._c.item(i)

    def window(self, k: int) -> dict[str, np.ndarray]:
        """The last ``k`` bars (fewer if not yet available) as views."""
        lo = max(0, self.n - k)
        return {
            "time": self._t[lo: self.n], "open": self._o[lo: self.n], "high": self._h[lo: self.n],
            "low": self._l[lo: self.n], "close": self._c[lo: self.n], "volume": self._v[lo: self.n],
        }

    def candle(self, i: int) -> Candle:
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(i)
        return Candle(self.symbol, self.timeframe, int(self._t[i]), float(self._o[i]), float(self._h[i]),
                      float(self._l[i]), float(self._c[i]), float(self._v[i]))
