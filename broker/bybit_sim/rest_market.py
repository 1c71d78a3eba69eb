"""Public market REST endpoints: time, kline, instruments-info, tickers, funding history (Bybit v5
formats)."""

from __future__ import annotations

from typing import Any

import numpy as np
from aiohttp import web

from broker.bybit_sim.envelope import error, num, ok, respond
from broker.bybit_sim.leverage import max_leverage
from broker.bybit_sim.market import INTERVAL_MS, Market
from broker.bybit_sim.state import SimState

CATEGORIES = ("spot", "linear", "inverse", "option")
DAY_MS = 86_400_000


def register(app: web.Application, state: SimState) -> None:
    h = _Handlers(state)
    app.router.add_get("/v5/market/time", h.time)
    app.router.add_get("/v5/market/kline", h.kline)
    app.router.add_get("/v5/market/instruments-info", h.instruments)
    app.router.add_get("/v5/market/tickers", h.tickers)
    app.router.add_get("/v5/market/funding/history", h.funding_history)


class _Handlers:
    def __init__(self, state: SimState) -> None:
        self.state = state

    def _err(self, code: int, msg: str) -> web.Response:
        return respond(error(code, msg, self.state.now_ms()))

    async def time(self, request: web.Request) -> web.Response:
        self.state.stats["time_requests"] += 1
        now = self.state.now_ms()
        nano = now * 1_000_000
        return respond(ok({"timeSecond": str(now // 1000), "timeNano": str(nano)}, now))

    async def kline(self, request: web.Request) -> web.Response:
        q = request.query
        category = q.get("category", "linear")
        if category not in ("spot", "linear", "inverse"):
            return self._err(10001, "Illegal category")
        m = self.state.market(q.get("symbol"))
        if m is None or category == "inverse":
            return self._err(10001, "Not supported symbols")
        interval = q.get("interval", "")
        iv_ms = INTERVAL_MS.get(interval)
        if iv_ms is None or iv_ms < m.tf_ms or iv_ms % m.tf_ms:
            return self._err(10001, "Invalid period!" if iv_ms is None else
                             f"params error: interval {interval} not served by this simulator")
        try:
            start = int(q["start"]) if "start" in q else None
            end = int(q["end"]) if "end" in q else None
            limit = int(q.get("limit", 200))
        except ValueError:
            return self._err(10001, "params error: start, end and limit must be integers")
        limit = min(max(limit, 1), 1000)
        now = self.state.now_ms()
        spot = category == "spot"
        bars = m.klines(iv_ms, start, end, limit, now)
        rows = [m.row(b, spot) for b in bars]
        return respond(ok({"symbol": m.symbol, "category": category, "list": rows}, now))

    async def instruments(self, request: web.Request) -> web.Response:
        q = request.query
        category = q.get("category")
        if category not in CATEGORIES:
            return self._err(10001, "Illegal category")
        markets = list(self.state.markets.values())
        if q.get("symbol"):
            markets = [m for m in markets if m.symbol == q["symbol"].upper()]
        if q.get("baseCoin"):
            markets = [m for m in markets if m.base == q["baseCoin"].upper()]
        if category == "linear":
            items = [_linear_instrument(m) for m in markets]
        elif category == "spot":
            items = [_spot_instrument(m) for m in markets]
        else:
            items = []
        result: dict[str, Any] = {"category": category, "list": items, "nextPageCursor": ""}
        return respond(ok(result, self.state.now_ms()))

    async def funding_history(self, request: web.Request) -> web.Response:
        """Settlements up to ``endTime`` (default now; never past the sim clock), newest first, at
        most ``limit`` (1..200, default 200) from ``startTime`` on; ``startTime`` alone is an
        error, as on Bybit."""
        self.state.stats["funding_requests"] += 1
        q = request.query
        category = q.get("category")
        if category not in ("linear", "inverse"):
            return self._err(10001, "params error: category only support linear or inverse")
        m = self.state.market(q.get("symbol"))
        if m is None or category == "inverse":
            return self._err(10001, "params error: symbol invalid")
        try:
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
            limit = int(q.get("limit", 200))
        except ValueError:
            return self._err(10001, "params error: startTime, endTime and limit must be integers")
        if start is not None and end is None:
            return self._err(10001, "params error: endTime is required when startTime is given")
        if not 1 <= limit <= 200:
            return self._err(10001, "params error: limit must be in [1, 200]")
        now = self.state.now_ms()
        end = now if end is None else min(end, now)
        rows: list[dict[str, Any]] = []
        f = m.funding
        if f is not None:
            hi = int(np.searchsorted(f.times, end, side="right"))
            lo = int(np.searchsorted(f.times, start, side="left")) if start is not None else 0
            for i in range(hi - 1, max(lo, hi - limit) - 1, -1):
                rows.append({"symbol": m.symbol, "fundingRate": num(float(f.rates[i])),
                             "fundingRateTimestamp": str(int(f.times[i]))})
        return respond(ok({"category": category, "list": rows}, now))

    async def tickers(self, request: web.Request) -> web.Response:
        q = request.query
        category = q.get("category")
        if category not in CATEGORIES:
            return self._err(10001, "Illegal category")
        now = self.state.now_ms()
        markets = list(self.state.markets.values())
        if q.get("symbol"):
            markets = [m for m in markets if m.symbol == q["symbol"].upper()]
            if not markets:
                return self._err(10001, "Not supported symbols")
        if category in ("inverse", "option"):
            items: list[dict[str, Any]] = []
        else:
            items = [_ticker(m, now, category == "spot") for m in markets if m.closed_count(now) > 0]
        return respond(ok({"category": category, "list": items}, now))


def _linear_instrument(m: Market) -> dict[str, Any]:
    r = m.rules
    launch = int(m.t[0]) if len(m) else 0
    return {
        "symbol": m.symbol, "contractType": "LinearPerpetual", "status": "Trading",
        "baseCoin": m.base, "quoteCoin": m.quote_coin, "launchTime": str(launch), "deliveryTime": "0",
        "deliveryFeeRate": "", "priceScale": str(m.price_dp + 1 if m.rules["tick"].endswith("0") else m.price_dp),
        "leverageFilter": {"minLeverage": "1", "maxLeverage": f"{max_leverage(m):.2f}", "leverageStep": "0.01"},
        "priceFilter": {"minPrice": r["tick"], "maxPrice": "1999999.80", "tickSize": r["tick"]},
        "lotSizeFilter": {"maxOrderQty": r["max_qty"], "minOrderQty": r["min_qty"], "qtyStep": r["qty_step"],
                          "postOnlyMaxOrderQty": r["max_qty"], "maxMktOrderQty": r["max_qty"],
                          "minNotionalValue": "5"},
        "unifiedMarginTrade": True, "fundingInterval": 480, "settleCoin": m.quote_coin, "copyTrading": "both",
        "upperFundingRate": "0.00375", "lowerFundingRate": "-0.00375", "isPreListing": False,
        "preListingInfo": None, "riskParameters": {"priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"},
        "symbolType": "",
    }


def _spot_instrument(m: Market) -> dict[str, Any]:
    r = m.rules
    return {
        "symbol": m.symbol, "baseCoin": m.base, "quoteCoin": m.quote_coin, "innovation": "0",
        "status": "Trading", "marginTrading": "utaOnly", "stTag": "0",
        "lotSizeFilter": {"basePrecision": r["base_precision"], "quotePrecision": "0.0000001",
                          "minOrderQty": r["spot_min_qty"], "maxOrderQty": "83", "minOrderAmt": "5",
                          "maxOrderAmt": "8000000", "maxLimitOrderQty": "83", "maxMarketOrderQty": "41.5",
                          "postOnlyMaxLimitOrderSize": "60000"},
        "priceFilter": {"tickSize": r["spot_tick"]},
        "riskParameters": {"priceLimitRatioX": "0.005", "priceLimitRatioY": "0.01"},
        "symbolType": "",
    }


def _ticker(m: Market, now: int, spot: bool) -> dict[str, Any]:
    """Ticker from the last 24 h of bars; the book is one tick either side of the last price."""
    i = m.forming_index(now)
    last_i = i if i is not None else m.closed_count(now) - 1
    cur = m.bar(last_i, now)
    lo_i = max(0, last_i - DAY_MS // m.tf_ms)
    bars = [m.bar(j, now) for j in range(lo_i, last_i + 1)]
    dp = m.spot_price_dp if spot else m.price_dp
    tick = float(m.rules["spot_tick" if spot else "tick"])
    last = cur.close
    prev = bars[0].open
    vol = sum(b.volume for b in bars)
    turnover = sum(b.volume * b.close for b in bars)
    base = {
        "symbol": m.symbol, "bid1Price": num(last - tick, dp), "bid1Size": "1", "ask1Price": num(last + tick, dp),
        "ask1Size": "1", "lastPrice": num(last, dp), "prevPrice24h": num(prev, dp),
        "price24hPcnt": num((last / prev - 1.0) if prev else 0.0, 6),
        "highPrice24h": num(max(b.high for b in bars), dp), "lowPrice24h": num(min(b.low for b in bars), dp),
        "turnover24h": num(turnover, 4), "volume24h": num(vol, 4),
    }
    if spot:
        base["usdIndexPrice"] = num(last, dp)
        return base
    h1 = m.bar(max(0, last_i - 3_600_000 // m.tf_ms), now)
    funding_next = (now // 28_800_000 + 1) * 28_800_000
    base.update({
        "indexPrice": num(last, dp), "markPrice": num(last, dp), "prevPrice1h": num(h1.open, dp),
        "openInterest": "0", "openInterestValue": "0", "fundingRate": "0.0001",
        "nextFundingTime": str(funding_next), "predictedDeliveryPrice": "", "basisRate": "",
        "deliveryFeeRate": "", "deliveryTime": "0", "basis": "", "preOpenPrice": "", "preQty": "",
        "curPreListingPhase": "", "fundingIntervalHour": "8", "basisRateYear": "", "fundingCap": "0.005",
    })
    return base
