"""Historical candles from CSV, CSV.gz or Parquet files, validated before anything runs.

The file format is the one in ``shared/data``: header ``timestamp,open,high,low,close,volume``
where ``timestamp`` is the candle's OPEN time in UTC milliseconds. Gaps are reported, never
filled with invented prices; zero-volume flat candles (exchange filler) are dropped and reported
as gaps.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bot.candles import CandleData, filler_mask, find_gaps, merge_order
from bot.domain import TIMEFRAME_MS, Candle
from bot.errors import DataError

COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]


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


def data_dir() -> Path:
    """Where the shared market data lives: ``BOT_DATA_DIR`` (default ``../shared/data``)."""
    return Path(os.environ.get("BOT_DATA_DIR", "../shared/data")).expanduser()


_SYMBOL_TOKEN = re.compile(r"^[A-Z0-9]{2,}(USDT|USDC|USD|PERP)$")


def check_file_name(p: Path, symbol: str, timeframe: str) -> None:
    """A file named like ``bybit_ETHUSDT_1h.csv.gz`` must be the market's symbol and timeframe.

    Names without such tokens are not judged (the candle spacing is checked either way)."""
    tokens = re.split(r"[_\-.\s]+", p.name)
    for tok in tokens:
        if _SYMBOL_TOKEN.match(tok) and tok != symbol:
            raise DataError(f"{p.name}: the file name says {tok} but the market is {symbol}")
        if tok in TIMEFRAME_MS and tok != timeframe:
            raise DataError(f"{p.name}: the file name says {tok} candles but the market's timeframe is {timeframe}")


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
    check_file_name(p, symbol, timeframe)
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
    keep = ~filler_mask(o, h, lo, c, v)  # exchange filler: dropped, so it reads as the gap it is
    if not keep.any():
        raise DataError(f"{p.name}: every candle is a zero-volume flat filler candle (no trades)")
    t, o, h, lo, c, v = t[keep], o[keep], h[keep], lo[keep], c[keep], v[keep]
    gaps = find_gaps(t, bar_ms, filler=int((~keep).sum()))
    return CandleData(symbol, timeframe, t.copy(), o.copy(), h.copy(), lo.copy(), c.copy(), v.copy(),
                      str(p), gaps)


async def replay_candles(markets: Sequence[tuple[CandleData, int]], speed: float) -> AsyncIterator[list[Candle]]:
    """The candles of one or more markets ((data, bar_ms) each), paced at ``speed`` times real
    time (0 = as fast as possible): each group of bars that close at the same time, in market
    order, delivered when it would have closed (a live feed's timing, replayed)."""
    start = time.monotonic()
    firsts = [int(d.time[0]) for d, _ in markets if len(d)]
    t0 = min(firsts) if firsts else 0
    closes = [np.asarray(d.time, dtype=np.int64) + ms for d, ms in markets]
    nexts = [0] * len(markets)
    group: list[Candle] = []
    group_close: int | None = None
    for m in merge_order(closes).tolist():
        i = nexts[m]
        nexts[m] += 1
        close = int(closes[m][i])
        if group and close != group_close:
            yield group
            group = []
        if not group:
            await _pace(speed, (close - t0) / 1000.0, start)
        group.append(markets[m][0].candle(i))
        group_close = close
    if group:
        yield group


async def _pace(speed: float, due_s: float, start: float) -> None:
    if speed <= 0:
        await asyncio.sleep(0)
        return
    delay = due_s / speed - (time.monotonic() - start)
    if delay > 0:
        await asyncio.sleep(delay)
