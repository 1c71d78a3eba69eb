"""One replayed market: candles from a file, revealed by the sim clock.

Bars whose close time (open + timeframe) is at or before sim time are closed history; the bar
containing sim time is the forming candle, shown with partial values that reach the file's
OHLCV exactly when it closes. Partial values are a simulation aid (an open bar is never given
to strategies, the bot only trades closed bars); they are rounded to the instrument's tick.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bot.candles import CandleData
from bot.domain import TIMEFRAME_MS
from bot.errors import DataError
from bot.feeds.instrument_file import MARGIN, read_rules
from bot.feeds.replay import load_candles
from bot.funding import FundingRates, load_funding, sibling_file
from broker.bybit_sim.envelope import decimals_of, num

#: Bybit kline interval strings by bot timeframe.
INTERVALS = {"1m": "1", "3m": "3", "5m": "5", "15m": "15", "30m": "30", "1h": "60", "2h": "120",
             "4h": "240", "6h": "360", "12h": "720", "1d": "D"}
INTERVAL_MS = {v: TIMEFRAME_MS[k] for k, v in INTERVALS.items()}

#: Instrument rules by symbol, from the real samples (linear BTCUSDT: tick 0.10, lot 0.001).
KNOWN_RULES = {
    "BTCUSDT": {"tick": "0.10", "qty_step": "0.001", "min_qty": "0.001", "max_qty": "1190.000",
                "spot_tick": "0.1", "base_precision": "0.000001", "spot_min_qty": "0.000011"},
    "ETHUSDT": {"tick": "0.01", "qty_step": "0.01", "min_qty": "0.01", "max_qty": "7240.00",
                "spot_tick": "0.01", "base_precision": "0.00001", "spot_min_qty": "0.00023"},
}


@dataclass
class PartialBar:
    start: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    confirm: bool


@dataclass
class Market:
    """A symbol served in both the ``linear`` and the ``spot`` category from one candle file."""

    symbol: str
    timeframe: str
    data: CandleData
    rules: dict[str, str] = field(default_factory=dict)
    #: The perpetual's funding settlements (the shared ``*_<SYMBOL>_funding_*.csv.gz`` beside the
    #: candle file): served by ``/v5/market/funding/history``, settled on open linear positions.
    funding: FundingRates | None = None

    def __post_init__(self) -> None:
        self.tf_ms = TIMEFRAME_MS[self.timeframe]
        self.interval = INTERVALS[self.timeframe]
        self.t = self.data.time
        self.price_dp = decimals_of(self.rules["tick"])
        self.spot_price_dp = decimals_of(self.rules["spot_tick"])
        self.base_coin = self.symbol[:-4] if self.symbol.endswith("USDT") else self.symbol[:-3]
        self.quote_coin = self.symbol[len(self.base_coin):]

    @property
    def base(self) -> str:
        return self.base_coin

    def __len__(self) -> int:
        return len(self.data)

    # -- what the clock reveals --------------------------------------------------------------------
    def closed_count(self, now_ms: int) -> int:
        """Number of bars closed at sim time ``now_ms`` (bars ``[0, k)``)."""
        return int(np.searchsorted(self.t + self.tf_ms, now_ms, side="right"))

    def forming_index(self, now_ms: int) -> int | None:
        i = self.closed_count(now_ms)
        if i < len(self.t) and self.t[i] <= now_ms:
            return i
        return None

    def bar(self, i: int, now_ms: int | None = None) -> PartialBar:
        """Bar ``i`` as seen at ``now_ms`` (complete when closed or ``now_ms`` is None)."""
        d = self.data
        t = int(self.t[i])
        o, h, lo, c, v = float(d.open[i]), float(d.high[i]), float(d.low[i]), float(d.close[i]), float(d.volume[i])
        if now_ms is None or now_ms >= t + self.tf_ms:
            return PartialBar(t, o, h, lo, c, v, True)
        f = min(max((now_ms - t) / self.tf_ms, 0.0), 1.0)
        return PartialBar(t, o, o + (h - o) * f, o - (o - lo) * f, o + (c - o) * f, v * f, False)

    def row(self, b: PartialBar, spot: bool = False) -> list[str]:
        """A REST kline row: ``[startTime, open, high, low, close, volume, turnover]`` strings."""
        dp = self.spot_price_dp if spot else self.price_dp
        turnover = b.volume * (b.open + b.high + b.low + b.close) / 4.0
        return [str(b.start), num(b.open, dp), num(b.high, dp), num(b.low, dp), num(b.close, dp),
                num(b.volume, 8), num(turnover, 4)]

    def ws_kline(self, b: PartialBar, now_ms: int, spot: bool = False) -> dict[str, object]:
        """One element of a ``kline.{interval}.{symbol}`` push (start/end/timestamp are numbers)."""
        dp = self.spot_price_dp if spot else self.price_dp
        turnover = b.volume * (b.open + b.high + b.low + b.close) / 4.0
        return {"start": b.start, "end": b.start + self.tf_ms - 1, "interval": self.interval,
                "open": num(b.open, dp), "close": num(b.close, dp), "high": num(b.high, dp),
                "low": num(b.low, dp), "volume": num(b.volume, 8), "turnover": num(turnover, 4),
                "confirm": b.confirm, "timestamp": int(now_ms)}

    # -- REST kline query ---------------------------------------------------------------------------
    def klines(self, interval_ms: int, start: int | None, end: int | None, limit: int,
               now_ms: int) -> list[PartialBar]:
        """Bars in ``[start, end]`` visible at ``now_ms``, newest first, at most ``limit``.

        With ``start`` and no ``end`` Bybit counts ``limit`` bars forward from ``start``; otherwise
        the newest ``limit`` bars up to ``end`` (default now). The forming bar is included.
        """
        visible = self.closed_count(now_ms) + (1 if self.forming_index(now_ms) is not None else 0)
        if interval_ms != self.tf_ms:
            bars = self._aggregate(interval_ms, visible, now_ms)
        else:
            lo = 0 if start is None else int(np.searchsorted(self.t[:visible], start - self.tf_ms + 1))
            hi = visible if end is None else int(np.searchsorted(self.t[:visible], end, side="right"))
            idx = range(lo, hi)
            if start is not None and end is None:
                idx = idx[:limit]
            else:
                idx = idx[-limit:] if limit < len(idx) else idx
            bars = [self.bar(i, now_ms) for i in idx]
            return bars[::-1]
        bars = [b for b in bars if (start is None or b.start + interval_ms > start)
                and (end is None or b.start <= end)]
        bars = bars[:limit] if (start is not None and end is None) else bars[-limit:]
        return bars[::-1]

    def _aggregate(self, interval_ms: int, visible: int, now_ms: int) -> list[PartialBar]:
        """Multiples of the file's timeframe, grouped on epoch-aligned boundaries."""
        out: list[PartialBar] = []
        cur: PartialBar | None = None
        for i in range(visible):
            b = self.bar(i, now_ms)
            g = b.start - b.start % interval_ms
            if cur is None or cur.start != g:
                if cur is not None:
                    out.append(cur)
                cur = PartialBar(g, b.open, b.high, b.low, b.close, b.volume, False)
            else:
                cur.high, cur.low = max(cur.high, b.high), min(cur.low, b.low)
                cur.close, cur.volume = b.close, cur.volume + b.volume
        if cur is not None:
            out.append(cur)
        return out


