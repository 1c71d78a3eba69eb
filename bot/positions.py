"""One instrument's position book: the one copy of the average-price, realised-PnL and fee
arithmetic, used by both brokers (a leaf beside :mod:`bot.domain`)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from bot.domain import ZERO, Side, fill_cash, held_change


@dataclass(slots=True)
class PositionBook:
    """One instrument's position: signed quantity, average entry, realised PnL and fees (exact).

    The one copy of this arithmetic; both brokers book every execution through it. ``cash_delta``
    is what the fill does to a fully collateralised cash balance (quote currency). ``fees`` are
    in the quote coin (a fee paid in the base coin counts at the fill price).
    """

    qty: Decimal = ZERO
    avg_price: Decimal = ZERO
    realized: Decimal = ZERO
    fees: Decimal = ZERO

    def apply(self, side: Side, qty: Decimal, price: Decimal, fee: Decimal = ZERO, *,
              track_entry: bool = True, fee_in_base: bool = False) -> Decimal:
        """Book one execution; return the cash it moves (``-(signed qty x price) - fee``).

        ``track_entry`` False (spot holdings) moves the quantity only: no entry price or PnL.
        ``fee_in_base``: the fee was paid in the base coin (Bybit spot buys): it comes out of the
        quantity, not the cash.
        """
        signed = held_change(side, qty, fee, fee_in_base)
        old, new = self.qty, self.qty + signed
        if track_entry:
            if old == 0 or (old > 0) == (signed > 0):
                # Opening or adding: weighted average entry.
                self.avg_price = (abs(old) * self.avg_price + abs(signed) * price) / abs(new)
            else:
                closed = min(abs(signed), abs(old))
                self.realized += (price - self.avg_price) * closed * (1 if old > 0 else -1)
                if new == 0:
                    self.avg_price = ZERO
                elif (new > 0) != (old > 0):
                    self.avg_price = price  # flipped: the remainder opened at this price
        self.qty = new
        self.fees += fee * price if fee_in_base else fee
        return fill_cash(side, qty, price, fee, fee_in_base)
