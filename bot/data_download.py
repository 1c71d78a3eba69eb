"""``bot data download``: OHLCV history from any ccxt exchange into the replay format.

Paginated (one page per request, rate-limited by ccxt and retried with backoff), resumable:
an existing file is read, and only candles after its last one are appended; the file is
rewritten atomically every few pages, so an interrupted download loses at most those pages.
Only closed candles are written. Output: gzip CSV ``timestamp,open,high,low,close,volume``, and
the venue's instrument rules beside it (``FILE.instrument.json``: tick size, qty step, minimum
qty and notional, largest leverage), which backtests and replays use where the config sets none.
With ``funding``, a perpetual's funding-rate history too (bot/funding_download.py).
"""

from __future__ import annotations

import asyncio
import gzip
import os
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from bot.config import Config
from bot.domain import timeframe_ms
from bot.errors import ConfigError, DataError, ExchangeError
from bot.feeds.bybit_rest import ccxt_symbol, make_exchange, retry
from bot.feeds.instrument_file import write_rules
from bot.feeds.replay import COLUMNS
from bot.funding_download import FundingResult, download_funding
from bot.timeutil import ms_to_iso

PAGES_PER_WRITE = 10
DEFAULT_HISTORY_DAYS = 365


@dataclass(frozen=True, slots=True)
class DownloadResult:
    path: Path
    added: int
    total: int
    first: int | None
    last: int | None
    rules: Path | None = None  # the instrument rules saved beside the candles
    funding: FundingResult | None = None  # the funding history saved beside them (``--funding``)


def market_rules(ex: Any, sym: str, category: str) -> dict[str, Any]:
    """The venue's instrument rules of ``sym`` from ccxt's market info (``precision`` and
    ``limits``), as decimal strings for ``FILE.instrument.json`` (bot/feeds/instrument_file.py)."""
    m = ex.market(sym)
    prec, lim = m.get("precision") or {}, m.get("limits") or {}

    def step(v: Any) -> str | None:
        if v is None:
            return None
        if ex.precisionMode == ccxt.TICK_SIZE:
            return _num(v)
        return format(Decimal(1).scaleb(-int(v)), "f")  # DECIMAL_PLACES: 2 -> 0.01

    def least(v: Any) -> str | None:
        return None if v is None else _num(v)

    return {"exchange": ex.id, "symbol": str(m.get("id") or sym), "category": category, "market": sym,
            "tick_size": step(prec.get("price")), "qty_step": step(prec.get("amount")),
            "min_qty": least((lim.get("amount") or {}).get("min")),
            "min_notional": least((lim.get("cost") or {}).get("min")),
            "max_leverage": least((lim.get("leverage") or {}).get("max")) if category == "linear" else None,
            "saved_at": ms_to_iso(int(time.time() * 1000)), "from": "ccxt market info"}


def _num(x: float) -> str:
    s = repr(float(x))
    return s[:-2] if s.endswith(".0") else s


def resolve_symbol(ex: Any, symbol: str, category: str) -> str:
    """An exchange id (BTCUSDT) or a unified symbol (BTC/USDT:USDT) -> the unified symbol."""
    if symbol in (ex.markets or {}):
        return symbol
    if ex.id == "bybit":
        return ccxt_symbol(ex, symbol, category)
    want_spot = category == "spot"
    for m in ex.markets_by_id.get(symbol, []) if ex.markets_by_id else []:
        if bool(m.get("spot")) == want_spot:
            return str(m["symbol"])
    raise ConfigError(f"symbol {symbol} ({category}) is not listed on {ex.id}")


