"""Live candle feed from Bybit: REST warm-up and backfill, closed bars of several markets over
one public WebSocket connection (one category: /v5/public/linear or /v5/public/spot).

Only bars marked ``confirm: true`` are delivered. Each market's bars are delivered exactly once
and in order: duplicates (by open time) are dropped; a bar that arrives after a gap triggers a
REST backfill of the gap first (so reordered pushes become a backfill plus a dropped duplicate).
After every (re)connect the bars missed while disconnected are fetched over REST, per market.
Bars of different markets that close together leave in the order of the market list
(bot/feeds/align.py). One subscribe message carries every market's topic. The connection pings
every ``ping_interval_s`` and reconnects with exponential backoff. Gaps the exchange cannot fill
are reported through ``on_event``; prices are never invented.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import structlog

from bot.domain import Candle
from bot.errors import ExchangeError, ExchangeFatalError, ExchangeRetryableError
from bot.feeds.align import CloseAligner, MarketSpec, market_specs
from bot.feeds.bybit_rest import BybitRest

log = structlog.get_logger("bot.feeds.bybit")

MAINNET_WS = "wss://stream.bybit.com"
TESTNET_WS = "wss://stream-testnet.bybit.com"
#: WebSocket arrival stamps kept (the oldest half is dropped past this).
ARRIVALS_MAX = 4096

EventSink = Callable[[str, dict[str, Any]], None]


class _Reconnect(Exception):
    """Internal: leave the current connection and reconnect."""


class BybitFeed:
    """Closed bars of ``markets`` ((symbol, timeframe) pairs, in the run's order) of one category."""

    def __init__(self, markets: Sequence[tuple[str, str]], category: str = "linear", *,
                 rest_url: str | None = None, ws_url: str | None = None, testnet: bool = True,
                 timeout_s: float = 10.0, ping_interval_s: float = 20.0, backoff_s: float = 0.5,
                 backoff_max_s: float = 30.0, on_event: EventSink | None = None, align_s: float = 2.0) -> None:
        self.markets: list[MarketSpec] = market_specs(markets)
        self.symbols = [m.symbol for m in self.markets]
        self.category = category
        self.rest = BybitRest(category, rest_url=rest_url, testnet=testnet, timeout_s=timeout_s)
        # A local simulator serves REST and WebSocket on one port: derive ws:// from http:// then.
        derived = rest_url.replace("http", "ws", 1) if rest_url and not ws_url else None
        base = ws_url or derived or (TESTNET_WS if testnet else MAINNET_WS)
        self.ws_url = base if "/v5/" in base else f"{base.rstrip('/')}/v5/public/{category}"
        self.topics = [m.topic for m in self.markets]
        self.ping_interval_s = ping_interval_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.on_event = on_event
        self.align_s = align_s
        #: Per symbol: open time of the last bar taken (delivered, or held for the cross-market order).
        self.last_open: dict[str, int | None] = {m.symbol: None for m in self.markets}
        #: perf_counter() when each (symbol, open time) bar's confirmed WebSocket push reached the
        #: process (latency bench); bars that came over REST have no entry.
        self.arrivals: dict[tuple[str, int], float] = {}
        self.stats = {"connects": 0, "duplicates": 0, "backfilled": 0, "gaps": 0, "stale": 0}
        self._by_symbol = {m.symbol: m for m in self.markets}
        self._by_topic = {m.topic: m for m in self.markets}
        self._merge = CloseAligner(self.markets, self.last_open, align_s)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._closed = False

    # -- REST helpers ------------------------------------------------------------------------------
    def _market(self, symbol: str) -> MarketSpec:
        try:
            return self._by_symbol[symbol]
        except KeyError:
            raise ValueError(f"{symbol} is not a market of this feed ({', '.join(self.symbols)})") from None

    async def server_time(self) -> int:
        return await self.rest.server_time()

    async def warmup(self, symbol: str, n: int, before_ms: int) -> list[Candle]:
        """The last ``n`` closed bars of ``symbol`` with open time before ``before_ms``."""
        m = self._market(symbol)
        if n <= 0:
            return []
        return await self.rest.closed(symbol, m.timeframe, before_ms - n * m.tf_ms, before_ms - m.tf_ms)

    async def history(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Closed bars of ``symbol`` with open time in ``[start_ms, end_ms]``."""
        return await self.rest.closed(symbol, self._market(symbol).timeframe, start_ms, end_ms)

    def _event(self, kind: str, payload: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(kind, payload)

    # -- the stream --------------------------------------------------------------------------------
    async def stream(self, after: Mapping[str, int]) -> AsyncIterator[Candle]:
        """Closed candles of every market with open time after ``after[symbol]``: each market's in
        order and exactly once, bars that close together in list order."""
        async with contextlib.aclosing(self.groups(after)) as groups:
            async for group in groups:
                for c in group:
                    yield c

    async def groups(self, after: Mapping[str, int]) -> AsyncIterator[list[Candle]]:
        """:meth:`stream`'s candles as they leave the feed together: every bar released at once
        (a group of bars that close together, a catch-up), in order."""
        missing = [s for s in self.symbols if s not in after]
        if missing:
            raise ValueError(f"stream(after) lacks the last open time of {', '.join(missing)}")
        for s in self.symbols:
            self.last_open[s] = int(after[s])
        self._merge = CloseAligner(self.markets, self.last_open, self.align_s)
        session = aiohttp.ClientSession()
        backoff = self.backoff_s
        try:
            while not self._closed:
                try:
                    async with contextlib.aclosing(self._connection(session)) as batches:
                        async for batch in batches:
                            backoff = self.backoff_s
                            for c in batch:
                                self._deliver(c)
                            yield batch
                except (aiohttp.ClientError, TimeoutError, ConnectionError, ExchangeRetryableError,
                        _Reconnect) as exc:
                    # ExchangeFatalError (unknown symbol, refused subscription) ends the stream.
                    if self._closed:
                        break
                    wait = backoff * (1 + 0.25 * random.random())
                    error = f"{type(exc).__name__}: {str(exc)[:200]}"
                    log.warning("feed_reconnect", error=error[:180], wait_s=round(wait, 3))
                    self._event("feed_reconnect", {"symbol": ",".join(self.symbols), "error": error,
                                                   "wait_s": round(wait, 3)})
                    await asyncio.sleep(wait)
                    backoff = min(backoff * 2, self.backoff_max_s)
        finally:
            await session.close()

    async def _connection(self, session: aiohttp.ClientSession) -> AsyncIterator[list[Candle]]:
        async with session.ws_connect(self.ws_url, heartbeat=None, autoping=True,
                                      timeout=aiohttp.ClientWSTimeout(ws_close=2.0)) as ws:
            self._ws = ws
            self.stats["connects"] += 1
            await ws.send_str(json.dumps({"op": "subscribe", "args": self.topics,
                                          "req_id": f"sub-{self.stats['connects']}"}))
            pinger = asyncio.create_task(self._pinger(ws))
            try:
                # Whatever closed while we were away (or before the first connect) comes over REST.
                await self._catch_up(await self.rest.server_time())
                if ready := self._merge.ready():
                    yield ready
                idle = max(self.ping_interval_s * 2.5, 5.0)
                heard = time.monotonic()
                while True:
                    msg = await self._receive(ws, heard + idle)
                    if msg is None:  # the oldest held group's time is up
                        if ready := self._merge.ready():
                            yield ready
                        continue
                    heard = time.monotonic()
                    if ready := await self._on_message(msg):
                        yield ready
            finally:
                pinger.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pinger
                self._ws = None

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse, silent_at: float) -> aiohttp.WSMessage | None:
        """The next message; None when the merge's deadline comes first. A connection silent until
        ``silent_at`` (no pong, no push) raises TimeoutError: reconnect."""
        deadline = self._merge.deadline()
        until = silent_at if deadline is None else min(silent_at, deadline)
        try:
            # receive(timeout=0) would wait forever: always a positive timeout.
            return await ws.receive(timeout=max(until - time.monotonic(), 0.001))
        except TimeoutError:
            if deadline is not None and deadline < silent_at:
                return None
            raise

    async def _on_message(self, msg: aiohttp.WSMessage) -> list[Candle]:
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
            raise _Reconnect(f"websocket closed ({msg.type.name})")
        if msg.type != aiohttp.WSMsgType.TEXT:
            return []
        arrived = time.perf_counter()
        data = json.loads(msg.data)
        if data.get("op") == "subscribe" and data.get("success") is False:
            raise ExchangeFatalError(f"subscribe {','.join(self.topics)} refused: {data.get('ret_msg')}")
        m = self._by_topic.get(data.get("topic"))
        if m is None:
            return []
        for k in data.get("data") or []:
            if k.get("confirm"):
                c = Candle(m.symbol, m.timeframe, int(k["start"]), float(k["open"]), float(k["high"]),
                           float(k["low"]), float(k["close"]), float(k["volume"]))
                await self._accept(m, c, arrived)
        return self._merge.ready()

    async def _pinger(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        n = 0
        while not ws.closed:
            await asyncio.sleep(self.ping_interval_s)
            n += 1
            with contextlib.suppress(Exception):
                await ws.send_str(json.dumps({"op": "ping", "req_id": f"ping-{n}"}))

    async def _accept(self, m: MarketSpec, c: Candle, arrived: float) -> None:
        """A confirmed push: dropped when seen, else taken after the REST backfill of any gap."""
        last = self.last_open[m.symbol]
        if last is not None and c.open_time <= last:
            self.stats["duplicates"] += 1
            return
        if last is not None and c.open_time > last + m.tf_ms:
            # A gap (dropped or reordered push): fetch the missing closed bars first.
            await self._fill(m, c.open_time - m.tf_ms, c.open_time + m.tf_ms, "gap")
        self._take(m, c)
        log.info("bar_closed", symbol=c.symbol, open_time=c.open_time, close=c.close)
        self.arrivals[(m.symbol, c.open_time)] = arrived
        if len(self.arrivals) > ARRIVALS_MAX:
            for k in list(self.arrivals)[:ARRIVALS_MAX // 2]:
                del self.arrivals[k]

    async def _catch_up(self, now_ms: int) -> None:
        """REST: every market's bars closed since its last one; all are fetched before any leaves,
        so the merge sorts the batches by (close time, list index)."""
        done = await asyncio.gather(*(self._fill(m, now_ms - m.tf_ms, now_ms, "reconnect") for m in self.markets),
                                    return_exceptions=True)
        for res in done:
            if isinstance(res, BaseException):
                raise res

    async def _fill(self, m: MarketSpec, end_open: int, now_ms: int, why: str) -> None:
        """REST: closed bars of ``m`` after its last one up to open time ``end_open``; reports holes."""
        last = self.last_open[m.symbol]
        if last is None or end_open <= last:
            return
        got = await self.rest.closed(m.symbol, m.timeframe, last + m.tf_ms, end_open, now_ms)
        got = [c for c in got if c.open_time > last]
        for c in got:
            self._take(m, c)
        self.stats["backfilled"] += len(got)
        if why == "gap":
            self.stats["gaps"] += 1
        expected_last = end_open - (end_open - last) % m.tf_ms
        have_last = got[-1].open_time if got else last
        missing = (expected_last - have_last) // m.tf_ms if why == "gap" else 0
        if got or missing:
            log.info("feed_backfill", symbol=m.symbol, why=why, bars=len(got), missing=missing)
        if missing > 0:
            self._event("feed_gap", {"symbol": m.symbol, "after": have_last, "missing_bars": int(missing)})

    def _take(self, m: MarketSpec, c: Candle) -> None:
        self.last_open[m.symbol] = c.open_time
        self._merge.add(m, c)

    def _deliver(self, c: Candle) -> None:
        """Called for each bar as it leaves the feed (a hook for tests)."""

    # -- watchdog ------------------------------------------------------------------------------------
    async def check_stale(self) -> bool:
        """Stale when, by the exchange's clock, a market's last bar closed 2 timeframes ago or more:
        one ``feed_stale`` event per such market, then reconnect."""
        if self._closed or all(v is None for v in self.last_open.values()):
            return False
        try:
            now = await self.rest.server_time()
        except ExchangeError as exc:
            log.warning("watchdog_time_failed", error=str(exc))
            return False
        stale = False
        for m in self.markets:
            last = self.last_open[m.symbol]
            behind = now - (last + m.tf_ms) if last is not None else 0
            if behind < 2 * m.tf_ms:
                continue
            stale = True
            log.warning("feed_stale", symbol=m.symbol, last_bar=last, server_time=now, behind_ms=behind)
            self._event("feed_stale", {"symbol": m.symbol, "last_bar": last, "server_time": now,
                                       "behind_ms": behind})
        if stale:
            self.stats["stale"] += 1
            await self.reconnect()
        return stale

    async def reconnect(self) -> None:
        ws = self._ws
        if ws is not None and not ws.closed:
            await ws.close()

    async def close(self) -> None:
        self._closed = True
        await self.reconnect()
        await self.rest.close()
