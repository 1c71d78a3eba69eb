"""ccxt and pybit, unmodified, pointed at the simulator, parse its answers (REST and WebSocket;
pybit's WebSocket as the bot runs it, with subscriptions recorded before they are sent)."""

from __future__ import annotations

import json
import queue
import time
from pathlib import Path

import ccxt
import ccxt.async_support as accxt
import pybit.unified_trading as put
import pytest
from pybit.exceptions import FailedRequestError

from broker.bybit.pybit_ws import BotWebSocket
from broker.bybit_sim import FaultConfig, SimConfig, SimServer
from broker.bybit_sim.testing import sim_thread

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "bybit"


def _cfg(btc_1h: Path, **kw: object) -> SimConfig:
    base = {"data": [str(btc_1h)], "bar_ms": 50.0, "history": 300}
    base.update(kw)
    return SimConfig(**base)  # type: ignore[arg-type]


def _ccxt(url: str) -> accxt.bybit:
    ex = accxt.bybit({"enableRateLimit": False})
    for k in list(ex.urls["api"]):
        ex.urls["api"][k] = url
    return ex


async def test_ccxt_parses_markets_time_klines_ticker(btc_1h: Path) -> None:
    async with SimServer(_cfg(btc_1h)) as sim:
        m = sim.state.markets["BTCUSDT"]
        ex = _ccxt(sim.rest_url)
        try:
            markets = await ex.load_markets()
            assert {"BTC/USDT", "BTC/USDT:USDT"} <= set(markets)
            lin = markets["BTC/USDT:USDT"]
            assert lin["linear"] and lin["precision"]["price"] == 0.1 and lin["limits"]["amount"]["min"] == 0.001
            assert abs(await ex.fetch_time() - sim.state.now_ms()) < 60_000
            since = int(m.t[10])
            rows = await ex.fetch_ohlcv("BTC/USDT:USDT", "1h", since=since, limit=5)
            # Newest-first on the wire, ascending after ccxt; values equal the file's.
            assert [r[0] for r in rows] == [int(x) for x in m.t[10:15]]
            assert [r[4] for r in rows] == [float(x) for x in m.data.close[10:15]]
            assert rows[0][5] == float(m.data.volume[10])
            spot = await ex.fetch_ohlcv("BTC/USDT", "4h", limit=3)  # aggregated from the 1h file
            assert len(spot) == 3 and all(r[0] % (4 * 3_600_000) == 0 for r in spot)
            t = await ex.fetch_ticker("BTC/USDT:USDT")
            assert t["last"] > 0 and t["bid"] < t["last"] < t["ask"]
            with pytest.raises(ccxt.BadRequest):
                await ex.fetch_ohlcv("BTC/USDT:USDT", "1m", limit=2)  # the file is 1h
        finally:
            await ex.close()


async def test_ccxt_maps_injected_faults(btc_1h: Path) -> None:
    async with SimServer(_cfg(btc_1h, faults=FaultConfig())) as sim:
        ex = _ccxt(sim.rest_url)
        try:
            await ex.load_markets()
            sim.state.faults.rate_limit = 2
            with pytest.raises(ccxt.RateLimitExceeded):
                for _ in range(5):
                    await ex.fetch_time()
            assert sim.state.stats["rate_limited"] >= 1
            sim.state.faults.rate_limit = 0
            sim.state.faults.http_error_rate = 1.0
            with pytest.raises(ccxt.ExchangeNotAvailable):
                await ex.fetch_time()
        finally:
            await ex.close()


