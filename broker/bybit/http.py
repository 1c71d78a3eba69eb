"""Bybit v5 REST through pybit's ``HTTP`` client: blocking calls, run on a worker thread.

pybit's own retries are switched off (``max_retries=1``, no retry codes) so that this module
decides: reads are retried with exponential backoff on retryable errors; an order create is
sent exactly once per call and a lost answer surfaces as :class:`CreateOutcomeUnknown`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from pybit.unified_trading import HTTP

from bot.errors import ExchangeError, ExchangeFatalError, ExchangeRetryableError
from broker.bybit.errors import CLOCK_CODE, LEVERAGE_NOT_MODIFIED, NOT_MODIFIED, map_error

log = structlog.get_logger("broker.bybit.http")

MAINNET_REST = "https://api.bybit.com"
TESTNET_REST = "https://api-testnet.bybit.com"
#: Never a real retCode: an empty set would make pybit fall back to its own retry list.
_NO_RETRY = {-1}
_SERVER_TS = re.compile(r"server_timestamp\[(\d+)\]")
_REQ_TS = re.compile(r"req_timestamp\[(\d+)\]")

logging.getLogger("pybit").setLevel(logging.CRITICAL)  # pybit logs raw responses; ours are scrubbed


class BybitHttp:
    def __init__(self, api_key: str, api_secret: str, *, testnet: bool = True, rest_url: str | None = None,
                 recv_window: int = 5000, timeout_s: float = 10.0, category: str = "linear",
                 read_attempts: int = 6, backoff_s: float = 0.2, backoff_max_s: float = 5.0) -> None:
        self._secrets = (api_key, api_secret)
        self.category = category
        self.recv_window = recv_window
        self.client = HTTP(testnet=testnet, api_key=api_key, api_secret=api_secret, recv_window=recv_window,
                           timeout=timeout_s, max_retries=1, retry_codes=_NO_RETRY, logging_level=logging.CRITICAL)
        self.client.endpoint = (rest_url or (TESTNET_REST if testnet else MAINNET_REST)).rstrip("/")
        self.read_attempts = read_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bybit-http")
        self.stats = {"calls": 0, "retries": 0}

    @property
    def base_url(self) -> str:
        return str(self.client.endpoint)

    # -- plumbing ----------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., Any], create: bool = False, **params: Any) -> dict[str, Any]:
        self.stats["calls"] += 1
        try:
            res = fn(**params)
        except Exception as exc:  # noqa: BLE001 - every failure is mapped to the taxonomy
            raise map_error(exc, what, self._secrets, create=create) from None
        return res.get("result") or {}

    async def _run(self, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def read(self, what: str, method: str, **params: Any) -> dict[str, Any]:
        """A read, retried with exponential backoff (plus jitter) while the error is retryable."""
        fn = getattr(self.client, method)
        delay = self.backoff_s
        for attempt in range(1, self.read_attempts + 1):
            try:
                return await self._run(lambda: self._call(what, fn, **params))
            except ExchangeRetryableError as exc:
                if attempt == self.read_attempts:
                    raise
                self.stats["retries"] += 1
                log.warning("bybit_read_retry", what=what, attempt=attempt, error=str(exc))
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.backoff_max_s)
        raise AssertionError("unreachable")

    async def paged(self, what: str, method: str, limit: int, max_pages: int = 20, **params: Any
                    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = ""
        for _ in range(max_pages):
            res = await self.read(what, method, limit=limit, cursor=cursor or None, **params)
            out.extend(res.get("list") or [])
            cursor = res.get("nextPageCursor") or ""
            if not cursor:
                break
        return out

    # -- endpoints ---------------------------------------------------------------------------------
    # Every endpoint takes the category of the symbol it is about (one account trades spot and
    # linear symbols side by side); ``category=None`` is the client's default.
    async def instrument(self, symbol: str, category: str | None = None) -> dict[str, Any]:
        cat = category or self.category
        res = await self.read("instruments-info", "get_instruments_info", category=cat, symbol=symbol)
        items = res.get("list") or []
        if not items:
            raise ExchangeFatalError(f"Bybit has no {cat} instrument {symbol}")
        return dict(items[0])

    async def create(self, category: str | None = None, **body: Any) -> dict[str, Any]:
        """Sent once. Raises OrderRejected, CreateOutcomeUnknown or another ExchangeError."""
        fn, cat = self.client.place_order, category or self.category
        return await self._run(lambda: self._call("order create", fn, create=True, category=cat, **body))

    async def cancel(self, symbol: str, link_id: str, category: str | None = None) -> dict[str, Any]:
        fn, cat = self.client.cancel_order, category or self.category
        return await self._run(lambda: self._call("order cancel", fn, category=cat, symbol=symbol,
                                                  orderLinkId=link_id))

    async def amend(self, **body: Any) -> dict[str, Any]:
        """``POST /v5/order/amend`` (a spot stop's trigger or qty): sent once, never retried blindly."""
        fn = self.client.amend_order
        return await self._run(lambda: self._call("order amend", fn, **body))

    async def order(self, symbol: str, link_id: str, category: str | None = None, *,
                    by_order_id: bool = False) -> dict[str, Any] | None:
        """The order with this orderLinkId (``by_order_id``: this orderId: a position TP/SL's
        order has no orderLinkId), open or recently closed; None if the venue has none."""
        key = "orderId" if by_order_id else "orderLinkId"
        for method in ("get_open_orders", "get_order_history"):
            res = await self.read("order lookup", method, category=category or self.category, symbol=symbol,
                                  **{key: link_id})
            items = res.get("list") or []
            if items:
                return dict(items[0])
        return None

    async def open_orders(self, symbol: str, category: str | None = None) -> list[dict[str, Any]]:
        return await self.paged("open orders", "get_open_orders", 50, category=category or self.category,
                                symbol=symbol, openOnly=0)

    async def order_history(self, symbol: str, category: str | None = None) -> list[dict[str, Any]]:
        return await self.paged("order history", "get_order_history", 50, category=category or self.category,
                                symbol=symbol)

    async def executions(self, symbol: str, start_ms: int | None = None, link_id: str | None = None,
                         category: str | None = None, order_id: str | None = None) -> list[dict[str, Any]]:
        return await self.paged("executions", "get_executions", 100, category=category or self.category,
                                symbol=symbol, startTime=start_ms, orderLinkId=link_id, orderId=order_id)

    async def trading_stop(self, symbol: str, category: str, **body: Any) -> None:
        """Set the position's TP/SL/trailing stop (``/v5/position/trading-stop``). Setting levels
        is idempotent, so it is retried like a read; 34040 (nothing to change) is success."""
        try:
            await self.read("trading stop", "set_trading_stop", category=category, symbol=symbol, **body)
        except ExchangeError as exc:
            if exc.code != NOT_MODIFIED:
                raise

    async def set_leverage(self, symbol: str, category: str, leverage: str) -> bool:
        """Set the symbol's leverage, both sides (``/v5/position/set-leverage``, one-way mode).
        Idempotent, so retried like a read; True when it changed, False when it already was
        (Bybit's 110043, "leverage not modified": success)."""
        try:
            await self.read("set leverage", "set_leverage", category=category, symbol=symbol,
                            buyLeverage=leverage, sellLeverage=leverage)
        except ExchangeError as exc:
            if exc.code != LEVERAGE_NOT_MODIFIED:
                raise
            return False
        return True

    async def position(self, symbol: str, category: str | None = None) -> dict[str, Any] | None:
        cat = category or self.category
        if cat == "spot":
            return None
        res = await self.read("positions", "get_positions", category=cat, symbol=symbol)
        items = res.get("list") or []
        return dict(items[0]) if items else None

    async def wallet(self) -> dict[str, Any]:
        res = await self.read("wallet balance", "get_wallet_balance", accountType="UNIFIED")
        items = res.get("list") or []
        if not items:
            raise ExchangeFatalError("Bybit returned no UNIFIED wallet for these keys")
        return dict(items[0])

    async def check_keys(self) -> None:
        """A signed read: wrong keys, a skewed clock or a slow network fail here, with one clear line."""
        sent = time.time() * 1000
        try:
            await self.wallet()
        except ExchangeError as exc:
            if exc.code == CLOCK_CODE:
                explained = clock_or_latency(str(exc), sent, time.time() * 1000, self.recv_window)
                if explained:
                    raise ExchangeFatalError(explained, code=CLOCK_CODE) from None
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def clock_or_latency(message: str, sent_ms: float, received_ms: float, recv_window_ms: int) -> str | None:
    """What a 10002 (timestamp outside recv_window) means, from the refused request's round trip.

    Bybit stamped ``server_timestamp`` somewhere between sending (``req_timestamp``, the time
    the request was signed with, else ``sent_ms``) and receiving the answer, so the local clock
    is off by the server time minus the middle of the round trip, give or take half of it. An
    offset inside that margin cannot be told from zero: then the latency, not the clock, is what
    pushed the request past recv_window.
    """
    server = _SERVER_TS.search(message)
    if server is None:
        return None
    req = _REQ_TS.search(message)
    sent = float(req.group(1)) if req else sent_ms
    rtt = max(received_ms - sent, 0.0)
    offset = int(server.group(1)) - (sent + received_ms) / 2
    if abs(offset) > rtt / 2:
        side = "behind" if offset > 0 else "ahead of"
        return (f"the local clock is {abs(offset) / 1000:.1f} s {side} Bybit's server time (measured at the middle "
                f"of a {rtt / 1000:.1f} s round trip): sync it (NTP) or raise exchange.recv_window")
    return (f"Bybit refused the request's timestamp after a {rtt / 1000:.1f} s round trip (recv_window "
            f"{recv_window_ms / 1000:g} s): the network latency is the problem, not the local clock (within "
            f"{rtt / 2000:.1f} s of Bybit's): use a faster connection or raise exchange.recv_window")
