"""The simulator's order rules, as Bybit answers them: orderLinkId uniqueness (110072), unknown
cancels (110001), lot/tick checks (10001), insufficient margin (110007), per-key rate limits with
the real headers (10006 past the limit), market fills at the next bar's open, limit orders when
crossed, and a private stream that refuses subscriptions before auth."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pybit.unified_trading as put
import pytest
from pybit.exceptions import InvalidRequestError

from broker.bybit_sim import SimServer
from broker.bybit_sim.private import account_of
from tests.live_helpers import KEY, SECRET, modules, sim_cfg


def _http(url: str) -> put.HTTP:
    h = put.HTTP(testnet=True, api_key=KEY, api_secret=SECRET, max_retries=1, retry_codes={-1},
                 return_response_headers=True)
    h.endpoint = url
    return h


def _code(fn, **kw) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequestError) as e:
        fn(**kw)
    return int(e.value.status_code)


async def test_order_rules_and_rate_limit_headers(btc_1h: Path) -> None:
    async with SimServer(sim_cfg(btc_1h, 60_000.0, history=300), modules()) as sim:  # the clock barely moves
        h = _http(sim.rest_url)
        order = {"category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market"}

        def create(**kw):  # type: ignore[no-untyped-def]
            return h.place_order(**{**order, **kw})

        body, _, headers = await _in_thread(create, qty="0.01", orderLinkId="r-1")
        assert body["retCode"] == 0 and headers["X-Bapi-Limit"] == "10"
        assert int(headers["X-Bapi-Limit-Status"]) == 8 or int(headers["X-Bapi-Limit-Status"]) == 9
        assert await _in_thread(_code, create, qty="0.01", orderLinkId="r-1") == 110072
        assert await _in_thread(_code, create, qty="0.0105", orderLinkId="r-2") == 10001
        assert await _in_thread(_code, create, qty="0.0001", orderLinkId="r-3") == 10001
        assert await _in_thread(_code, create, qty="100", orderLinkId="r-4") == 110007  # ~4 M USDT at 10x
        assert await _in_thread(_code, create, orderType="Limit", qty="0.01", price="30000.05",
                                orderLinkId="r-5") == 10001
        assert await _in_thread(_code, h.cancel_order, category="linear", symbol="BTCUSDT",
                                orderLinkId="nope") == 110001
        # Past 10 creates in one second on this key: 10006 with the reset header.
        codes = []
        for i in range(12):
            try:
                await _in_thread(create, qty="0.001", orderLinkId=f"burst-{i}")
                codes.append(0)
            except InvalidRequestError as exc:
                codes.append(int(exc.status_code))
                last_headers = exc.resp_headers
        assert 10006 in codes and last_headers["X-Bapi-Limit-Status"] == "0"
        assert int(last_headers["X-Bapi-Limit-Reset-Timestamp"]) > 0
        acct = account_of(sim.state)
        assert len({o.link_id for o in acct.orders.values()}) == len(acct.orders)


async def test_market_fills_at_next_open_and_limits_when_crossed(btc_1h: Path) -> None:
    async with SimServer(sim_cfg(btc_1h, 80.0, history=300), modules(slippage_bps=0)) as sim:
        h = _http(sim.rest_url)
        m = sim.state.markets["BTCUSDT"]
        await _in_thread(h.place_order, category="linear", symbol="BTCUSDT", side="Buy", orderType="Market",
                         qty="0.01", orderLinkId="m-1")
        low = min(float(x) for x in m.data.low[300:400])
        await _in_thread(h.place_order, category="linear", symbol="BTCUSDT", side="Sell", orderType="Limit",
                         qty="0.01", price=f"{round(low * 0.8, 1)}", orderLinkId="l-1")  # crossed at once
        acct = account_of(sim.state)
        for _ in range(100):
            if len(acct.execs) >= 2:
                break
            await _sleep(0.02)
        by = {e.order.link_id: e for e in acct.execs}
        e = by["m-1"]
        i = int(m.t.searchsorted(e.time))
        assert e.time == int(m.t[i]) and float(e.price) == pytest.approx(float(m.data.open[i]), abs=0.051)
        assert by["l-1"].is_maker and float(by["l-1"].price) >= round(low * 0.8, 1)
        res = (await _in_thread(h.get_executions, category="linear", symbol="BTCUSDT", limit=1))[0]["result"]
        assert len(res["list"]) == 1 and res["nextPageCursor"]
        pos = (await _in_thread(h.get_positions, category="linear", symbol="BTCUSDT"))[0]["result"]["list"][0]
        assert pos["size"] == "0"


async def test_private_stream_requires_auth(btc_1h: Path) -> None:
    async with SimServer(sim_cfg(btc_1h, 200.0, history=300), modules()) as sim, aiohttp.ClientSession() as s, \
            s.ws_connect(f"{sim.ws_url}/v5/private") as ws:
        await ws.send_str(json.dumps({"op": "subscribe", "args": ["order"]}))
        reply = json.loads((await ws.receive(timeout=5)).data)
        assert reply["success"] is False and reply["op"] == "subscribe"
        await ws.send_str(json.dumps({"op": "auth", "args": [KEY, 1, "00"], "req_id": "a1"}))
        reply = json.loads((await ws.receive(timeout=5)).data)
        assert reply == {"success": False, "ret_msg": "Params Error", "op": "auth", "conn_id": reply["conn_id"],
                         "req_id": "a1"}


async def _in_thread(fn, *args, **kw):  # type: ignore[no-untyped-def]
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kw))


async def _sleep(s: float) -> None:
    await asyncio.sleep(s)
