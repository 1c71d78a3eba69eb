"""``bot data download --funding``: a perpetual's funding-rate history through ccxt, in the shared
funding format (bot/funding.py: ``timestamp,funding_rate``), beside the candles.

ccxt's ``fetch_funding_rate_history`` asks Bybit's ``GET /v5/market/funding/history``, which
answers at most 200 settlements, the newest first, up to ``endTime``: pages walk back from the
end by ``endTime`` (the oldest time of a page, less 1 ms) until the start. Resumable: settlements
after the file's last one are added; the file is replaced atomically once the pages are in.
The rates are written as the venue's decimal strings.
"""

from __future__ import annotations

import gzip
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bot.errors import ConfigError, DataError
from bot.feeds.bybit_rest import retry
from bot.funding import HEADER

PAGE = 200  # Bybit's largest page


@dataclass(frozen=True, slots=True)
class FundingResult:
    path: Path
    added: int
    total: int


def funding_path(candles: Path, symbol: str, exchange_id: str, interval_h: int) -> Path:
    """``bybit_BTCUSDT_1h.csv.gz`` -> ``bybit_BTCUSDT_funding_8h.csv.gz`` beside it (the name
    ``market.funding: auto`` looks for); a candle file not named ``<prefix>_<SYMBOL>_...`` gets
    the exchange id as prefix."""
    marker = f"_{symbol}_"
    prefix = candles.name.split(marker)[0] if marker in candles.name else exchange_id
    return candles.with_name(f"{prefix}_{symbol}_funding_{interval_h}h.csv.gz")


def _existing(path: Path) -> list[tuple[int, str]]:
    if not path.exists():
        return []
    try:
        df = pd.read_csv(path, dtype=str)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot resume {path}: {exc}") from None
    if tuple(df.columns) != HEADER:
        raise DataError(f"cannot resume {path}: header is not {','.join(HEADER)}")
    return [(int(t), r) for t, r in zip(df.timestamp, df.funding_rate, strict=True)]


def _write(path: Path, rows: list[tuple[int, str]]) -> None:
    tmp = path.with_name(path.name + ".part")
    with gzip.open(tmp, "wt", newline="") as f:
        f.write(",".join(HEADER) + "\n")
        for t, r in rows:
            f.write(f"{t},{r}\n")
    os.replace(tmp, path)


async def download_funding(ex: Any, sym: str, symbol: str, candles: Path, *, since_ms: int,
                           until_ms: int | None, exchange_id: str) -> FundingResult:
    """Fetch ``sym``'s settlements in [since, until] (until: now) into the file beside ``candles``;
    ``ex`` is a ccxt exchange with its markets loaded."""
    market = ex.market(sym)
    if not (market.get("swap") or market.get("future")):
        raise ConfigError(f"{symbol} is not a perpetual on {exchange_id}: it has no funding (use --category linear)")
    if not ex.has.get("fetchFundingRateHistory"):
        raise ConfigError(f"{exchange_id} has no funding-rate history in ccxt")
    minutes = int((market.get("info") or {}).get("fundingInterval") or 480)
    out = funding_path(candles, symbol, exchange_id, max(1, minutes // 60))
    rows = _existing(out)
    start = max(since_ms, rows[-1][0] + 1 if rows else since_ms)
    end = until_ms if until_ms is not None else int(time.time() * 1000)
    fresh: dict[int, str] = {}
    while end >= start:
        page = await retry(lambda e=end: ex.fetch_funding_rate_history(sym, since=start, limit=PAGE,
                                                                       params={"until": e}),
                           what=f"{exchange_id} {symbol} funding history")
        times = [int(p["timestamp"]) for p in page if start <= int(p["timestamp"]) <= end]
        for p in page:
            t = int(p["timestamp"])
            if start <= t <= end:
                fresh[t] = str((p.get("info") or {}).get("fundingRate") or repr(float(p["fundingRate"])))
        if len(page) < PAGE or not times:
            break
        end = min(times) - 1
    merged = rows + sorted(fresh.items())
    if fresh or not out.exists():
        _write(out, merged)
    return FundingResult(out, len(fresh), len(merged))
