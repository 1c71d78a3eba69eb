"""Isolated margin and liquidation of linear positions in the simulated broker (Bybit's rules).

Bybit, USDT perpetual, isolated margin ("Liquidation Price (USDT Contract)" in Bybit's help
centre):

- position value PV = |qty| x entry price; initial margin IM = PV / leverage;
  maintenance margin MM = PV x MMR - MM deduction (the risk-limit tier's; the lowest tier of
  BTCUSDT: MMR 0.5 %, deduction 0);
- liquidation price: long ``entry - (IM - MM) / |qty|``, short ``entry + (IM - MM) / |qty|``;
- when the price reaches it the position is closed at the **bankruptcy price** (0 % margin: long
  ``entry - IM / |qty|``, short ``entry + IM / |qty|``): the trader loses the position's margin,
  and the closing fee.

Prices are rounded to the tick against the trader: the liquidation price towards the entry (it
triggers no later), the bankruptcy price away from it.

The wallet's available balance (what a new position's margin and fee come out of) is
``cash + sum(qty x entry) - sum(IM)`` over its markets: the wallet balance less the margin its
positions hold. At leverage 1 a long holds its whole cost, so a buy needs what it did before
leverage: ``qty x price x (1 + fee_rate)`` of the cash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from bot.domain import ZERO, Instrument, Side

#: Bybit's lowest risk-limit tier maintenance margin rate of BTCUSDT (and the default when the
#: instrument file names none).
DEFAULT_MMR = Decimal("0.005")
#: Bybit's largest BTCUSDT leverage (the default when the instrument file names none).
DEFAULT_MAX_LEVERAGE = Decimal(100)


@dataclass(frozen=True, slots=True)
class MarginRule:
    """One linear market's margin terms: its leverage and the risk-limit tier's MMR."""

    leverage: Decimal = Decimal(1)
    mmr: Decimal = DEFAULT_MMR
    mm_deduction: Decimal = ZERO

    def initial_margin(self, qty: Decimal, entry: Decimal) -> Decimal:
        return abs(qty) * entry / self.leverage

    def maintenance_margin(self, qty: Decimal, entry: Decimal) -> Decimal:
        return abs(qty) * entry * self.mmr - self.mm_deduction

    def liquidation_price(self, qty: Decimal, entry: Decimal, ins: Instrument) -> Decimal:
        """Bybit's isolated-margin liquidation price of a position (``qty`` signed, nonzero)."""
        gap = (self.initial_margin(qty, entry) - self.maintenance_margin(qty, entry)) / abs(qty)
        if qty > 0:
            return max(ins.round_price(entry - gap, ROUND_CEILING), ZERO)
        return ins.round_price(entry + gap, ROUND_FLOOR)

    def bankruptcy_price(self, qty: Decimal, entry: Decimal, ins: Instrument) -> Decimal:
        """Where a liquidated position is closed: its margin is used up there."""
        gap = entry / self.leverage
        if qty > 0:
            return max(ins.round_price(entry - gap, ROUND_FLOOR), ZERO)
        return ins.round_price(entry + gap, ROUND_CEILING)


@dataclass(frozen=True, slots=True)
class Liquidation:
    """A position the bar's range reached the liquidation price of."""

    qty: Decimal  # the signed position liquidated
    entry: Decimal
    liq_price: Decimal
    bust_price: Decimal  # the fill price
    margin: Decimal  # the initial margin the trader loses (before the closing fee)
    at_open: bool  # the bar opened through the liquidation price

    def payload(self, symbol: str, leverage: Decimal, mmr: Decimal) -> dict[str, str | bool]:
        return {"symbol": symbol, "side": "long" if self.qty > 0 else "short", "qty": _s(abs(self.qty)),
                "entry_price": _s(self.entry), "liquidation_price": _s(self.liq_price),
                "bankruptcy_price": _s(self.bust_price), "margin": _s(self.margin),
                "leverage": _s(leverage), "mmr": _s(mmr), "at_open": self.at_open}


def _s(d: Decimal) -> str:
    """A Decimal as plain text without trailing zeros (90, not 90.0 or 9E+1)."""
    return format(d.normalize(), "f")


def liquidation_hit(rule: MarginRule, ins: Instrument, qty: Decimal, entry: Decimal,
                    open_: Decimal, high: Decimal, low: Decimal) -> Liquidation | None:
    """The liquidation of position ``qty`` at ``entry`` in a bar of ``open_``/``high``/``low``, or
    None: a long's low (a short's high) at or through the liquidation price liquidates it."""
    if not qty:
        return None
    lp = rule.liquidation_price(qty, entry, ins)
    reached = low <= lp if qty > 0 else high >= lp
    if not reached:
        return None
    at_open = open_ <= lp if qty > 0 else open_ >= lp
    return Liquidation(qty, entry, lp, rule.bankruptcy_price(qty, entry, ins), rule.initial_margin(qty, entry),
                       at_open)


def affordable_qty(rule: MarginRule, ins: Instrument, position: Decimal, entry: Decimal, side: Side,
                   qty: Decimal, price: Decimal, fee_rate: Decimal, available: Decimal) -> Decimal:
    """The part of a fill of ``qty`` at ``price`` the available balance pays for (whole lots).

    The part that closes the position always fills (it frees its margin and realises its PnL);
    the part that opens or adds needs ``opening x price x (1 / leverage + fee_rate)``."""
    signed = qty if side is Side.BUY else -qty
    closing = min(qty, abs(position)) if position and (position > 0) != (signed > 0) else ZERO
    if closing:
        pnl = (price - entry) * closing * (1 if position > 0 else -1)
        available += closing * entry / rule.leverage + pnl - closing * price * fee_rate
    per_unit = price * (1 / rule.leverage + fee_rate)
    opening = qty - closing
    if opening * per_unit <= available:
        return qty
    room = ins.floor_qty(available / per_unit) if available > 0 and per_unit > 0 else ZERO
    return closing + room


@dataclass(slots=True)
class MarginBook:
    """What every market of one wallet holds: its position's cost (signed qty x entry) and initial
    margin; the wallet's available balance follows from them."""

    _held: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)

    def set(self, symbol: str, cost: Decimal, margin: Decimal) -> None:
        self._held[symbol] = (cost, margin)

    def available(self, cash: Decimal) -> Decimal:
        """Wallet balance (cash + every position's cost) less the margin the positions hold."""
        return cash + sum((c - m for c, m in self._held.values()), ZERO)