def test_pybit_http_parses_and_retries_10006(btc_1h: Path) -> None:
    with sim_thread(_cfg(btc_1h, faults=FaultConfig(rate_limit=3))) as sim:
        s = put.HTTP(testnet=True)
        s.endpoint = sim.rest_url
        t = s.get_server_time()
        assert t["retCode"] == 0 and isinstance(t["time"], int) and isinstance(t["result"]["timeSecond"], str)
        # Past the limit pybit sleeps until X-Bapi-Limit-Reset-Timestamp and retries: it still succeeds.
        # One refusal, right after the first call: the rolling window it hits frees about a second
        # after that call, well after pybit reads the refusal however loaded the machine. (pybit
        # sleeps for the reset time less its own clock; a second refusal, due as soon as pybit
        # retries at the reset, frees within milliseconds, and a reset already past by the time
        # pybit reads it makes that sleep negative: pybit's ValueError, not the venue's answer.)
        for _ in range(6):
            assert s.get_server_time()["retCode"] == 0
            if sim.state.stats["rate_limited"]:
                break
        assert sim.state.stats["rate_limited"] == 1
        k = s.get_kline(category="linear", symbol="BTCUSDT", interval="60", limit=4)
        rows = k["result"]["list"]
        assert len(rows) == 4 and all(isinstance(x, str) for r in rows for x in r) and len(rows[0]) == 7
        assert int(rows[0][0]) > int(rows[1][0])  # newest first
        info = s.get_instruments_info(category="linear", symbol="BTCUSDT")["result"]["list"][0]
        assert info["lotSizeFilter"]["qtyStep"] == "0.001" and info["priceFilter"]["tickSize"] == "0.10"
        spot = s.get_instruments_info(category="spot", symbol="BTCUSDT")["result"]["list"][0]
        assert spot["priceFilter"] == {"tickSize": "0.1"}
        tick = s.get_tickers(category="linear", symbol="BTCUSDT")["result"]["list"][0]
        assert float(tick["lastPrice"]) > 0 and tick["fundingRate"] == "0.0001"
        with pytest.raises(FailedRequestError):
            s.endpoint = sim.rest_url + "/nowhere"
            s.get_server_time()


def test_pybit_websocket_gets_pong_ack_and_confirmed_klines(btc_1h: Path) -> None:
    with sim_thread(_cfg(btc_1h, bar_ms=40.0)) as sim:
        got: queue.Queue[dict] = queue.Queue()
        # pybit's WebSocket as the bot runs it: pybit 5.17 records a subscription after sending
        # it, and the simulator (like Bybit) acks at once (broker/bybit/pybit_ws.py).
        ws = BotWebSocket(f"{sim.ws_url}/v5/public/linear", testnet=True, channel_type="linear", ping_interval=2,
                          ping_timeout=1, retries=3)
        try:
            ws.kline_stream(interval=60, symbol="BTCUSDT", callback=got.put)
            confirmed, partial = [], 0
            deadline = time.monotonic() + 20
            while len(confirmed) < 3 and time.monotonic() < deadline:
                msg = got.get(timeout=10)
                assert msg["topic"] == "kline.60.BTCUSDT" and msg["type"] == "snapshot"
                k = msg["data"][0]
                assert isinstance(k["start"], int) and isinstance(k["open"], str) and k["end"] == k["start"] + 3_599_999
                if k["confirm"]:
                    confirmed.append(k["start"])
                else:
                    partial += 1
            assert len(confirmed) == 3 and partial >= 2
            assert all(b - a == 3_600_000 for a, b in zip(confirmed, confirmed[1:], strict=False))
        finally:
            ws.exit()


async def test_ws_control_messages_match_samples(btc_1h: Path) -> None:
    import aiohttp

    samples = json.loads((SAMPLES / "ws_subscribe.json").read_text())
    linear_ack = next(e["message"] for e in samples["examples"] if e["label"].endswith("Linear/Inverse"))
    async with SimServer(_cfg(btc_1h)) as sim, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{sim.ws_url}/v5/public/linear")
        await ws.send_json({"op": "subscribe", "args": ["kline.60.BTCUSDT"]})
        ack = json.loads(await ws.receive_str())
        assert list(ack) == list(linear_ack) and ack["success"] is True and ack["req_id"] == ""
        await ws.send_json({"op": "ping", "req_id": "100001"})
        while (pong := json.loads(await ws.receive_str())).get("op") != "ping":
            pass
        assert pong["ret_msg"] == "pong" and pong["req_id"] == "100001" and pong["success"] is True
        await ws.send_json({"op": "subscribe", "args": ["kline.5.BTCUSDT"]})
        while (bad := json.loads(await ws.receive_str())).get("op") != "subscribe":
            pass
        assert bad["success"] is False
        await ws.close()
        r = await http.get(f"{sim.rest_url}/v5/market/kline", params={"category": "linear", "symbol": "XXXUSDT",
                                                                     "interval": "60"})
        body = await r.json()
        assert r.status == 200 and body["retCode"] == 10001 and body["result"] == {}
        assert set(body) == {"retCode", "retMsg", "result", "retExtInfo", "time"}
        assert r.headers["X-Bapi-Limit"] and "X-Bapi-Limit-Reset-Timestamp" in r.headers
