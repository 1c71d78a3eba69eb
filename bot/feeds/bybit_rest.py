"""Bybit market data over REST through ccxt (async): server time and closed candles.

Reads are retried with exponential backoff on network errors, 5xx and rate limits (10006);
the base URL can point anywhere (a local simulator: every ``urls['api']`` value replaced).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import ccxt.async_support as ccxt
import structlog

from bot.domain import Candle, timeframe_ms
from bot.errors import ConfigError, ExchangeFatalError, ExchangeRetryableError

log = structlog.get_logger("bot.feeds.bybit")

MAINNET_REST = "https://api.bybit.com"
TESTNET_REST = "https://api-testnet.bybit.com"
PAGE = 1000  # Bybit's largest kline page


def make_exchange(exchange_id: str = "bybit", rest_url: str | None = None, testnet: bool = False,
                  category: str | None = None, timeout_s: float = 10.0) -> Any:
    """A ccxt async exchange; ``rest_url`` replaces every API base URL (simulator, proxy)."""
    cls = getattr(ccxt, exchange_id, None)
    if cls is None or not isinstance(cls, type):
        raise ConfigError(f"unknown ccxt exchange id {exchange_id!r}")
    ex = cls({"enableRateLimit": True, "timeout": int(timeout_s * 1000)})
    if exchange_id == "bybit" and category:
        ex.options["fetchMarkets"] = {"types": [category]}
    if rest_url:
        api = ex.urls["api"]
        if isinstance(api, dict):
            for k in list(api):
                api[k] = rest_url.rstrip("/")
        else:
            ex.urls["api"] = rest_url.rstrip("/")
    elif testnet:
        ex.set_sandbox_mode(True)
    return ex


def ccxt_symbol(ex: Any, symbol: str, category: str) -> str:
    """ccxt's unified symbol for an exchange id (BTCUSDT linear -> BTC/USDT:USDT)."""
    for m in ex.markets_by_id.get(symbol, []) if ex.markets_by_id else []:
        if (category == "spot" and m.get("spot")) or (category != "spot" and m.get("linear")):
            return str(m["symbol"])
    if symbol in (ex.markets or {}):
        return symbol
    raise ExchangeFatalError(f"symbol {symbol} ({category}) is not listed on {ex.id}")


async def retry(call: Any, *, what: str, attempts: int = 6, base_s: float = 0.1, max_s: float = 10.0) -> Any:
    """Await ``call()`` with backoff on retryable ccxt errors; map the rest to BotErrors."""
    delay = base_s
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except (ccxt.NetworkError, ccxt.ExchangeNotAvailable) as exc:  # incl. RateLimitExceeded, timeouts
            if attempt == attempts:
                raise ExchangeRetryableError(f"{what} failed after {attempts} tries: "
                                             f"{type(exc).__name__}: {str(exc)[:200]}") from None
            wait = delay * (1 + random.random() * 0.25)
            log.warning("rest_retry", what=what, attempt=attempt, wait_s=round(wait, 3),
                        error=f"{type(exc).__name__}: {str(exc)[:120]}")
            await asyncio.sleep(wait)
            delay = min(delay * 2, max_s)
        except ccxt.BaseError as exc:
            raise ExchangeFatalError(f"{what} failed: {type(exc).__name__}: {str(exc)[:200]}") from None
    raise AssertionError("unreachable")


class BybitRest:
    """Server time and closed candles for the markets of one category, over one ccxt client
    (one HTTP session, the market list loaded once)."""

    def __init__(self, category: str, *, rest_url: str | None = None, testnet: bool = False,
                 timeout_s: float = 10.0, exchange_id: str = "bybit") -> None:
        self.category = category
        self.ex = make_exchange(exchange_id, rest_url, testnet, category, timeout_s)
        self._syms: dict[str, str] = {}
        self._loading = asyncio.Lock()

    async def market_symbol(self, symbol: str) -> str:
        if symbol not in self._syms:
            async with self._loading:  # concurrent catch-ups load the market list once
                if not self.ex.markets:
                    await retry(self.ex.load_markets, what="load markets")
            self._syms[symbol] = ccxt_symbol(self.ex, symbol, self.category)
        return self._syms[symbol]

    async def server_time(self) -> int:
        return int(await retry(self.ex.fetch_time, what="server time"))

    async def closed(self, symbol: str, timeframe: str, start_ms: int, end_ms: int,
                     now_ms: int | None = None) -> list[Candle]:
        """Closed candles of one market with open time in ``[start_ms, end_ms]``, ascending, unique."""
        sym = await self.market_symbol(symbol)
        tf_ms = timeframe_ms(timeframe)
        if now_ms is None:
            now_ms = await self.server_time()
        end_ms = min(end_ms, now_ms - tf_ms)
        out: list[Candle] = []
        cur = start_ms - start_ms % tf_ms if start_ms % tf_ms else start_ms
        while cur <= end_ms:
            # Chunks of at most one page, so "newest first within [start, end]" cannot cut the oldest.
            chunk_end = min(end_ms, cur + (PAGE - 1) * tf_ms)
            rows = await retry(lambda c=cur, e=chunk_end: self.ex.fetch_ohlcv(  # type: ignore[misc]
                sym, timeframe, since=c, limit=PAGE, params={"until": e}), what="kline backfill")
            for r in rows:
                t = int(r[0])
                if t < cur or t > chunk_end or (out and t <= out[-1].open_time):
                    continue
                out.append(Candle(symbol, timeframe, t, float(r[1]), float(r[2]), float(r[3]),
                                  float(r[4]), float(r[5] or 0.0)))
            cur = chunk_end + tf_ms
        return out

    async def close(self) -> None:
        await self.ex.close()
