"""The fill rules of protective exits on bars (simulated broker; the venue simulator's replay).

Written down in the README ("Fill assumptions", protective exits). For a long (a short mirrors
every rule, highs for lows):

- A stop (the stop-loss, or the trailing stop, whichever is higher) triggers when the bar's low
  reaches it. It fills at the stop, or at the bar's open when the bar opens at or below it (a gap
  through the stop: against you), moved against the trader by ``slippage_bps`` and rounded to
  the tick against him.
- A take-profit triggers when the bar's high reaches it and fills at its price, or at the open
  when the bar opens at or above it (a gap: in your favour); it becomes a market order too, so
  the same slippage applies.
- A bar that reaches both: the one the open gapped through wins (the open is the bar's first
  price); otherwise the stop is assumed to have come first (nothing in the bar says which did),
  unless finer bars of the same span (``market.intrabar_data``, 1m) say otherwise: the first of
  them that reaches either level decides; one that reaches both is again the stop.
- A protection set by a fill at a bar's open watches the rest of that bar: its range came after
  the open.
- The trailing stop moves only at a bar's close: best price = the highest high of the closed
  bars since the entry (the entry price to start), stop = best - distance, never lowered. A
  bar's own high never moves the stop that bar is checked against (its order inside the bar is
  unknown: no lookahead).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from bot.domain import ExitReason, Instrument
from bot.protection import Protection


def exit_price(p: Protection, price: Decimal, slippage: Decimal, ins: Instrument) -> Decimal:
    """``price`` moved against the trader closing ``p``'s position (a long sells: lower)."""
    if p.direction > 0:
        return ins.round_price(price * (1 - slippage), ROUND_FLOOR)
    return ins.round_price(price * (1 + slippage), ROUND_CEILING)


def trigger(p: Protection, open_: Decimal, high: Decimal, low: Decimal) -> tuple[Decimal, ExitReason] | None:
    """The price (before slippage) and reason of the exit this bar triggers, or None."""
    d = p.direction
    stop = p.stop()
    tp = p.take_profit
    if stop is not None and (open_ - stop[0]) * d <= 0:
        return open_, stop[1]  # opened through the stop
    if tp is not None and (open_ - tp) * d >= 0:
        return open_, ExitReason.TAKE_PROFIT  # opened beyond the target
    adverse, favourable = (low, high) if d > 0 else (high, low)
    if stop is not None and (adverse - stop[0]) * d <= 0:
        return stop  # reached; when the target was reached too, the stop is assumed first
    if tp is not None and (favourable - tp) * d >= 0:
        return tp, ExitReason.TAKE_PROFIT
    return None


def both_reached(p: Protection, open_: Decimal, high: Decimal, low: Decimal) -> bool:
    """The bar reached the stop and the target, and opened beyond neither (their order is unknown)."""
    stop, tp, d = p.stop(), p.take_profit, p.direction
    if stop is None or tp is None or (open_ - stop[0]) * d <= 0 or (open_ - tp) * d >= 0:
        return False
    adverse, favourable = (low, high) if d > 0 else (high, low)
    return (adverse - stop[0]) * d <= 0 and (favourable - tp) * d >= 0


def first_in_finer_bars(p: Protection, highs: Sequence[float], lows: Sequence[float]) -> bool | None:
    """Over the finer bars inside the bar (in order): True when the target is reached first,
    False when the stop is (or both in one finer bar), None when none reaches either."""
    stop, tp = p.stop(), p.take_profit
    assert stop is not None and tp is not None
    for h, lo in zip(highs, lows, strict=True):
        adverse, favourable = (lo, h) if p.direction > 0 else (h, lo)
        hit_stop = (Decimal(repr(adverse)) - stop[0]) * p.direction <= 0
        hit_tp = (Decimal(repr(favourable)) - tp) * p.direction >= 0
        if hit_stop or hit_tp:
            return not hit_stop
    return None


def ratchet(p: Protection, high: Decimal, low: Decimal) -> Protection:
    """``p`` after a bar closed without triggering it: the trail follows the best price."""
    if p.trailing_distance is None or p.trailing_stop is None:
        return p
    d = p.direction
    best = p.best_price if p.best_price is not None else (high if d > 0 else low)
    best = max(best, high) if d > 0 else min(best, low)
    level = best - d * p.trailing_distance
    if (level - p.trailing_stop) * d <= 0:
        return p if best == p.best_price else replace(p, best_price=best)
    return replace(p, best_price=best, trailing_stop=level)