def _read_existing(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    try:
        df = pd.read_csv(path, dtype=str)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot resume {path}: {exc}") from None
    if [c.strip().lower() for c in df.columns] != COLUMNS:
        raise DataError(f"cannot resume {path}: header is not {','.join(COLUMNS)}")
    return df.values.tolist()


def _write(path: Path, rows: list[list[str]]) -> None:
    tmp = path.with_name(path.name + ".part")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(tmp, "wt", newline="") as f:  # type: ignore[operator]
        f.write(",".join(COLUMNS) + "\n")
        for r in rows:
            f.write(",".join(r) + "\n")
    os.replace(tmp, path)


async def download(*, exchange_id: str, symbol: str, timeframe: str, since_ms: int, out: Path,
                   category: str = "linear", until_ms: int | None = None, rest_url: str | None = None,
                   testnet: bool = False, show_progress: bool = True, page: int = 1000,
                   connect_attempts: int = 6, timeout_s: float = 10.0, funding: bool = False) -> DownloadResult:
    """Download closed candles from ``since_ms`` (appending to ``out``); ``connect_attempts``
    bounds the first contact, so an offline machine fails fast. ``funding``: the funding-rate
    history of the same span too, beside the candles."""
    if funding and category != "linear":
        raise ConfigError("--funding is for perpetuals (--category linear): spot has no funding")
    tf = timeframe_ms(timeframe)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = _read_existing(out)
    last = int(rows[-1][0]) if rows else None
    start = max(since_ms - since_ms % tf, (last + tf) if last is not None else 0)
    ex = make_exchange(exchange_id, rest_url, testnet, category, timeout_s)
    added = 0
    try:
        if timeframe not in (ex.timeframes or {timeframe: timeframe}):
            raise ConfigError(f"{exchange_id} has no {timeframe} candles")
        await retry(ex.load_markets, what=f"{exchange_id} markets", attempts=connect_attempts)
        sym = resolve_symbol(ex, symbol, category)
        rules = market_rules(ex, sym, category)
        now = await retry(ex.fetch_time, what="server time") if ex.has.get("fetchTime") else None
        now = int(now) if now else int(time.time() * 1000)
        end = min(until_ms if until_ms is not None else now, now) - tf  # open time of the last closed bar
        total = max(0, (end - start) // tf + 1)
        cols = [TextColumn(f"{symbol} {timeframe}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        with Progress(*cols, disable=not show_progress, transient=False) as progress:
            task = progress.add_task("download", total=total)
            cur, pages = start, 0
            while cur <= end:
                params: dict[str, Any] = {}
                if exchange_id == "bybit":  # one bounded page: Bybit counts from start only without end
                    params["until"] = min(end, cur + (page - 1) * tf)
                batch = await retry(lambda c=cur, p=params: ex.fetch_ohlcv(sym, timeframe, since=c, limit=page,
                                                                           params=p),
                                    what=f"{exchange_id} {symbol} {timeframe} candles")
                fresh = [r for r in batch if cur <= int(r[0]) <= end and (last is None or int(r[0]) > last)]
                fresh.sort(key=lambda r: r[0])
                for r in fresh:
                    if last is not None and int(r[0]) <= last:
                        continue
                    rows.append([str(int(r[0]))] + [_num(x if x is not None else 0.0) for x in r[1:6]])
                    last = int(r[0])
                    added += 1
                progress.update(task, completed=min(total, (last - start) // tf + 1 if last else 0))
                pages += 1
                if pages % PAGES_PER_WRITE == 0 and added:
                    _write(out, rows)
                if fresh:
                    cur = last + tf  # type: ignore[operator]
                elif params.get("until") is not None:
                    cur = int(params["until"]) + tf  # an empty window (a gap): step over it
                else:
                    break
        if added or not out.exists():
            _write(out, rows)
        saved = write_rules(out, rules)  # refreshed on every download: the venue may change them
        paid = await download_funding(ex, sym, symbol, out, since_ms=since_ms, until_ms=min(end + tf, now),
                                      exchange_id=exchange_id) if funding else None
    finally:
        await ex.close()
    return DownloadResult(out, added, len(rows), int(rows[0][0]) if rows else None, last, saved, paid)


def cache_path(cfg: Config, exchange_id: str = "bybit") -> Path:
    base = Path(os.environ.get("BOT_CACHE_DIR", "~/.cache/bybit-ml-bot")).expanduser()
    m = cfg.market
    return base / f"{exchange_id}_{m.category}_{m.symbol}_{m.timeframe}.csv.gz"


def cached_market_file(cfg: Config, date_from: str | None = None) -> str:
    """``bot backtest``/``bot train`` without --data: bring the configured market's cache up to date.

    Offline (or the exchange unreachable) this is one clear line telling the user to pass --data.
    """
    from bot.timeutil import parse_date  # noqa: PLC0415

    path = cache_path(cfg)
    since = parse_date(date_from) if date_from else int(time.time() * 1000) - DEFAULT_HISTORY_DAYS * 86_400_000
    try:
        asyncio.run(download(exchange_id="bybit", symbol=cfg.market.symbol, timeframe=cfg.market.timeframe,
                             since_ms=since, out=path, category=cfg.market.category,
                             rest_url=cfg.exchange.rest_url, testnet=False, show_progress=True,
                             connect_attempts=1, timeout_s=5.0))
    except (ExchangeError, ccxt.BaseError, OSError) as exc:
        if path.exists():
            return str(path)  # stale cache beats no data; the backtest says which candles it used
        raise ConfigError(f"no --data given and {cfg.market.symbol} {cfg.market.timeframe} could not be "
                          f"downloaded ({type(exc).__name__}); pass --data FILE") from None
    return str(path)
