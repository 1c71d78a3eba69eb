"""Bybit v5 wire objects (REST items and private pushes share field names) -> domain values."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from bot.domain import ZERO, Category, ExitReason, Fill, Instrument, OrderStatus, Side, base_coin

#: Bybit orderStatus -> the bot's status. Fill statuses are driven by executions, not by these.
STATUS = {
    "Created": OrderStatus.SUBMITTED, "New": OrderStatus.ACCEPTED, "Untriggered": OrderStatus.ACCEPTED,
    "PartiallyFilled": OrderStatus.PARTIALLY_FILLED, "Filled": OrderStatus.FILLED,
    "Cancelled": OrderStatus.CANCELLED, "PartiallyFilledCanceled": OrderStatus.CANCELLED,
    "Rejected": OrderStatus.REJECTED, "Deactivated": OrderStatus.EXPIRED, "Triggered": OrderStatus.ACCEPTED,
}


def d(x: Any) -> Decimal:
    return Decimal(str(x)) if x not in (None, "") else ZERO


def instrument(item: dict[str, Any], category: str) -> Instrument:
    """instruments-info item -> rules. Linear: tick, qtyStep, min/max qty, minNotionalValue;
    spot: tickSize, basePrecision, minOrderQty, minOrderAmt."""
    pf, lf = item.get("priceFilter") or {}, item.get("lotSizeFilter") or {}
    if category == "spot":
        step, min_notional = d(lf.get("basePrecision")), d(lf.get("minOrderAmt"))
    else:
        step, min_notional = d(lf.get("qtyStep")), d(lf.get("minNotionalValue"))
    max_qty = lf.get("maxOrderQty") or lf.get("maxMktOrderQty")
    return Instrument(symbol=item["symbol"], category=Category(category), tick_size=d(pf.get("tickSize")),
                      qty_step=step, min_qty=d(lf.get("minOrderQty")), min_notional=min_notional,
                      max_qty=d(max_qty) if max_qty else None)


#: Executions that trade the position (the venue's own ones with their fill ``reason``).
TRADE_TYPES = {"Trade": "", "BustTrade": "liquidation", "AdlTrade": "adl"}


def fill(e: dict[str, Any]) -> Fill:
    """An execution. ``execFee`` is in ``feeCurrency``: on spot a buy's fee is the coin bought (the
    wallet gains execQty - execFee), a sell's the quote coin; linear reports USDT or "" (the quote).
    A liquidation (``BustTrade``) or auto-deleveraging (``AdlTrade``) says so in ``reason``."""
    symbol = str(e["symbol"])
    return Fill(exec_id=str(e["execId"]), client_order_id=str(e.get("orderLinkId") or e["orderId"]),
                symbol=symbol, side=Side(e["side"]), qty=d(e["execQty"]), price=d(e["execPrice"]),
                fee=d(e.get("execFee")), time=int(e["execTime"]), is_maker=bool(e.get("isMaker")),
                fee_currency=str(e.get("feeCurrency") or symbol[len(base_coin(symbol)):]),
                reason=TRADE_TYPES.get(str(e.get("execType", "Trade")), ""))


def is_trade(e: dict[str, Any]) -> bool:
    """An execution that trades the position: an order's (``Trade``), or the venue's liquidation
    or auto-deleveraging of it (booked like any fill, with its reason)."""
    return e.get("execType", "Trade") in TRADE_TYPES


def is_liquidation(item: dict[str, Any]) -> bool:
    """The venue's liquidation of the position: its order (``createType`` CreateByLiq) or its
    execution (``execType`` BustTrade)."""
    return item.get("createType") == "CreateByLiq" or item.get("execType") == "BustTrade"


def is_funding(e: dict[str, Any]) -> bool:
    """A funding settlement of the position (``execType`` Funding: ``execFee`` signed, positive =
    paid; ``feeRate`` the rate; ``execQty``/``side`` the position; ``execPrice`` the price)."""
    return e.get("execType") == "Funding"


def signed_size(p: dict[str, Any]) -> Decimal:
    size = d(p.get("size"))
    return -size if p.get("side") == "Sell" else size


def link_id(o: dict[str, Any]) -> str:
    return str(o.get("orderLinkId") or o["orderId"])


#: stopOrderType of a position TP/SL's order -> why it closes the position.
EXIT_REASONS = {"StopLoss": ExitReason.STOP_LOSS, "TakeProfit": ExitReason.TAKE_PROFIT,
                "TrailingStop": ExitReason.TRAILING_STOP}


def exit_reason(o: dict[str, Any]) -> ExitReason | None:
    """The protective exit an order or execution item belongs to (by its stopOrderType), or None."""
    return EXIT_REASONS.get(str(o.get("stopOrderType") or ""))