def _infer_symbol(path: Path) -> str:
    m = re.search(r"([A-Z0-9]{2,}(?:USDT|USDC|USD))", path.name.upper())
    return m.group(1) if m else "BTCUSDT"


def _infer_timeframe(path: Path) -> str:
    t = pd.read_csv(path, usecols=["timestamp"])["timestamp"].to_numpy()
    if len(t) < 2:
        raise DataError(f"{path.name}: need at least two candles to serve")
    step = int(np.median(np.diff(t)))
    for tf, ms in TIMEFRAME_MS.items():
        if ms == step:
            return tf
    raise DataError(f"{path.name}: candles {step} ms apart match no Bybit interval")


def load_market(path: str | Path, symbol: str | None = None, timeframe: str | None = None) -> Market:
    """Load a replay-format candle file (see shared/data README) as a simulated market."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file not found: {p}")
    sym = (symbol or _infer_symbol(p)).upper()
    tf = timeframe or _infer_timeframe(p)
    data = load_candles(p, symbol=sym, timeframe=tf, bar_ms=TIMEFRAME_MS[tf])
    rules = dict(KNOWN_RULES.get(sym, {}))
    if not rules:
        step = "0.01" if float(np.median(data.close)) < 1000 else "0.10"
        rules = {"tick": step, "qty_step": "0.001", "min_qty": "0.001", "max_qty": "1000000",
                 "spot_tick": step, "base_precision": "0.000001", "spot_min_qty": "0.000001"}
    saved = read_rules(p, sym) or {}  # margin terms of FILE.instrument.json, as the backtest reads them
    rules.update({k: format(saved[k].normalize(), "f") for k in MARGIN if k in saved})
    beside = sibling_file(p, sym)
    return Market(sym, tf, data, rules, load_funding(beside) if beside is not None else None)
