"""Turn a target exposure into the order that closes the gap, rounded to the instrument; the
marks that make one market's equity the portfolio's."""

from __future__ import annotations

from decimal import Decimal

from bot.domain import ZERO, Instrument, Side


def target_quantity(target: float, equity: float, price: float, fee_rate: float,
                    ins: Instrument) -> Decimal:
    """``floor_to_lot(|target| * equity / (price * (1 + max(1, |target|) * fee_rate)))`` with the
    target's sign: the fee buffer of a leveraged target (above 1) covers the fee on its whole
    notional, so a target of the full leverage needs exactly the equity in margin and fee.

    ``price`` is the decision bar's close: sizing never peeks at the fill price.
    """
    if target == 0 or equity <= 0 or price <= 0:
        return ZERO
    raw = abs(target) * equity / (price * (1.0 + max(1.0, abs(target)) * fee_rate))
    qty = ins.floor_qty(Decimal(repr(raw)))
    return qty if target > 0 else -qty


def order_for_target(target_qty: Decimal, current_qty: Decimal, price: float, ins: Instrument, *,
                     equity: float = 0.0, rebalance_threshold: float = 0.0) -> tuple[Side, Decimal] | None:
    """The (side, qty) that moves ``current_qty`` to ``target_qty``; None if not worth sending.

    None when the step is untradably small, or when its notional is below ``rebalance_threshold``
    of ``equity`` (``risk.rebalance_threshold``): the same target re-issued after a restart or a
    small price move must not churn out lot-sized orders. Closing to flat and flipping sides are
    always sent; opening from flat is a change like any other.
    """
    delta = target_qty - current_qty
    if delta == 0:
        return None
    qty = ins.floor_qty(abs(delta))
    if not ins.tradable(qty, Decimal(repr(price))):
        return None
    to_flat = target_qty == 0
    flip = target_qty * current_qty < 0
    if rebalance_threshold and not (to_flat or flip) and float(qty) * price < rebalance_threshold * equity:
        return None
    return (Side.BUY if delta > 0 else Side.SELL), qty


class Marks:
    """What every engine of a multi-market run reads the portfolio's equity from: each market's
    current position (updated by its engine at every bar and at every fill, so a fill counts as
    soon as it is booked) at that market's last close, plus the shared cash. Each market's latest
    target quantity is kept too, so that an order still on its way counts against the
    portfolio's gross exposure as if it had filled.

    ``held[i]`` is market i's position times ``price[i]`` (:meth:`set`), so the portfolio's value
    is one ``sum(held)``: ``Engine.decide`` inlines :meth:`set` and :meth:`value` on its per-bar
    path."""

    __slots__ = ("held", "price", "target")

    def __init__(self, n: int) -> None:
        self.price = [0.0] * n
        self.held = [0.0] * n
        self.target = [0.0] * n

    def set(self, slot: int, qty: float, price: float) -> None:
        """One market's position and last close."""
        self.price[slot] = price
        self.held[slot] = qty * price

    def value(self) -> float:
        """Sum of every market's position at its last close."""
        return sum(self.held)

    def gross_except(self, slot: int) -> float:
        """Gross notional of the other markets: the larger of what they hold and what they target."""
        return sum(max(abs(h), abs(t * p)) for i, (h, t, p) in
                   enumerate(zip(self.held, self.target, self.price, strict=True)) if i != slot)
