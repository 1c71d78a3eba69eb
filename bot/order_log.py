"""One log line per step of an order's life, for paper and live: sent, acknowledged, filled,
rejected, cancelled, expired. The engine calls these where both brokers' answers and events
arrive, so the simulated wallet and Bybit log alike. Orders carry no credentials; a venue's
refusal was scrubbed where it was mapped (broker/bybit/errors.py)."""

from __future__ import annotations

import re

import structlog

from bot.domain import Fill, Order, OrderStatus

log = structlog.get_logger("bot.orders")

_RET_CODE = re.compile(r"retCode (\d+)")


def _num(x: object) -> str | None:
    return None if x is None else format(x, "f")


def sent(order: Order) -> None:
    log.info("order_sent", order=order.client_order_id, symbol=order.symbol, side=str(order.side),
             type=str(order.order_type), qty=_num(order.qty), price=_num(order.price), decision=order.decision_id)


def outcome(order: Order, fill: Fill | None = None) -> None:
    """What the broker said about an order (its answer to the submit, or a later event)."""
    oid, status = order.client_order_id, order.status
    if fill is not None:
        log.info("order_filled" if status is OrderStatus.FILLED else "order_partially_filled", order=oid,
                 symbol=fill.symbol, side=str(fill.side), qty=_num(fill.qty), price=_num(fill.price),
                 fee=_num(fill.fee), exec_id=fill.exec_id, filled=_num(order.filled_qty), of=_num(order.qty))
    elif status is OrderStatus.ACCEPTED:
        log.info("order_acknowledged", order=oid, symbol=order.symbol, exchange_order_id=order.exchange_order_id)
    elif status is OrderStatus.REJECTED:
        m = _RET_CODE.search(order.reject_reason or "")
        log.warning("order_rejected", order=oid, symbol=order.symbol, code=int(m.group(1)) if m else None,
                    reason=order.reject_reason)
    elif status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED):
        log.info(f"order_{status}", order=oid, symbol=order.symbol, filled=_num(order.filled_qty),
                 of=_num(order.qty), reason=order.reject_reason)
