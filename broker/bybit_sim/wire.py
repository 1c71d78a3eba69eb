"""What the simulated venue keeps and serves: orders and executions in Bybit's wire format.

Split off the account (broker/bybit_sim/account.py), which matches and books them. Numbers go
out as Bybit sends them: strings without exponent or trailing zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

ZERO = Decimal(0)
_FEE_Q = Decimal("1e-10")


def dec(x: float | str) -> Decimal:
    return Decimal(repr(float(x))) if isinstance(x, float) else Decimal(x)


def s(x: Decimal) -> str:
    """Decimal -> Bybit string without exponent or trailing zeros."""
    t = format(x.normalize(), "f") if x != 0 else "0"
    return t


class SimReject(Exception):
    """An order the venue refuses: ``code`` is Bybit's retCode."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


@dataclass
class SimOrder:
    order_id: str
    link_id: str
    category: str
    symbol: str
    side: str
    order_type: str
    qty: Decimal
    price: Decimal | None
    reduce_only: bool
    created: int
    updated: int
    status: str = "New"
    cum_qty: Decimal = ZERO
    cum_value: Decimal = ZERO
    cum_fee: Decimal = ZERO
    #: Bar index forming at acceptance, and whether that bar had already ticked.
    bar_index: int = -1
    bar_seen: bool = False
    reject_reason: str = "EC_NoError"
    #: A market order that meets a thin bar: part fills, the rest is cancelled (IOC).
    thin: bool = False
    #: A position TP/SL's conditional order (broker/bybit_sim/tpsl.py): StopLoss, TakeProfit or
    #: TrailingStop, and its trigger price; "UNKNOWN" for every other order.
    stop_order_type: str = "UNKNOWN"
    trigger_price: Decimal | None = None
    #: Bybit's createType: CreateByUser, or CreateByLiq for the venue's liquidation order.
    create_type: str = "CreateByUser"
    #: A spot conditional order's triggerDirection (broker/bybit_sim/spot_stops.py), else 0.
    direction: int = 0

    @property
    def is_open(self) -> bool:
        return self.status in ("New", "PartiallyFilled", "Untriggered")

    @property
    def conditional(self) -> bool:
        return self.stop_order_type != "UNKNOWN"

    @property
    def position_tpsl(self) -> bool:
        return self.conditional and self.category == "linear"

    @property
    def trigger_direction(self) -> int:
        """Bybit's triggerDirection: 1 triggers when the price rises to it, 2 when it falls."""
        if not self.conditional or self.direction:
            return self.direction
        closes_long = self.side == "Sell"
        return 1 if (self.stop_order_type == "TakeProfit") == closes_long else 2

    def wire(self) -> dict[str, Any]:
        avg = self.cum_value / self.cum_qty if self.cum_qty else ZERO
        return {
            "orderId": self.order_id, "orderLinkId": self.link_id, "blockTradeId": "", "symbol": self.symbol,
            "price": s(self.price) if self.price is not None else "0", "qty": s(self.qty), "side": self.side,
            "isLeverage": "", "positionIdx": 0, "orderStatus": self.status, "cancelType": "UNKNOWN",
            "rejectReason": self.reject_reason, "avgPrice": s(avg) if self.cum_qty else "0",
            "leavesQty": s(self.qty - self.cum_qty if self.is_open else ZERO),
            "leavesValue": "0", "cumExecQty": s(self.cum_qty), "cumExecValue": s(self.cum_value),
            "cumExecFee": s(self.cum_fee), "timeInForce": "IOC" if self.order_type == "Market" else "GTC",
            "orderType": self.order_type, "stopOrderType": self.stop_order_type, "orderIv": "",
            "triggerPrice": s(self.trigger_price) if self.trigger_price is not None else "0",
            "takeProfit": "0", "stopLoss": "0", "tpTriggerBy": "UNKNOWN", "slTriggerBy": "UNKNOWN",
            "triggerDirection": self.trigger_direction, "triggerBy": "LastPrice" if self.conditional else "UNKNOWN",
            "lastPriceOnCreated": "", "reduceOnly": self.reduce_only, "closeOnTrigger": self.position_tpsl,
            "smpType": "None", "smpGroup": 0, "smpOrderId": "", "tpslMode": "Full" if self.position_tpsl else "",
            "tpLimitPrice": "", "slLimitPrice": "", "placeType": "", "createdTime": str(self.created),
            "updatedTime": str(self.updated), "category": self.category, "createType": self.create_type,
        }


@dataclass
class SimExec:
    exec_id: str
    order: SimOrder
    qty: Decimal
    price: Decimal
    fee: Decimal
    time: int
    seq: int
    is_maker: bool
    closed_size: Decimal
    #: The coin ``fee`` is in: USDT, or the base coin of a spot buy.
    fee_currency: str = "USDT"
    #: ``Trade``, or ``Funding``: a settlement of the position (``fee`` signed: positive = paid,
    #: ``fee_rate`` the funding rate, ``order`` a stand-in of order type UNKNOWN).
    exec_type: str = "Trade"
    fee_rate: str = ""

    def wire(self) -> dict[str, Any]:
        o = self.order
        return {
            "symbol": o.symbol, "orderType": o.order_type, "underlyingPrice": "", "orderLinkId": o.link_id,
            "side": o.side, "indexPrice": "", "orderId": o.order_id, "stopOrderType": o.stop_order_type,
            "leavesQty": s(o.qty - o.cum_qty), "execTime": str(self.time), "feeCurrency": self.fee_currency,
            "isMaker": self.is_maker, "execFee": s(self.fee), "feeRate": self.fee_rate, "execId": self.exec_id,
            "tradeIv": "", "blockTradeId": "", "markPrice": s(self.price), "execPrice": s(self.price),
            "markIv": "", "orderQty": s(o.qty), "orderPrice": s(o.price) if o.price is not None else "0",
            "execValue": s(self.qty * self.price), "execType": self.exec_type, "execQty": s(self.qty),
            "closedSize": s(self.closed_size), "extraFees": "", "seq": self.seq, "category": o.category,
        }


@dataclass
class Book:
    """Linear one-way position of one symbol."""

    size: Decimal = ZERO          # signed
    avg: Decimal = ZERO
    realized: Decimal = ZERO
    updated: int = 0
    seq: int = 0
