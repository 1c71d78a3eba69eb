"""Leverage and liquidation of the simulated venue: ``POST /v5/position/set-leverage``.

Leverage is per linear symbol (Bybit's default for a new USDT perpetual is 10x: the account's
``leverage`` knob), validated as Bybit does: category linear, ``buyLeverage`` equal to
``sellLeverage`` (one-way mode), a multiple of the 0.01 step within [1, maxLeverage] (the
instrument's ``leverageFilter``: its rules' ``max_leverage``, else 100): 10001 for a bad parameter,
110013 above the maximum, 110043 when it is already set. The position shows it (``leverage``,
``positionIM``, ``liqPrice``, ``bustPrice``) and new orders' margin is taken at it.

Liquidation: each tick, a linear position is checked against its isolated-margin liquidation
price by the bot's simulated broker's own rule (broker/margin.py, the same code): a long whose
bar-so-far low reaches it (a short's high) is closed at the bankruptcy price by the venue's own
order (no orderLinkId, reduce-only) with an execution of ``execType`` BustTrade, paying the
taker fee; working orders of the symbol are cancelled first, and a position TP/SL is deactivated
by the close. A stop-loss between the entry and the liquidation price is reached first and is
left to fill (broker/bybit_sim/tpsl.py runs after this check), as the simulated broker does.
"""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from bot.domain import Category, Instrument
from broker.bybit_sim.market import Market
from broker.bybit_sim.state import BarTick
from broker.bybit_sim.wire import SimOrder, SimReject, dec, s
from broker.margin import DEFAULT_MAX_LEVERAGE, DEFAULT_MMR, MarginRule, liquidation_hit

if TYPE_CHECKING:
    from broker.bybit_sim.account import Account

LEVERAGE_STEP = Decimal("0.01")


def max_leverage(m: Market) -> Decimal:
    return dec(m.rules["max_leverage"]) if m.rules.get("max_leverage") else DEFAULT_MAX_LEVERAGE


class LeverageDesk:
    def __init__(self, account: Account) -> None:
        self.account = account
        self.default = dec(account.cfg.leverage)
        self.by_symbol: dict[str, Decimal] = {}

    def of(self, symbol: str) -> Decimal:
        return self.by_symbol.get(symbol, self.default)

    def rule(self, m: Market) -> MarginRule:
        mmr = m.rules.get("maintenance_margin_rate")
        return MarginRule(leverage=self.of(m.symbol), mmr=dec(mmr) if mmr else DEFAULT_MMR)

    def instrument(self, m: Market) -> Instrument:
        tick, step, min_qty, _ = self.account.rules(m, "linear")
        return Instrument(m.symbol, Category.LINEAR, tick, step, min_qty)

    # -- POST /v5/position/set-leverage -------------------------------------------------------------
    def set(self, params: dict[str, Any]) -> None:
        if params.get("category") != "linear":
            raise SimReject(10001, "params error: category invalid")
        m = self.account.state.market(params.get("symbol"))
        if m is None:
            raise SimReject(10001, "params error: symbol invalid")
        buy, sell = _lev(params, "buyLeverage"), _lev(params, "sellLeverage")
        if buy != sell:
            raise SimReject(10001, "params error: buyLeverage must equal sellLeverage in one-way mode")
        if buy < 1 or buy % LEVERAGE_STEP != 0:
            raise SimReject(10001, f"params error: leverage {s(buy)} invalid: from 1 in steps of {s(LEVERAGE_STEP)}")
        top = max_leverage(m)
        if buy > top:
            raise SimReject(110013, f"cannot set leverage [{s(buy)}] gt maxLeverage [{s(top)}] by risk limit")
        if buy == self.of(m.symbol):
            raise SimReject(110043, "Set leverage not modified")
        self.by_symbol[m.symbol] = buy
        self.account.state.stats["leverage_set"] += 1
        self.account.push("position", [self.account.position_wire(m, "linear")])

    # -- what the position shows -------------------------------------------------------------------
    def wire_fields(self, m: Market) -> dict[str, str]:
        b = self.account.books.get(m.symbol)
        rule = self.rule(m)
        out = {"leverage": s(rule.leverage), "positionIM": "0", "positionMM": "0", "liqPrice": "", "bustPrice": ""}
        if b is None or not b.size:
            return out
        ins = self.instrument(m)
        out.update(positionIM=s(rule.initial_margin(b.size, b.avg)),
                   positionMM=s(rule.maintenance_margin(b.size, b.avg)),
                   liqPrice=s(rule.liquidation_price(b.size, b.avg, ins)),
                   bustPrice=s(rule.bankruptcy_price(b.size, b.avg, ins)))
        return out

    # -- the price replay -----------------------------------------------------------------------------
    def on_tick(self, tick: BarTick) -> None:
        acct, m, bar = self.account, tick.market, tick.bar
        b = acct.books.get(m.symbol)
        if b is None or not b.size:
            return
        rule, ins = self.rule(m), self.instrument(m)
        hit = liquidation_hit(rule, ins, b.size, b.avg, dec(bar.open), dec(bar.high), dec(bar.low))
        if hit is None or self._stop_first(m, hit.liq_price, b.size):
            return
        now = bar.start if hit.at_open else tick.now_ms
        for o in [o for o in acct.orders.values() if o.is_open and o.symbol == m.symbol and not o.conditional]:
            acct.cancel_order(o, now)
        o = SimOrder(order_id=str(uuid.uuid4()), link_id="", category="linear", symbol=m.symbol,
                     side="Sell" if b.size > 0 else "Buy", order_type="Market", qty=abs(b.size), price=None,
                     reduce_only=True, created=now, updated=now, create_type="CreateByLiq")
        acct.orders[o.order_id] = o
        acct.state.stats["liquidations"] += 1
        acct.push("order", [o.wire()])
        acct.liquidate(o, m, hit.bust_price, now)

    def _stop_first(self, m: Market, liq: Decimal, size: Decimal) -> bool:
        """A stop (loss or trailing) the price reaches before the liquidation price (between it and
        the entry)."""
        lv = self.account.tpsl.by_symbol.get(m.symbol)
        stops = [x for x in ((lv.p.stop_loss, lv.p.trailing_stop) if lv is not None else ()) if x is not None]
        return any(stop > liq if size > 0 else stop < liq for stop in stops)


def _lev(params: dict[str, Any], key: str) -> Decimal:
    raw = params.get(key)
    try:
        v = Decimal(str(raw))
    except InvalidOperation:
        raise SimReject(10001, f"params error: {key} invalid") from None
    if raw is None or raw == "" or not v.is_finite():
        raise SimReject(10001, f"params error: {key} invalid")
    return v
