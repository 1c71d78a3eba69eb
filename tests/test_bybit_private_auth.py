"""The simulator checks signatures exactly as Bybit: the shared vectors verify, and pybit and
ccxt, unmodified, authenticate against it while a wrong secret, an unknown key or a stale
timestamp is refused (10004, 10003, 10002), over REST and the private WebSocket (pybit's, as
the bot runs it: BotWebSocket, which survives the venue's instant subscribe acks)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import ccxt
import pybit.unified_trading as put
import pytest
from pybit.exceptions import InvalidRequestError

from broker.bybit.pybit_ws import BotWebSocket
from broker.bybit_sim import SimConfig, SimServer
from broker.bybit_sim.auth import AuthError, sign, verify_rest, verify_ws
from broker.bybit_sim.testing import sim_thread
from tests.live_helpers import KEY, SECRET, modules

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "shared" / "bybit" / "auth_test_vectors.json").read_text())


def test_shared_vectors_sign_and_verify() -> None:
    keys = {VECTORS["api_key"]: VECTORS["api_secret"]}
    for name in ("rest_get", "rest_get_no_params", "rest_post"):
        v = VECTORS[name]
        assert sign(VECTORS["api_secret"], v["string_to_sign"]) == v["signature"]
        payload = v.get("query_string", v.get("body", ""))
        headers = {"X-BAPI-API-KEY": VECTORS["api_key"], "X-BAPI-TIMESTAMP": v["timestamp"],
                   "X-BAPI-RECV-WINDOW": v["recv_window"], "X-BAPI-SIGN": v["signature"]}
        ts = int(v["timestamp"])
        assert verify_rest(keys, headers, payload, now_ms=ts + 10) == VECTORS["api_key"]
        # recv_window: server_time - recv_window <= timestamp < server_time + 1000
        assert verify_rest(keys, headers, payload, now_ms=ts + 5000) == VECTORS["api_key"]
        for now in (ts + 5001, ts - 1000):
            with pytest.raises(AuthError) as e:
                verify_rest(keys, headers, payload, now_ms=now)
            assert e.value.code == 10002 and f"req_timestamp[{ts}]" in e.value.msg
        with pytest.raises(AuthError) as e:  # one byte of the payload changed
            verify_rest(keys, headers, payload + " ", now_ms=ts)
        assert e.value.code == 10004 and e.value.msg.startswith("error sign! origin_string[")
        with pytest.raises(AuthError) as e:
            verify_rest({"OTHER": "x"}, headers, payload, now_ms=ts)
        assert e.value.code == 10003
    ws = VECTORS["ws_auth"]
    assert sign(VECTORS["api_secret"], ws["string_to_sign"]) == ws["signature"]
    assert verify_ws(keys, ws["message"]["args"], now_ms=ws["expires"] - 1) == VECTORS["api_key"]
    assert verify_ws(keys, ws["message"]["args"], now_ms=ws["expires"]) is None  # expired
    assert verify_ws(keys, [VECTORS["api_key"], ws["expires"], "0" * 64], now_ms=0) is None


def _http(url: str, secret: str = SECRET, key: str = KEY) -> put.HTTP:
    h = put.HTTP(testnet=True, api_key=key, api_secret=secret, max_retries=1, retry_codes={-1})
    h.endpoint = url
    return h


def _private_ws(url: str, secret: str) -> BotWebSocket:
    # pybit's WebSocket as the bot runs it (BotWebSocket: subscriptions recorded before they are
    # sent, since the venue acks at once). pybit signs its auth to expire 1 s after sending it; on
    # a loaded machine delivering it can take longer, and the venue (like Bybit) refuses an
    # expired auth. The bot signs for 5 s.
    return BotWebSocket(f"{url}/v5/private", channel_type="private", testnet=True, api_key=KEY, api_secret=secret,
                        private_auth_expire=10)


def _venue_subscribed(sim: SimServer, topic: str) -> bool:
    """True once an authenticated private connection holds ``topic`` (read on the simulator's loop)."""
    return sim.thread.call(lambda: any(c.channel == "private" and topic in c.topics and "api_key" in c.session
                                       for c in sim.hub.conns))


def _wait_for(cond: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll ``cond`` until it holds; a generous deadline, since pybit and the simulator run on threads."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def test_pybit_and_ccxt_authenticate_and_wrong_secrets_are_refused(btc_1h: Path) -> None:
    with sim_thread(SimConfig(data=[str(btc_1h)], bar_ms=200.0, history=300), modules()) as sim:
        h = _http(sim.rest_url)
        wallet = h.get_wallet_balance(accountType="UNIFIED")["result"]["list"][0]
        assert wallet["totalEquity"] == "10000"
        res = h.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.01",
                            orderLinkId="pybit-1")
        assert res["retCode"] == 0 and res["result"]["orderLinkId"] == "pybit-1"
        for secret, key, code in (("wrong", KEY, 10004), (SECRET, "UNKNOWN", 10003)):
            with pytest.raises(InvalidRequestError) as e:
                _http(sim.rest_url, secret, key).get_positions(category="linear", symbol="BTCUSDT")
            assert e.value.status_code == code
        # POST bodies are signed byte for byte: a wrong secret cannot place an order.
        with pytest.raises(InvalidRequestError) as e:
            _http(sim.rest_url, "wrong").place_order(category="linear", symbol="BTCUSDT", side="Buy",
                                                     orderType="Market", qty="0.01", orderLinkId="pybit-2")
        assert e.value.status_code == 10004
        assert "pybit-2" not in sim.state.extensions["account"].by_link

        # ccxt, unmodified: every API URL pointed at the simulator.
        def make(secret: str) -> ccxt.bybit:
            ex = ccxt.bybit({"apiKey": KEY, "secret": secret, "enableRateLimit": False,
                             "options": {"fetchMarkets": {"types": ["linear"]}, "enableUnifiedAccount": True,
                                         "enableUnifiedMargin": False}})
            for k in list(ex.urls["api"]):
                ex.urls["api"][k] = sim.rest_url
            ex.has["fetchCurrencies"] = False  # coin-info is a wallet endpoint the simulator does not serve
            return ex

        ex = make(SECRET)
        assert 9_000 < ex.fetch_balance({"type": "unified"})["USDT"]["total"] <= 10_000
        o = ex.create_order("BTC/USDT:USDT", "market", "sell", 0.01, params={"orderLinkId": "ccxt-1"})
        assert o["clientOrderId"] == "ccxt-1"
        with pytest.raises(ccxt.AuthenticationError):
            make("wrong").fetch_balance({"type": "unified"})

        # The private WebSocket: pybit authenticates; a wrong secret is refused.
        got: list[dict] = []
        ws = _private_ws(sim.ws_url, SECRET)
        try:
            ws.execution_stream(got.append)
            _wait_for(lambda: ws.auth, "pybit's private WebSocket to authenticate")
            # An execution is pushed only to connections subscribed when it happens: pybit's
            # auth ack comes before the subscription ack, so wait for the venue to hold the topic.
            _wait_for(lambda: _venue_subscribed(sim, "execution"), "the venue to register the execution topic")
            h.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.01",
                          orderLinkId="pybit-3")

            def links() -> set[str]:
                return {d["orderLinkId"] for m in list(got) for d in m["data"]}

            _wait_for(lambda: "pybit-3" in links(), "the execution push of pybit-3")
        finally:
            ws.exit()
        bad = _private_ws(sim.ws_url, "wrong")
        try:
            _wait_for(lambda: bad.auth_refused is not None, "the venue to refuse the wrong secret")
            assert not bad.auth and sim.state.stats["ws_auth_failed"] == 1
        finally:
            bad.exit()
