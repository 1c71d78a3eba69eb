"""The simulator's position TP/SL (``POST /v5/position/trading-stop``), as Bybit answers it: 10001
for a bad parameter (spot, a flat position, a level on the wrong side of the last price, off the
tick, Partial mode), 34040 when nothing changes; Untriggered conditional orders listed beside
the position's levels; on the replay a stop triggers by the bot's own fill rules, its order goes
Triggered -> Filled with stopOrderType StopLoss, the target's order is Deactivated, the
position is flat and its levels are cleared."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pybit.unified_trading as put
import pytest
from pybit.exceptions import InvalidRequestError

from broker.bybit_sim import SimServer
from broker.bybit_sim.private import account_of
from tests.live_helpers import KEY, SECRET, modules, sim_cfg, until

HOUR = 3_600_000
T0 = 1_700_006_400_000


def _http(url: str) -> put.HTTP:
    h = put.HTTP(testnet=True, api_key=KEY, api_secret=SECRET, max_retries=1, retry_codes={-1})
    h.endpoint = url
    return h


def _candles(path: Path, rows: list[tuple[float, float, float, float]]) -> Path:
    path.write_text("timestamp,open,high,low,close,volume\n" + "".join(
        f"{T0 + i * HOUR},{o},{h},{lo},{c},10\n" for i, (o, h, lo, c) in enumerate(rows)))
    return path


async def _call(fn, **kw):  # type: ignore[no-untyped-def]
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(**kw))


async def _code(fn, **kw) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequestError) as e:
        await _call(fn, **kw)
    return int(e.value.status_code)


async def test_trading_stop_rules_and_a_stop_that_triggers(tmp_path: Path) -> None:
    # 10 flat bars of history, 3 flat bars to trade in, then a bar that falls through 98.
    flat = (100.0, 100.0, 100.0, 100.0)
    rows = [flat] * 13 + [(100, 100, 96, 97)] + [(97, 97, 97, 97)] * 3
    data = _candles(tmp_path / "bybit_BTCUSDT_1h.csv", rows)
    async with SimServer(sim_cfg(data, 1500.0, history=10), modules(fee_rate=0.0)) as sim:
        h = _http(sim.rest_url)
        acct = account_of(sim.state)
        ts = h.set_trading_stop
        base = {"category": "linear", "symbol": "BTCUSDT", "tpslMode": "Full", "positionIdx": 0}
        assert await _code(ts, **base, stopLoss="98") == 10001  # no position yet
        await _call(h.place_order, category="linear", symbol="BTCUSDT", side="Buy", orderType="Market",
                    qty="1", orderLinkId="entry-1")
        await until(lambda: acct.books.get("BTCUSDT") is not None and acct.books["BTCUSDT"].size == 1,
                    "the entry to fill")
        assert await _code(ts, **{**base, "category": "spot"}, stopLoss="98") == 10001
        assert await _code(ts, **{**base, "tpslMode": "Partial"}, stopLoss="98") == 10001
        assert await _code(ts, **base, stopLoss="101") == 10001   # a long's stop above the last price
        assert await _code(ts, **base, takeProfit="99") == 10001  # a long's target below it
        assert await _code(ts, **base, stopLoss="98.05") == 10001  # off the 0.1 tick
        res = await _call(ts, **base, stopLoss="98", takeProfit="110")
        assert res["retCode"] == 0
        assert await _code(ts, **base, stopLoss="98", takeProfit="110") == 34040
        pos = (await _call(h.get_positions, category="linear", symbol="BTCUSDT"))["result"]["list"][0]
        assert (pos["stopLoss"], pos["takeProfit"], pos["trailingStop"]) == ("98", "110", "0")
        listed = (await _call(h.get_open_orders, category="linear", symbol="BTCUSDT"))["result"]["list"]
        conditional = {o["stopOrderType"]: o for o in listed}
        assert set(conditional) == {"StopLoss", "TakeProfit"}
        assert all(o["orderStatus"] == "Untriggered" and o["orderLinkId"] == "" and o["reduceOnly"]
                   for o in conditional.values())
        sl, tp = conditional["StopLoss"], conditional["TakeProfit"]
        assert (sl["triggerPrice"], sl["triggerDirection"], tp["triggerPrice"], tp["triggerDirection"]) == \
            ("98", 2, "110", 1)
        # The falling bar reaches the stop: filled at 98 (no slippage), the target deactivated.
        await until(lambda: acct.books["BTCUSDT"].size == 0, "the stop to trigger", timeout_s=90)
        stop = acct.orders[conditional["StopLoss"]["orderId"]]
        (ex,) = [e for e in acct.execs if e.order is stop]
        assert stop.status == "Filled" and ex.price == Decimal(98) and ex.wire()["stopOrderType"] == "StopLoss"
        assert acct.orders[conditional["TakeProfit"]["orderId"]].status == "Deactivated"
        pos = (await _call(h.get_positions, category="linear", symbol="BTCUSDT"))["result"]["list"][0]
        assert (pos["size"], pos["stopLoss"], pos["takeProfit"]) == ("0", "0", "0")
