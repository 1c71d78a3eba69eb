"""The simulator's spot conditional orders (``/v5/order/create`` with ``orderFilter`` StopOrder or
tpslOrder, ``/v5/order/amend``), as Bybit answers them: Untriggered with stopOrderType ``Stop``,
the trigger direction from the last price, 10001 for a bad trigger price or an unchanged amend,
110001 for an order that does not exist; on the replay a sell below the price is a stop that
fills at its (amended) trigger by the bot's own rules; a StopOrder whose coin has been sold meanwhile is
Rejected when it triggers."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from broker.bybit_sim import SimServer
from broker.bybit_sim.private import account_of
from tests.live_helpers import modules, sim_cfg, until
from tests.test_bybit_sim_tpsl import _call, _candles, _code, _http


async def test_spot_stop_orders_wait_amend_trigger_and_are_rejected_when_the_coin_is_gone(tmp_path: Path) -> None:
    flat = (100.0, 100.0, 100.0, 100.0)
    rows = [flat] * 13 + [(100, 100, 96, 97)] + [(97, 97, 97, 97)] * 2 + [(97, 112, 97, 111)] + [(111,) * 4] * 3
    data = _candles(tmp_path / "bybit_BTCUSDT_1h.csv", rows)
    async with SimServer(sim_cfg(data, 1500.0, history=10), modules(fee_rate=0.0)) as sim:
        h = _http(sim.rest_url)
        acct = account_of(sim.state)
        spot = {"category": "spot", "symbol": "BTCUSDT", "orderType": "Market"}
        await _call(h.place_order, **spot, side="Buy", qty="1", marketUnit="baseCoin", orderLinkId="entry-1")
        await until(lambda: acct.coins.get("BTC", Decimal(0)) == 1, "the buy to fill")
        stop = {**spot, "side": "Sell", "qty": "1", "orderFilter": "StopOrder"}
        assert await _code(h.place_order, **stop, triggerPrice="98.05", orderLinkId="sl") == 10001  # off the tick
        assert await _code(h.place_order, **stop, triggerPrice="0", orderLinkId="sl") == 10001
        assert await _code(h.place_order, **{**stop, "category": "linear"}, triggerPrice="98",
                           orderLinkId="sl") == 10001  # orderFilter is spot's
        await _call(h.place_order, **stop, triggerPrice="98", orderLinkId="sl")
        await _call(h.place_order, **stop, triggerPrice="110", orderLinkId="tp")  # a StopOrder holds nothing
        listed = {o["orderLinkId"]: o for o in
                  (await _call(h.get_open_orders, category="spot", symbol="BTCUSDT"))["result"]["list"]}
        assert {k: (o["orderStatus"], o["stopOrderType"], o["triggerPrice"], o["triggerDirection"])
                for k, o in listed.items() if k in ("sl", "tp")} == \
            {"sl": ("Untriggered", "Stop", "98", 2), "tp": ("Untriggered", "Stop", "110", 1)}
        amend = {"category": "spot", "symbol": "BTCUSDT"}
        await _call(h.amend_order, **amend, orderLinkId="sl", triggerPrice="98.5")
        assert await _code(h.amend_order, **amend, orderLinkId="sl", triggerPrice="98.5") == 10001  # unchanged
        assert await _code(h.amend_order, **amend, orderLinkId="nope", triggerPrice="98") == 110001
        # The falling bar reaches the amended stop: filled at 98.5 (no slippage).
        await until(lambda: acct.by_link["sl"].status == "Filled", "the stop to trigger", timeout_s=90)
        (ex,) = [e for e in acct.execs if e.order is acct.by_link["sl"]]
        assert (ex.price, ex.qty, acct.coins["BTC"]) == (Decimal("98.5"), Decimal(1), Decimal(0))
        # The rising bar reaches the target, but the coin is sold: rejected when it triggers.
        await until(lambda: acct.by_link["tp"].status == "Rejected", "the target to trigger", timeout_s=90)
        assert not [e for e in acct.execs if e.order is acct.by_link["tp"]]
