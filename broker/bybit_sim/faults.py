"""Fault injection: latency, HTTP 5xx, retCode 10006 rate limiting, WebSocket misbehaviour.

Every knob defaults to off. Randomness comes from one seeded generator so a test run is
repeatable up to the interleaving of its own requests.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from broker.bybit_sim.envelope import error, respond

if TYPE_CHECKING:
    from broker.bybit_sim.state import SimState


@dataclass
class FaultConfig:
    latency_ms: float = 0.0           # added to every REST answer and WebSocket push
    jitter_ms: float = 0.0            # uniform extra latency in [0, jitter_ms]
    http_error_rate: float = 0.0      # fraction of REST requests answered 502/503 (HTML body)
    rate_limit: int = 0               # requests per rolling second per client and path; 0 = off
    ws_drop_every: int = 0            # close every public WebSocket after this many confirmed bars
    ws_duplicate_rate: float = 0.0    # fraction of pushes sent twice
    ws_reorder_rate: float = 0.0      # fraction of pushes held back behind the next one
    ws_delay_ms: float = 0.0          # extra delay on every push
    ws_mute: bool = False             # connections stay up but no topic push is sent (stale feed)
    ws_ack_delay_ms: float = 0.0      # venue latency before a subscribe is acked (0: at once)
    seed: int = 0

    def any_ws(self) -> bool:
        return bool(self.ws_duplicate_rate or self.ws_reorder_rate or self.ws_delay_ms or self.latency_ms
                    or self.jitter_ms)


#: Shown in X-Bapi-Limit when no limit is configured (the per-IP budget, 600 / 5 s, per second).
DEFAULT_LIMIT = 120


class RateLimiter:
    """Rolling one-second window per (client, path), as Bybit counts per-UID endpoint limits."""

    def __init__(self) -> None:
        self._hits: dict[tuple[str, str], deque[float]] = {}

    def check(self, key: tuple[str, str], configured: int) -> tuple[bool, int, int]:
        """(allowed, requests left, reset time in wall ms); ``configured`` 0 = never refuse."""
        now = time.time()
        q = self._hits.setdefault(key, deque())
        while q and q[0] <= now - 1.0:
            q.popleft()
        limit = configured or DEFAULT_LIMIT
        if configured and len(q) >= configured:
            return False, 0, int((q[0] + 1.0) * 1000)
        q.append(now)
        return True, max(limit - len(q), 0), int(now * 1000)


def rest_middleware(state: SimState) -> Callable[..., Awaitable[web.StreamResponse]]:
    limiter = RateLimiter()

    @web.middleware
    async def faults(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        f = state.faults
        if request.path.startswith("/v5/public") or request.path.startswith("/v5/private"):
            return await handler(request)  # WebSocket upgrades: faults applied per message
        state.stats["rest_requests"] += 1
        delay = f.latency_ms + (state.rng.random() * f.jitter_ms if f.jitter_ms else 0.0)
        if delay > 0:
            await asyncio.sleep(delay / 1000.0)
        if f.http_error_rate and state.rng.random() < f.http_error_rate:
            status = 502 if state.rng.random() < 0.5 else 503
            state.stats["http_5xx"] += 1
            text = f"<html><body><h1>{status} {'Bad Gateway' if status == 502 else 'Service Unavailable'}"
            return web.Response(status=status, text=text + "</h1></body></html>", content_type="text/html")
        allowed, left, reset = limiter.check((request.remote or "?", request.path), f.rate_limit)
        limit = str(f.rate_limit or DEFAULT_LIMIT)
        if not allowed:
            state.stats["rate_limited"] += 1
            headers = {"X-Bapi-Limit": limit, "X-Bapi-Limit-Status": "0",
                       "X-Bapi-Limit-Reset-Timestamp": str(reset)}
            return respond(error(10006, "Too many visits!", state.now_ms()), headers=headers)
        resp = await handler(request)
        resp.headers["X-Bapi-Limit"] = limit
        resp.headers["X-Bapi-Limit-Status"] = str(left)
        resp.headers["X-Bapi-Limit-Reset-Timestamp"] = str(reset)
        return resp

    return faults
