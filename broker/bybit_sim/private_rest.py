"""Private (signed) REST endpoints of the simulator: orders, executions, positions, wallet.

Every request is verified by :mod:`broker.bybit_sim.auth`; per-key limits use a rolling one
second window per endpoint (Bybit's per-UID rule) and answer with the real ``X-Bapi-Limit*``
headers, or retCode 10006 past the limit. Fault knobs (:class:`PrivateFaults`): a create that
is accepted but answered only after the client gave up, a create whose acknowledgement is lost
(accepted, then HTTP 502), 10006 storms, and order lookups that reach the venue outside their
``recv_window`` (retCode 10002, as a lookup held up in the congestion that lost an ack).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from broker.bybit_sim.account import Account, SimReject
from broker.bybit_sim.auth import AuthError, verify_rest
from broker.bybit_sim.clock import SimClock
from broker.bybit_sim.envelope import error, ok, respond
from broker.bybit_sim.state import SimState

#: Per-UID limits per second (rate_limits.json): order entry 10 (spot 20), reads 50.
LIMITS = {"/v5/order/create": 10, "/v5/order/cancel": 10, "/v5/position/trading-stop": 10,
          "/v5/position/set-leverage": 10}
#: Where a client looks an order up by orderLinkId.
LOOKUP_PATHS = ("/v5/order/realtime", "/v5/order/history")
READ_LIMIT = 50
BAPI_HEADERS: web.RequestKey[dict[str, str]] = web.RequestKey("bapi_headers", dict)


@dataclass
class PrivateFaults:
    create_timeout_rate: float = 0.0   # accepted creates answered only after this delay (client times out)
    create_timeout_s: float = 3.0
    lost_ack_rate: float = 0.0         # accepted creates answered HTTP 502 (acknowledgement lost)
    storm_rate: float = 0.0            # fraction of private requests refused with 10006
    drop_stream_every: int = 0         # drop the private streams just before every Nth execution push
    rate_limit: int = 0                # per-key limit override for every private endpoint (0 = Bybit's)
    create_timeout_every: int = 0      # deterministic variants: every Nth accepted create times out...
    lost_ack_every: int = 0            # ... or loses its acknowledgement
    clock_offset_ms: int = 0           # the venue's clock runs this far ahead of the client's (auth checks)
    late_lookups: int = 0              # the next N order lookups arrive outside their recv_window (10002)
    lookup_misses: int = 0             # the next N lookups of an order by id answer an empty list (as
                                       # Bybit's may just after a create: the order is there all the same)
    mute_pushes: bool = False          # the private stream stays up but its pushes are lost


class KeyLimiter:
    def __init__(self) -> None:
        self._hits: dict[tuple[str, str], deque[float]] = {}

    def check(self, key: str, path: str, limit: int) -> tuple[bool, int, int]:
        now = time.time()
        q = self._hits.setdefault((key, path), deque())
        while q and q[0] <= now - 1.0:
            q.popleft()
        if len(q) >= limit:
            return False, 0, int((q[0] + 1.0) * 1000)
        q.append(now)
        return True, limit - len(q), int(now * 1000)


Handler = Callable[[dict[str, Any]], Awaitable[web.Response] | web.Response]


class PrivateRest:
    def __init__(self, state: SimState, account: Account, keys: dict[str, str], faults: PrivateFaults) -> None:
        self.state, self.account, self.keys, self.faults = state, account, keys, faults
        self.limiter = KeyLimiter()

    def register(self, app: web.Application) -> None:
        routes: list[tuple[str, str, Handler]] = [
            ("POST", "/v5/order/create", self.create), ("POST", "/v5/order/cancel", self.cancel),
            ("POST", "/v5/order/amend", self.amend),
            ("GET", "/v5/order/realtime", self.realtime), ("GET", "/v5/order/history", self.history),
            ("GET", "/v5/execution/list", self.executions), ("GET", "/v5/position/list", self.positions),
            ("GET", "/v5/account/wallet-balance", self.wallet),
            ("POST", "/v5/position/trading-stop", self.trading_stop),
            ("POST", "/v5/position/set-leverage", self.set_leverage),
        ]
        for method, path, fn in routes:
            app.router.add_route(method, path, self._signed(path, fn))
        app.middlewares.insert(0, self._headers_middleware())

    # -- plumbing ----------------------------------------------------------------------------------
    def _now(self) -> int:
        return self.state.now_ms()

    def _err(self, code: int, msg: str) -> web.Response:
        return respond(error(code, msg, self._now()))

    def _headers_middleware(self) -> Any:
        @web.middleware
        async def mw(request: web.Request, handler: Any) -> web.StreamResponse:
            # Outermost: the per-key headers set by the signed handler win over the per-IP ones.
            resp = await handler(request)
            mine = request.get(BAPI_HEADERS)
            if mine:
                for k, v in mine.items():
                    resp.headers[k] = v
            return resp

        return mw

    def _signed(self, path: str, fn: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            if request.method == "GET":
                payload = request.query_string
                params: dict[str, Any] = dict(request.query)
            else:
                payload = await request.text()
                try:
                    params = json.loads(payload) if payload else {}
                except ValueError:
                    return self._err(10001, "params error: body is not JSON")
                if not isinstance(params, dict):
                    return self._err(10001, "params error: body is not a JSON object")
            try:
                key = verify_rest(self.keys, request.headers, payload,
                                  now_ms=SimClock.wall_ms() + self.faults.clock_offset_ms)
            except AuthError as exc:
                self.state.stats[f"auth_{exc.code}"] += 1
                return self._err(exc.code, exc.msg)
            f = self.faults
            limit = f.rate_limit or LIMITS.get(path, READ_LIMIT)
            allowed, left, reset = self.limiter.check(key, path, limit)
            storm = f.storm_rate and self.state.rng.random() < f.storm_rate
            if not allowed or storm:
                self.state.stats["private_10006"] += 1
                if not storm:
                    request[BAPI_HEADERS] = {"X-Bapi-Limit": str(limit), "X-Bapi-Limit-Status": "0",
                                               "X-Bapi-Limit-Reset-Timestamp": str(reset)}
                return self._err(10006, "Too many visits!")
            request[BAPI_HEADERS] = {"X-Bapi-Limit": str(limit), "X-Bapi-Limit-Status": str(left),
                                       "X-Bapi-Limit-Reset-Timestamp": str(reset)}
            if path in LOOKUP_PATHS and f.late_lookups > 0:
                f.late_lookups -= 1
                self.state.stats["late_lookups"] += 1
                return self._late(request)
            if path in LOOKUP_PATHS and f.lookup_misses > 0 and (params.get("orderLinkId") or params.get("orderId")):
                f.lookup_misses -= 1
                self.state.stats["lookup_misses"] += 1
                return self._ok({"list": [], "nextPageCursor": "", "category": params.get("category", "")})
            self.state.stats["private_requests"] += 1
            res = fn(params)
            return await res if asyncio.iscoroutine(res) else res  # type: ignore[return-value]

        return handler

    def _late(self, request: web.Request) -> web.Response:
        """Bybit's answer to a request that reached it after its ``recv_window`` had passed."""
        ts, rw = int(request.headers["X-BAPI-TIMESTAMP"]), int(request.headers.get("X-BAPI-RECV-WINDOW") or 5000)
        return self._err(10002, "invalid request, please check your server timestamp or recv_window param. "
                                f"req_timestamp[{ts}],server_timestamp[{ts + rw + 1}],recv_window[{rw}]")

    def _ok(self, result: dict[str, Any]) -> web.Response:
        return respond(ok(result, self._now()))

    # -- endpoints ---------------------------------------------------------------------------------
    async def create(self, p: dict[str, Any]) -> web.Response:
        try:
            o = self.account.create(p)
        except SimReject as exc:
            self.state.stats[f"reject_{exc.code}"] += 1
            return self._err(exc.code, exc.msg)
        f, rng = self.faults, self.state.rng
        n = self.state.stats["orders_created"]
        timeout = (f.create_timeout_every and n % f.create_timeout_every == 0) or \
            (f.create_timeout_rate and rng.random() < f.create_timeout_rate)
        lost = (f.lost_ack_every and n % f.lost_ack_every == 0) or (f.lost_ack_rate and rng.random() < f.lost_ack_rate)
        if timeout:
            self.state.stats["create_timeouts"] += 1
            await asyncio.sleep(f.create_timeout_s)
        elif lost:
            self.state.stats["lost_acks"] += 1
            return web.Response(status=502, text="<html><body><h1>502 Bad Gateway</h1></body></html>",
                                content_type="text/html")
        return self._ok({"orderId": o.order_id, "orderLinkId": o.link_id})

    def cancel(self, p: dict[str, Any]) -> web.Response:
        try:
            o = self.account.cancel(p)
        except SimReject as exc:
            return self._err(exc.code, exc.msg)
        return self._ok({"orderId": o.order_id, "orderLinkId": o.link_id})

    def amend(self, p: dict[str, Any]) -> web.Response:
        try:
            o = self.account.spot_stops.amend(p)
        except SimReject as exc:
            return self._err(exc.code, exc.msg)
        return self._ok({"orderId": o.order_id, "orderLinkId": o.link_id})

    def _select(self, p: dict[str, Any], open_only: bool) -> list[Any]:
        acct = self.account
        oid, link, sym, cat = p.get("orderId"), p.get("orderLinkId"), p.get("symbol"), p.get("category")
        if oid or link:
            # Bybit's priority: orderId > orderLinkId > symbol (the symbol is not a filter then);
            # the category still is: each category is its own order book.
            o = acct.orders.get(str(oid)) if oid else acct.by_link.get(str(link))
            return [o] if o is not None and (not cat or o.category == cat) else []
        out = [o for o in acct.orders.values() if (not open_only or o.is_open) and (not sym or o.symbol == sym)
               and (not cat or o.category == cat)]
        return sorted(out, key=lambda o: o.created, reverse=True)

    @staticmethod
    def _page(items: list[Any], p: dict[str, Any], cap: int) -> tuple[list[Any], str]:
        try:
            limit = min(max(int(p.get("limit", 20)), 1), cap)
            start = int(p.get("cursor") or 0)
        except ValueError:
            return [], ""
        chunk = items[start:start + limit]
        nxt = str(start + limit) if start + limit < len(items) else ""
        return chunk, nxt

    def realtime(self, p: dict[str, Any]) -> web.Response:
        if p.get("category") not in ("linear", "spot"):
            return self._err(10001, "params error: category invalid")
        items = self._select(p, open_only=str(p.get("openOnly", "0")) == "0")
        page, nxt = self._page(items, p, 50)
        return self._ok({"list": [o.wire() for o in page], "nextPageCursor": nxt, "category": p["category"]})

    def history(self, p: dict[str, Any]) -> web.Response:
        if p.get("category") not in ("linear", "spot"):
            return self._err(10001, "params error: category invalid")
        items = self._select(p, open_only=False)
        page, nxt = self._page(items, p, 50)
        return self._ok({"list": [o.wire() for o in page], "nextPageCursor": nxt, "category": p["category"]})

    def executions(self, p: dict[str, Any]) -> web.Response:
        cat = p.get("category")
        if cat not in ("linear", "spot"):
            return self._err(10001, "params error: category invalid")
        try:
            start = int(p["startTime"]) if "startTime" in p else None
            end = int(p["endTime"]) if "endTime" in p else None
        except ValueError:
            return self._err(10001, "params error: startTime/endTime")
        sym, oid, link = p.get("symbol"), p.get("orderId"), p.get("orderLinkId")
        items = [e for e in reversed(self.account.execs) if e.order.category == cat
                 and (not sym or e.order.symbol == sym) and (not oid or e.order.order_id == oid)
                 and (not link or e.order.link_id == link) and (start is None or e.time >= start)
                 and (end is None or e.time <= end)]
        page, nxt = self._page(items, p, 100)
        return self._ok({"list": [e.wire() for e in page], "nextPageCursor": nxt, "category": cat})

    def positions(self, p: dict[str, Any]) -> web.Response:
        cat = p.get("category")
        if cat != "linear":
            return self._err(10001, "params error: category invalid" if cat != "spot" else
                             "params error: position list is not available for spot")
        # Bybit: linear needs symbol or settleCoin; a symbol answers even when flat, settleCoin
        # lists the open positions (size > 0) of every symbol settled in that coin.
        sym, settle = p.get("symbol"), p.get("settleCoin")
        if sym:
            ms = [self.state.market(sym)]
            if ms[0] is None:
                return self._err(10001, "params error: symbol invalid")
        elif settle:
            books = self.account.books
            ms = [m for k, b in books.items() if b.size and (m := self.state.market(k)) is not None
                  and m.quote_coin == settle]
        else:
            return self._err(10001, "params error: symbol or settleCoin is required")
        return self._ok({"list": [self.account.position_wire(m, cat) for m in ms if m is not None],
                         "nextPageCursor": "", "category": cat})

    def trading_stop(self, p: dict[str, Any]) -> web.Response:
        """Position TP/SL (broker/bybit_sim/tpsl.py); Bybit answers an empty result."""
        try:
            self.account.tpsl.set(p)
        except SimReject as exc:
            self.state.stats[f"reject_{exc.code}"] += 1
            return self._err(exc.code, exc.msg)
        self.state.stats["trading_stops"] += 1
        return self._ok({})

    def set_leverage(self, p: dict[str, Any]) -> web.Response:
        """A linear symbol's leverage (broker/bybit_sim/leverage.py); Bybit answers an empty result."""
        try:
            self.account.leverage.set(p)
        except SimReject as exc:
            self.state.stats[f"reject_{exc.code}"] += 1
            return self._err(exc.code, exc.msg)
        return self._ok({})

    def wallet(self, p: dict[str, Any]) -> web.Response:
        if p.get("accountType") != "UNIFIED":
            return self._err(10001, "accountType only support UNIFIED")
        return self._ok({"list": [self.account.wallet_wire()]})
