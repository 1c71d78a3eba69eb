"""Historical candles from CSV, CSV.gz or Parquet files, validated before anything runs.

The file format is the one in ``shared/data``: header ``timestamp,open,high,low,close,volume``
where ``timestamp`` is the candle's OPEN time in UTC milliseconds. Gaps are reported, never
filled with invented prices.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from bot.domain import Candle
from bot.errors import DataError

COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]


@dataclass(frozen=True, slots=True)
class GapReport:
    count: int
    missing_bars: int
    largest_ms: int
    largest_at: int | None

    def describe(self, bar_ms: int) -> str:
        if not self.count:
            return "no gaps"
        at = ms_to_iso(self.largest_at) if self.largest_at is not None else "?"
        return (
            f"{self.count} gaps, {self.missing_bars} missing bars, "
            f"largest {self.largest_ms // bar_ms - 1} bars after {at}"
        )


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
        import hashlib

        h = hashlib.sha256()
        for arr in (self.time, self.open, self.high, self.low, self.close, self.volume):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]


def ms_to_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_date(value: str) -> int:
    """``2024-01-01`` or an ISO datetime (UTC if naive) -> epoch ms."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise DataError(f"bad date {value!r}: expected YYYY-MM-DD or an ISO datetime") from None
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.value // 1_000_000)


def _read_frame(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    try:
        if name.endswith(".parquet") or name.endswith(".pq"):
            return pd.read_parquet(path)
        if name.endswith(".csv") or name.endswith(".csv.gz"):
            return pd.read_csv(path)
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot parse {path}: {first}") from None
    raise DataError(f"unsupported data file {path}: expected .csv, .csv.gz or .parquet")


def load_candles(
    path: str | Path,
    *,
    symbol: str,
    timeframe: str,
    bar_ms: int,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> CandleData:
    """Read and validate a candle file. Raises :class:`DataError` with one clear line."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file not found: {p}")
    if p.is_dir():
        raise DataError(f"data path is a directory, expected a file: {p}")
    df = _read_frame(p)
    cols = [str(c).strip().lower() for c in df.columns]
    if cols != COLUMNS:
        raise DataError(
            f"{p.name}: header must be exactly {','.join(COLUMNS)}; found {','.join(map(str, df.columns))}"
        )
    df.columns = COLUMNS
    if df.empty:
        raise DataError(f"{p.name}: no candles in file")
    num = df.apply(pd.to_numeric, errors="coerce")
    bad = num.isna().any(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{p.name}: row {row + 2} has a missing or non-numeric value (NaN)")
    t = num["timestamp"].to_numpy()
    if not np.all(np.isfinite(t)) or np.any(t != np.floor(t)):
        raise DataError(f"{p.name}: timestamp must be integer milliseconds")
    t = t.astype(np.int64)
    if t.min() < 10**11:
        raise DataError(f"{p.name}: timestamps look like seconds, expected milliseconds since the epoch")
    o, h, lo, c, v = (num[k].to_numpy(dtype=np.float64) for k in COLUMNS[1:])
    if not all(np.all(np.isfinite(a)) for a in (o, h, lo, c, v)):
        raise DataError(f"{p.name}: non-finite price or volume")
    dt = np.diff(t)
    if np.any(dt == 0):
        row = int(np.flatnonzero(dt == 0)[0]) + 1
        raise DataError(f"{p.name}: duplicate timestamp {t[row]} at row {row + 2}")
    if np.any(dt < 0):
        row = int(np.flatnonzero(dt < 0)[0]) + 1
        raise DataError(f"{p.name}: timestamps not sorted ascending at row {row + 2}")
    nonpos = (o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0)
    if nonpos.any():
        row = int(np.flatnonzero(nonpos)[0])
        raise DataError(f"{p.name}: non-positive price at row {row + 2}")
    if np.any(v < 0):
        row = int(np.flatnonzero(v < 0)[0])
        raise DataError(f"{p.name}: negative volume at row {row + 2}")
    incons = (h < np.maximum(o, c)) | (lo > np.minimum(o, c)) | (h < lo)
    if incons.any():
        row = int(np.flatnonzero(incons)[0])
        raise DataError(f"{p.name}: high/low inconsistent with open/close at row {row + 2}")
    if dt.size and int(np.median(dt)) != bar_ms:
        raise DataError(
            f"{p.name}: candles are {int(np.median(dt)) // 1000}s apart but timeframe {timeframe} "
            f"means {bar_ms // 1000}s; pass --set market.timeframe=..."
        )
    if np.any(t % bar_ms != 0):
        row = int(np.flatnonzero(t % bar_ms != 0)[0])
        raise DataError(f"{p.name}: timestamp at row {row + 2} is off the {timeframe} grid")
    lo_i = 0 if start_ms is None else int(np.searchsorted(t, start_ms, side="left"))
    hi_i = len(t) if end_ms is None else int(np.searchsorted(t, end_ms, side="left"))
    if hi_i <= lo_i:
        raise DataError(f"{p.name}: no candles between --from and --to")
    sl = slice(lo_i, hi_i)
    t, o, h, lo, c, v = t[sl], o[sl], h[sl], lo[sl], c[sl], v[sl]
    gaps = find_gaps(t, bar_ms)
    return CandleData(symbol, timeframe, t.copy(), o.copy(), h.copy(), lo.copy(), c.copy(), v.copy(),
                      str(p), gaps)


def find_gaps(t: np.ndarray, bar_ms: int) -> GapReport:
    dt = np.diff(t)
    mask = dt > bar_ms
    if not mask.any():
        return GapReport(0, 0, 0, None)
    big = int(np.argmax(dt))
    return GapReport(
        count=int(mask.sum()),
        missing_bars=int(((dt[mask] // bar_ms) - 1).sum()),
        largest_ms=int(dt[big]),
        largest_at=int(t[big]),
    )


async def replay_candles(data: CandleData, speed: float, bar_ms: int) -> AsyncIterator[Candle]:
    """Yield candles paced at ``speed`` times real time (0 = as fast as possible).

    Each candle is delivered when it would have closed, scaled: a live feed's timing, replayed.
    """
    start = time.monotonic()
    t0 = int(data.time[0]) if len(data) else 0
    for i in range(len(data)):
        if speed > 0:
            due = (int(data.time[i]) + bar_ms - t0) / 1000.0 / speed
            delay = due - (time.monotonic() - start)
            if delay > 0:
                await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)
        yield data.candle(i)
