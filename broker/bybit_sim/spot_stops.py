"""Spot conditional orders of the simulated venue: ``POST /v5/order/create`` with
``category=spot`` and ``orderFilter`` ``StopOrder`` or ``tpslOrder`` (a ``triggerPrice``, a
Market order), amended by ``POST /v5/order/amend`` (``triggerPrice``, ``qty``), cancelled as any.

As on Bybit spot: the order waits ``Untriggered`` (``stopOrderType`` ``Stop`` or ``tpslOrder``);
which way it triggers follows from the trigger price against the last price when it is placed
(above: when the price rises to it, ``triggerDirection`` 1; below: when it falls, 2). A
``tpslOrder`` holds its coin while it waits, a ``StopOrder`` does not (its balance is checked
when it triggers: short, the order is ``Rejected``). Triggering follows the bot's own fill rules
(broker/protective.py): a sell whose trigger is below the price is a long's stop, above a
take-profit; it fills at the trigger or at the open it gapped through, less slippage; two in one
bar: the stop first. On the bar it is placed in it watches only the prices after it (the tick's
close), never the part of the bar before it. Triggered, it fills at once as a market order.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from bot.domain import Category, Instrument
from bot.protection import Protection
from broker.bybit_sim.state import BarTick
from broker.bybit_sim.wire import ZERO, SimOrder, SimReject, dec, s
from broker.protective import exit_price, trigger

if TYPE_CHECKING:
    from broker.bybit_sim.account import Account
    from broker.bybit_sim.market import Market

#: orderFilter -> the stopOrderType its orders show.
FILTERS = {"StopOrder": "Stop", "tpslOrder": "tpslOrder"}


def trigger_price(p: dict[str, Any], tick: Decimal) -> Decimal:
    raw = p.get("triggerPrice")
    try:
        v = Decimal(str(raw))
    except InvalidOperation:
        raise SimReject(10001, "params error: triggerPrice invalid") from None
    if not v.is_finite() or v <= 0:
        raise SimReject(10001, "params error: triggerPrice must be greater than 0")
    if v % tick != 0:
        raise SimReject(10001, f"params error: triggerPrice {raw} is not a multiple of the tick {s(tick)}")
    return v


def is_stop(o: SimOrder) -> bool:
    """A sell that triggers falling (or a buy rising) closes at a loss: a stop, not a target."""
    return (o.side == "Sell") == (o.direction == 2)


class SpotStops:
    def __init__(self, account: Account) -> None:
        self.account = account

    def arm(self, o: SimOrder, p: dict[str, Any], m: Market) -> None:
        """Make a just-validated spot order conditional (its orderFilter, triggerPrice)."""
        acct = self.account
        if o.order_type != "Market":
            raise SimReject(10001, "params error: the simulator takes spot conditional orders as Market only")
        o.trigger_price = trigger_price(p, acct.rules(m, "spot")[0])
        o.stop_order_type = FILTERS[str(p["orderFilter"])]
        o.direction = 1 if o.trigger_price > acct.price_now(m) else 2
        o.status = "Untriggered"

    def amend(self, p: dict[str, Any]) -> SimOrder:
        acct = self.account
        if p.get("category") not in ("spot", "linear"):
            raise SimReject(10001, "params error: category invalid")
        oid, link = p.get("orderId"), p.get("orderLinkId")
        if not oid and not link:
            raise SimReject(10001, "params error: OrderId or orderLinkId is required")
        o = acct.orders.get(str(oid)) if oid else acct.by_link.get(str(link))
        if o is None or not o.is_open or o.category != p.get("category"):
            raise SimReject(110001, "Order does not exist")
        m = acct.state.market(o.symbol)
        assert m is not None
        tick, step = acct.rules(m, o.category)[:2]
        new_trigger = trigger_price(p, tick) if p.get("triggerPrice") not in (None, "") else o.trigger_price
        if new_trigger is not None and not o.conditional:
            raise SimReject(10001, "params error: triggerPrice is only for a conditional order")
        qty = o.qty
        if p.get("qty") not in (None, ""):
            try:
                qty = Decimal(str(p["qty"]))
            except InvalidOperation:
                raise SimReject(10001, "params error: qty invalid") from None
            if not qty.is_finite() or qty <= 0 or qty % step != 0:
                raise SimReject(10001, f"params error: qty {p['qty']} is not a multiple of {s(step)}")
        if (new_trigger, qty) == (o.trigger_price, o.qty):
            raise SimReject(10001, "The order remains unchanged as the parameters entered match the existing ones.")
        o.trigger_price, o.qty, o.updated = new_trigger, qty, acct.state.now_ms()
        acct.state.stats["amends"] += 1
        acct.push("order", [o.wire()])
        return o

    def on_tick(self, tick: BarTick) -> None:
        """Trigger the spot conditional orders this tick reaches, stops before targets."""
        m, bar, acct = tick.market, tick.bar, self.account
        waiting = [o for o in acct.orders.values() if o.category == "spot" and o.symbol == m.symbol
                   and o.status == "Untriggered"]
        for o in sorted(waiting, key=lambda o: not is_stop(o)):
            if o.bar_index == tick.index:  # placed inside this bar: only the prices after it
                o_ = hi = lo = dec(bar.close)
            else:
                o_, hi, lo = dec(bar.open), dec(bar.high), dec(bar.low)
            d = 1 if o.side == "Sell" else -1
            assert o.trigger_price is not None
            level = {"stop_loss": o.trigger_price} if is_stop(o) else {"take_profit": o.trigger_price}
            p = Protection(m.symbol, d, None, "", **level)  # type: ignore[arg-type]
            hit = trigger(p, o_, hi, lo)
            if hit is None:
                continue
            self._fire(o, m, p, hit[0], bar.start if hit[0] == o_ and o.bar_index != tick.index else tick.now_ms)

    def _fire(self, o: SimOrder, m: Market, p: Protection, level: Decimal, now: int) -> None:
        acct = self.account
        o.status, o.updated = "Triggered", now
        acct.push("order", [o.wire()])
        free = acct.coins.get(m.base, ZERO) - acct.spot_locked(m.base, but=o) if o.side == "Sell" else None
        if free is not None and o.qty > free:
            o.status, o.reject_reason = "Rejected", "EC_InsufficientBalance"
            acct.push("order", [o.wire()])
            return
        tick = acct.rules(m, "spot")[0]
        price = exit_price(p, level, acct.slip, Instrument(m.symbol, Category.SPOT, tick, Decimal(1), Decimal(1)))
        o.status = "New"
        acct.fill_conditional(o, m, price, now)
