"""Turn a target exposure into the order that closes the gap, rounded to the instrument."""

from __future__ import annotations

from decimal import Decimal

from bot.domain import ZERO, Instrument, Side


def target_quantity(target: float, equity: float, price: float, fee_rate: float,
                    ins: Instrument) -> Decimal:
    """``floor_to_lot(|target| * equity / (price * (1 + fee_rate)))`` with the target's sign.

    ``price`` is the decision bar's close: sizing never peeks at the fill price.
    """
    if target == 0 or equity <= 0 or price <= 0:
        return ZERO
    raw = abs(target) * equity / (price * (1.0 + fee_rate))
    qty = ins.floor_qty(Decimal(repr(raw)))
    return qty if target > 0 else -qty


def order_for_target(target_qty: Decimal, current_qty: Decimal, price: float,
                     ins: Instrument) -> tuple[Side, Decimal] | None:
    """The (side, qty) that moves ``current_qty`` to ``target_qty``; None if untradably small."""
    delta = target_qty - current_qty
    if delta == 0:
        return None
    qty = ins.floor_qty(abs(delta))
    if not ins.tradable(qty, Decimal(repr(price))):
        return None
    return (Side.BUY if delta > 0 else Side.SELL), qty
