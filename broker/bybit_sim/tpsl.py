"""Position TP/SL of the simulated venue: ``POST /v5/position/trading-stop`` (linear, Full mode).

As on Bybit, setting them creates one conditional order per level (``stopOrderType``
``TakeProfit``, ``StopLoss`` or ``TrailingStop``, ``orderStatus`` ``Untriggered``, reduce-only,
close-on-trigger, no orderLinkId) that the open-orders endpoint lists and the order stream
pushes; the position carries ``takeProfit`` / ``stopLoss`` / ``trailingStop``. Levels trigger on
the price replay by the bot's simulated broker's own rules (broker/protective.py, the same
code): a stop at its price or at the open it gapped through, less slippage; a target at its
price or the open beyond it; both in one bar: the stop first; the trail moves only when a bar
has closed. Bybit's trail starts from the market price when it is set (its ``trailingStop`` is
a distance from the market price). The triggered order goes Triggered -> Filled with its
executions, the others read Deactivated, and so do all of them when the position is closed by
any other order. Refusals carry Bybit's codes: 10001 for a bad parameter (spot, a zero
position, a level on the wrong side of the last price, off the tick), 34040 when nothing changes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from bot.domain import Category, ExitReason, Instrument
from bot.protection import Protection
from broker.bybit_sim.market import Market
from broker.bybit_sim.state import BarTick
from broker.bybit_sim.wire import ZERO, SimOrder, SimReject, dec, s
from broker.protective import exit_price, ratchet, trigger

if TYPE_CHECKING:
    from broker.bybit_sim.account import Account

#: stopOrderType of each protective leg.
KIND = {ExitReason.STOP_LOSS: "StopLoss", ExitReason.TAKE_PROFIT: "TakeProfit",
        ExitReason.TRAILING_STOP: "TrailingStop"}


@dataclass
class Levels:
    """One symbol's position TP/SL: the levels (a Protection, as the bot's broker holds it) and
    their conditional orders by stopOrderType."""

    p: Protection
    orders: dict[str, SimOrder] = field(default_factory=dict)


class TpslDesk:
    def __init__(self, account: Account) -> None:
        self.account = account
        self.by_symbol: dict[str, Levels] = {}

    # -- POST /v5/position/trading-stop -------------------------------------------------------------
    def set(self, params: dict[str, Any]) -> None:
        acct = self.account
        if params.get("category") != "linear":
            raise SimReject(10001, "params error: category invalid")
        m = acct.state.market(params.get("symbol"))
        if m is None:
            raise SimReject(10001, "params error: symbol invalid")
        mode = params.get("tpslMode")
        if mode not in ("Full", "Partial"):
            raise SimReject(10001, "params error: tpslMode invalid")
        if mode == "Partial":
            raise SimReject(10001, "params error: tpslMode Partial is not supported by the simulator")
        if str(params.get("positionIdx", "")) != "0":
            raise SimReject(10001, "params error: position idx not match position mode")
        book = acct.books.get(m.symbol)
        if book is None or book.size == 0:
            raise SimReject(10001, "can not set tp/sl/ts for zero position")
        tick = acct.rules(m, "linear")[0]
        given = {k: _price(params, k, tick) for k in ("takeProfit", "stopLoss", "trailingStop")}
        old = self.by_symbol.get(m.symbol)
        d = 1 if book.size > 0 else -1
        cur = old.p if old is not None else Protection(m.symbol, d, None, "")
        tp = cur.take_profit if given["takeProfit"] is None else (given["takeProfit"] or None)
        sl = cur.stop_loss if given["stopLoss"] is None else (given["stopLoss"] or None)
        trail = cur.trailing_distance if given["trailingStop"] is None else (given["trailingStop"] or None)
        last = acct.price_now(m)
        side = "Buy" if d > 0 else "Sell"
        if tp is not None and tp != cur.take_profit and (tp - last) * d <= 0:
            raise SimReject(10001, f"TakeProfit:{s(tp)} set for {side} position should be "
                                   f"{'higher' if d > 0 else 'lower'} than base_price:{s(last)}??LastPrice")
        if sl is not None and sl != cur.stop_loss and (sl - last) * d >= 0:
            raise SimReject(10001, f"StopLoss:{s(sl)} set for {side} position should "
                                   f"{'lower' if d > 0 else 'higher'} than base_price:{s(last)}??LastPrice")
        if trail is not None and trail != cur.trailing_distance and (last - d * trail) <= 0:
            raise SimReject(10001, f"TrailingStop:{s(trail)} is too far from base_price:{s(last)}")
        if (tp, sl, trail) == (cur.take_profit, cur.stop_loss, cur.trailing_distance):
            raise SimReject(34040, "not modified")
        keep_trail = trail is not None and trail == cur.trailing_distance and cur.trailing_stop is not None
        p = Protection(m.symbol, d, None, "", stop_loss=sl, take_profit=tp, trailing_distance=trail,
                       trailing_stop=(cur.trailing_stop if keep_trail else last - d * trail) if trail else None,
                       best_price=(cur.best_price if keep_trail else last) if trail else None)
        self._place(m, p, book.size, old)

    def _place(self, m: Market, p: Protection, size: Decimal, old: Levels | None) -> None:
        """The conditional orders for ``p``: changed ones are amended in place, new ones created,
        dropped ones deactivated; each change is pushed."""
        acct, now = self.account, self.account.state.now_ms()
        lv = Levels(p, dict(old.orders) if old is not None else {})
        self.by_symbol[m.symbol] = lv
        want = {"TakeProfit": p.take_profit, "StopLoss": p.stop_loss, "TrailingStop": p.trailing_stop}
        for kind, level in want.items():
            o = lv.orders.get(kind)
            if level is None:
                if o is not None:
                    self._deactivate(lv.orders.pop(kind), now)
                continue
            if o is None:
                o = SimOrder(order_id=str(uuid.uuid4()), link_id="", category="linear", symbol=m.symbol,
                             side="Sell" if p.direction > 0 else "Buy", order_type="Market", qty=abs(size),
                             price=None, reduce_only=True, created=now, updated=now, status="Untriggered",
                             stop_order_type=kind, trigger_price=level)
                lv.orders[kind] = acct.orders[o.order_id] = o
            elif o.trigger_price == level and o.qty == abs(size):
                continue
            o.trigger_price, o.qty, o.updated = level, abs(size), now
            acct.push("order", [o.wire()])
        acct.push("position", [acct.position_wire(m, "linear")])

    def _deactivate(self, o: SimOrder, now: int) -> None:
        o.status, o.updated = "Deactivated", now
        self.account.push("order", [o.wire()])

    # -- what the position shows -------------------------------------------------------------------
    def wire_fields(self, symbol: str) -> dict[str, str]:
        lv = self.by_symbol.get(symbol)
        p = lv.p if lv is not None else None
        return {"takeProfit": s(p.take_profit) if p and p.take_profit else "0",
                "stopLoss": s(p.stop_loss) if p and p.stop_loss else "0",
                "trailingStop": s(p.trailing_distance) if p and p.trailing_distance else "0"}

    def after_fill(self, m: Market) -> None:
        """A fill moved the position: Full-mode TP/SL follow its size, and go when it is closed."""
        lv = self.by_symbol.get(m.symbol)
        if lv is None:
            return
        book = self.account.books.get(m.symbol)
        now = self.account.state.now_ms()
        if book is None or book.size * lv.p.direction <= 0:
            del self.by_symbol[m.symbol]
            for o in lv.orders.values():
                if o.status == "Untriggered":
                    self._deactivate(o, now)
            return
        for o in lv.orders.values():
            if o.status == "Untriggered" and o.qty != abs(book.size):
                o.qty, o.updated = abs(book.size), now
                self.account.push("order", [o.wire()])

    # -- the price replay -----------------------------------------------------------------------------
    def on_tick(self, tick: BarTick) -> None:
        """Trigger a level this tick's bar-so-far reaches (same rules as the bot's simulated
        broker); at the bar's close, move the trail."""
        m, bar = tick.market, tick.bar
        lv = self.by_symbol.get(m.symbol)
        if lv is None:
            return
        o_, hi, lo = dec(bar.open), dec(bar.high), dec(bar.low)
        hit = trigger(lv.p, o_, hi, lo)
        if hit is None:
            if bar.confirm:
                lv.p = ratchet(lv.p, hi, lo)
                trail = lv.orders.get("TrailingStop")
                if trail is not None and trail.trigger_price != lv.p.trailing_stop:
                    trail.trigger_price, trail.updated = lv.p.trailing_stop, tick.now_ms
                    self.account.push("order", [trail.wire()])
            return
        level, reason = hit
        o = lv.orders.get(KIND[reason])
        if o is None:
            return
        acct = self.account
        tick_size = acct.rules(m, "linear")[0]
        ins = Instrument(m.symbol, Category.LINEAR, tick_size, Decimal(1), Decimal(1))
        price = exit_price(lv.p, level, acct.slip, ins)
        o.status, o.updated = "Triggered", tick.now_ms
        acct.push("order", [o.wire()])
        o.status = "New"
        at_open = level == o_
        acct.fill_conditional(o, m, price, bar.start if at_open else tick.now_ms)


def _price(params: dict[str, Any], key: str, tick: Decimal) -> Decimal | None:
    """A level given as text (None: not given; 0: cancel it)."""
    raw = params.get(key)
    if raw is None or raw == "":
        return None
    try:
        v = Decimal(str(raw))
    except InvalidOperation:
        raise SimReject(10001, f"params error: {key} invalid") from None
    if not v.is_finite() or v < 0:
        raise SimReject(10001, f"params error: {key} cannot be less than 0")
    if v % tick != 0:
        raise SimReject(10001, f"params error: {key} {raw} is not a multiple of the tick {s(tick)}")
    return v if v != 0 else ZERO
