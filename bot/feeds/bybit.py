"""Live candle feed from Bybit: REST warm-up and backfill, closed bars from the public WebSocket.

Only bars marked ``confirm: true`` are delivered. Each bar is delivered exactly once and in
order: duplicates (by open time) are dropped; a bar that arrives after a gap triggers a REST
backfill of the gap first (so reordered pushes become a backfill plus a dropped duplicate).
After every (re)connect the bars missed while disconnected are fetched over REST. The
connection pings every ``ping_interval_s`` and reconnects with exponential backoff. Gaps the
exchange cannot fill are reported through ``on_event``; prices are never invented.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import structlog

from bot.domain import Candle, timeframe_ms
from bot.errors import ExchangeError, ExchangeFatalError, ExchangeRetryableError
from bot.feeds.bybit_rest import BybitRest

log = structlog.get_logger("bot.feeds.bybit")

MAINNET_WS = "wss://stream.bybit.com"
TESTNET_WS = "wss://stream-testnet.bybit.com"
INTERVALS = {"1m": "1", "3m": "3", "5m": "5", "15m": "15", "30m": "30", "1h": "60", "2h": "120",
             "4h": "240", "6h": "360", "12h": "720", "1d": "D"}

EventSink = Callable[[str, dict[str, Any]], None]


class _Reconnect(Exception):
    """Internal: leave the current connection and reconnect."""


class BybitFeed:
    def __init__(self, symbol: str, timeframe: str, category: str = "linear", *,
                 rest_url: str | None = None, ws_url: str | None = None, testnet: bool = True,
                 timeout_s: float = 10.0, ping_interval_s: float = 20.0, backoff_s: float = 0.5,
                 backoff_max_s: float = 30.0, on_event: EventSink | None = None) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        self.category = category
        self.tf_ms = timeframe_ms(timeframe)
        self.rest = BybitRest(symbol, timeframe, category, rest_url=rest_url, testnet=testnet,
                              timeout_s=timeout_s)
        # A local simulator serves REST and WebSocket on one port: derive ws:// from http:// then.
        derived = rest_url.replace("http", "ws", 1) if rest_url and not ws_url else None
        base = ws_url or derived or (TESTNET_WS if testnet else MAINNET_WS)
        self.ws_url = base if "/v5/" in base else f"{base.rstrip('/')}/v5/public/{category}"
        self.topic = f"kline.{INTERVALS[timeframe]}.{symbol}"
        self.ping_interval_s = ping_interval_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.on_event = on_event
        self.last_open: int | None = None
        #: perf_counter() when each bar's confirmed WebSocket push reached the process (latency bench);
        #: bars that came over REST have no entry.
        self.arrivals: dict[int, float] = {}
        self.stats = {"connects": 0, "duplicates": 0, "backfilled": 0, "gaps": 0, "stale": 0}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._last_bar_wall = time.monotonic()

    # -- REST helpers ------------------------------------------------------------------------------
    async def server_time(self) -> int:
        return await self.rest.server_time()

    async def warmup(self, n: int, before_ms: int) -> list[Candle]:
        """The last ``n`` closed bars with open time before ``before_ms``."""
        if n <= 0:
            return []
        return await self.rest.closed(before_ms - n * self.tf_ms, before_ms - self.tf_ms)

    async def history(self, start_ms: int, end_ms: int) -> list[Candle]:
        return await self.rest.closed(start_ms, end_ms)

    def _event(self, kind: str, payload: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(kind, payload)

    # -- the stream --------------------------------------------------------------------------------
    async def stream(self, after_ms: int) -> AsyncIterator[Candle]:
        """Closed candles with open time after ``after_ms``, in order, each exactly once."""
        self.last_open = after_ms
        self._session = aiohttp.ClientSession()
        backoff = self.backoff_s
        try:
            while not self._closed:
                try:
                    async for c in self._connection():
                        backoff = self.backoff_s
                        yield c
                except (aiohttp.ClientError, TimeoutError, ConnectionError, ExchangeRetryableError,
                        _Reconnect) as exc:
                    # ExchangeFatalError (unknown symbol, refused subscription) ends the stream.
                    if self._closed:
                        break
                    wait = backoff * (1 + 0.25 * random.random())
                    log.warning("feed_reconnect", error=f"{type(exc).__name__}: {str(exc)[:160]}",
                                wait_s=round(wait, 3))
                    self._event("feed_reconnect", {"error": f"{type(exc).__name__}: {str(exc)[:200]}",
                                                   "wait_s": round(wait, 3)})
                    await asyncio.sleep(wait)
                    backoff = min(backoff * 2, self.backoff_max_s)
        finally:
            await self._session.close()

    async def _connection(self) -> AsyncIterator[Candle]:
        assert self._session is not None
        async with self._session.ws_connect(self.ws_url, heartbeat=None, autoping=True,
                                            timeout=aiohttp.ClientWSTimeout(ws_close=2.0)) as ws:
            self._ws = ws
            self.stats["connects"] += 1
            await ws.send_str(json.dumps({"op": "subscribe", "args": [self.topic],
                                          "req_id": f"sub-{self.stats['connects']}"}))
            pinger = asyncio.create_task(self._pinger(ws))
            try:
                # Whatever closed while we were away (or before the first connect) comes over REST.
                now = await self.rest.server_time()
                for c in await self._fill(now - self.tf_ms, now, "reconnect"):
                    yield c
                idle = max(self.ping_interval_s * 2.5, 5.0)
                while True:
                    msg = await ws.receive(timeout=idle)
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                    aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                        raise _Reconnect(f"websocket closed ({msg.type.name})")
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    arrived = time.perf_counter()
                    data = json.loads(msg.data)
                    if data.get("op") == "subscribe" and data.get("success") is False:
                        raise ExchangeFatalError(f"subscribe {self.topic} refused: {data.get('ret_msg')}")
                    if data.get("topic") != self.topic:
                        continue
                    for k in data.get("data") or []:
                        if not k.get("confirm"):
                            continue
                        c = Candle(self.symbol, self.timeframe, int(k["start"]), float(k["open"]),
                                   float(k["high"]), float(k["low"]), float(k["close"]), float(k["volume"]))
                        for out in await self._accept(c, arrived):
                            yield out
            finally:
                pinger.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pinger
                self._ws = None

    async def _pinger(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        n = 0
        while not ws.closed:
            await asyncio.sleep(self.ping_interval_s)
            n += 1
            with contextlib.suppress(Exception):
                await ws.send_str(json.dumps({"op": "ping", "req_id": f"ping-{n}"}))

    async def _accept(self, c: Candle, arrived: float) -> list[Candle]:
        last = self.last_open
        if last is not None and c.open_time <= last:
            self.stats["duplicates"] += 1
            return []
        out: list[Candle] = []
        if last is not None and c.open_time > last + self.tf_ms:
            # A gap (dropped or reordered push): fetch the missing closed bars first.
            out.extend(await self._fill(c.open_time - self.tf_ms, c.open_time + self.tf_ms, "gap"))
        out.append(c)
        self._deliver(c)
        log.info("bar_closed", symbol=c.symbol, open_time=c.open_time, close=c.close)
        self.arrivals[c.open_time] = arrived
        if len(self.arrivals) > 4096:
            for k in list(self.arrivals)[:2048]:
                del self.arrivals[k]
        return out

    async def _fill(self, end_open: int, now_ms: int, why: str) -> list[Candle]:
        """REST: closed bars after ``last_open`` up to open time ``end_open``; reports holes."""
        last = self.last_open
        if last is None or end_open <= last:
            return []
        got = await self.rest.closed(last + self.tf_ms, end_open, now_ms)
        got = [c for c in got if c.open_time > last]
        for c in got:
            self._deliver(c)
        self.stats["backfilled"] += len(got)
        if why == "gap":
            self.stats["gaps"] += 1
        expected_last = end_open - (end_open - last) % self.tf_ms
        have_last = got[-1].open_time if got else last
        missing = (expected_last - have_last) // self.tf_ms if why == "gap" else 0
        if got or missing:
            log.info("feed_backfill", why=why, bars=len(got), missing=missing)
        if missing > 0:
            self._event("feed_gap", {"after": have_last, "missing_bars": int(missing)})
        return got

    def _deliver(self, c: Candle) -> None:
        self.last_open = c.open_time
        self._last_bar_wall = time.monotonic()

    # -- watchdog ------------------------------------------------------------------------------------
    async def check_stale(self) -> bool:
        """Stale when, by the exchange's clock, no bar closed in the last 2 timeframes: reconnect."""
        if self.last_open is None or self._closed:
            return False
        try:
            now = await self.rest.server_time()
        except ExchangeError as exc:
            log.warning("watchdog_time_failed", error=str(exc))
            return False
        behind = now - (self.last_open + self.tf_ms)
        if behind < 2 * self.tf_ms:
            return False
        self.stats["stale"] += 1
        log.warning("feed_stale", last_bar=self.last_open, server_time=now, behind_ms=behind)
        self._event("feed_stale", {"last_bar": self.last_open, "server_time": now, "behind_ms": behind})
        await self.reconnect()
        return True

    async def reconnect(self) -> None:
        ws = self._ws
        if ws is not None and not ws.closed:
            await ws.close()

    async def close(self) -> None:
        self._closed = True
        await self.reconnect()
        await self.rest.close()
