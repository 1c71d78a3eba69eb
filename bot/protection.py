"""Protective exits: from a decision's distances to the price levels that guard a position.

A decision that opens or changes a position carries an :class:`ExitPlan` (the market's
``exits`` config measured at the decision's close, or the strategy's own prices). When the
position's entry has filled, the plan becomes a :class:`Protection` at the book's average entry
price; a broker only executes it (the simulated one by broker/protective.py's rules, Bybit as
position TP/SL). A leaf beside :mod:`bot.domain`: it imports nothing else of the project.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import numpy as np

from bot.domain import Decision, ExitReason, Instrument

#: A distance: ("fraction", f) of the entry price, ("distance", d) in price units (an ATR
#: multiple measured at the decision), or ("price", p) an absolute level (the strategy's own).
Leg = tuple[str, float]


@dataclass(frozen=True, slots=True)
class ExitPlan:
    """What a decision asks for; levels are fixed once the entry price is known."""

    decision_id: str
    stop_loss: Leg | None = None
    take_profit: Leg | None = None
    trailing_stop: Leg | None = None

    @property
    def empty(self) -> bool:
        return self.stop_loss is None and self.take_profit is None and self.trailing_stop is None

    def payload(self) -> dict[str, Any]:
        """JSON for the journal: the legs as [kind, value] (an ``exit_plan`` event)."""
        return {"decision_id": self.decision_id, "stop_loss": self.stop_loss, "take_profit": self.take_profit,
                "trailing_stop": self.trailing_stop}

    @classmethod
    def from_payload(cls, d: dict[str, Any]) -> ExitPlan:
        def leg(k: str) -> Leg | None:
            v = d.get(k)
            return None if v is None else (str(v[0]), float(v[1]))
        return cls(d.get("decision_id") or "", stop_loss=leg("stop_loss"), take_profit=leg("take_profit"),
                   trailing_stop=leg("trailing_stop"))

    def protection(self, symbol: str, direction: int, entry: Decimal, ins: Instrument, exit_id: str) -> Protection:
        """The levels guarding a position of ``direction`` (+1 long, -1 short) entered at ``entry``,
        on the tick: a stop and the trail's distance round away from the entry (never tighter
        than asked), a target towards it (never further). A level on the wrong side of the entry (a strategy's
        stop above a long's fill) is dropped."""
        def offset(leg: Leg) -> Decimal:
            kind, v = leg
            return entry * Decimal(repr(v)) if kind == "fraction" else Decimal(repr(v))

        def level(leg: Leg | None, sign: int) -> Decimal | None:
            """sign -1: a stop (on the losing side), +1: a target (on the winning side)."""
            if leg is None:
                return None
            raw = Decimal(repr(leg[1])) if leg[0] == "price" else entry + sign * direction * offset(leg)
            # A long's stop and target both round down, a short's up: the stop away from the
            # entry, the target towards it.
            p = ins.round_price(raw, ROUND_FLOOR if direction > 0 else ROUND_CEILING)
            return p if p > 0 and (p - entry) * direction * sign > 0 else None

        trail = trail_level = None
        if self.trailing_stop is not None:
            trail = max(ins.round_price(offset(self.trailing_stop), ROUND_CEILING), ins.tick_size)
            trail_level = entry - direction * trail
            if trail_level <= 0:
                trail = trail_level = None
        return Protection(symbol=symbol, direction=direction, decision_id=self.decision_id, exit_id=exit_id,
                          stop_loss=level(self.stop_loss, -1), take_profit=level(self.take_profit, +1),
                          trailing_distance=trail, trailing_stop=trail_level, best_price=entry)


@dataclass(frozen=True, slots=True)
class Protection:
    """The protective levels on one position. ``trailing_stop`` is the trail's current level:
    ``best_price`` (the best price seen on closed bars since the entry) minus the distance."""

    symbol: str
    direction: int
    decision_id: str | None
    exit_id: str
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    trailing_distance: Decimal | None = None
    trailing_stop: Decimal | None = None
    best_price: Decimal | None = None

    @property
    def empty(self) -> bool:
        return self.stop_loss is None and self.take_profit is None and self.trailing_stop is None

    def stop(self) -> tuple[Decimal, ExitReason] | None:
        """The stop that fires first (the tighter of the stop-loss and the trail) and its reason."""
        legs = [(p, r) for p, r in ((self.stop_loss, ExitReason.STOP_LOSS),
                                    (self.trailing_stop, ExitReason.TRAILING_STOP)) if p is not None]
        if not legs:
            return None
        return max(legs, key=lambda x: x[0] * self.direction)

    @classmethod
    def from_payload(cls, d: dict[str, Any]) -> Protection:
        """The inverse of :meth:`payload` (a journaled ``protection_set`` event)."""
        def num(k: str) -> Decimal | None:
            return Decimal(d[k]) if d.get(k) is not None else None
        return cls(symbol=d["symbol"], direction=1 if d.get("direction") == "long" else -1,
                   decision_id=d.get("decision_id"), exit_id=d.get("exit_order_id") or "",
                   stop_loss=num("stop_loss"), take_profit=num("take_profit"),
                   trailing_distance=num("trailing_distance"), trailing_stop=num("trailing_stop"),
                   best_price=num("best_price"))

    def levels(self) -> tuple[Decimal | None, Decimal | None, Decimal | None]:
        """(stop-loss, take-profit, trailing distance): what a venue's position TP/SL holds."""
        return self.stop_loss, self.take_profit, self.trailing_distance

    def payload(self) -> dict[str, Any]:
        """JSON for the journal (prices as text, exactly)."""
        def t(x: Decimal | None) -> str | None:
            return None if x is None else format(x, "f")
        return {"symbol": self.symbol, "decision_id": self.decision_id, "exit_order_id": self.exit_id,
                "direction": "long" if self.direction > 0 else "short", "stop_loss": t(self.stop_loss),
                "take_profit": t(self.take_profit), "trailing_distance": t(self.trailing_distance),
                "trailing_stop": t(self.trailing_stop), "best_price": t(self.best_price)}


def exit_counts(reasons: Iterable[str | None]) -> dict[str, int]:
    """``{stop_loss_exits: n, take_profit_exits: n, trailing_stop_exits: n}`` over the closed
    trades' exit reasons (a summary's keys); empty when no trade was closed by a protective exit."""
    counts = {f"{r}_exits": 0 for r in ExitReason}
    for r in reasons:
        if r:
            counts[f"{r}_exits"] += 1
    return counts if any(counts.values()) else {}


def average_true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> float | None:
    """Mean true range of the last ``period`` bars of these arrays (which end at the decision
    bar: nothing later); None until ``period + 1`` bars exist."""
    n = len(close)
    if n < period + 1:
        return None
    h, lo, prev = high[n - period:], low[n - period:], close[n - period - 1:n - 1]
    tr = np.maximum(h - lo, np.maximum(np.abs(h - prev), np.abs(lo - prev)))
    return float(tr.mean())


def decision_levels_problem(d: Decision, close: float) -> str | None:
    """Why a decision's own stop / target prices cannot guard its target, or None."""
    if d.stop_price is None and d.take_profit_price is None:
        return None
    if d.target is None or d.target == 0:
        return "a decision without a position carries a stop or target price"
    side = 1 if d.target > 0 else -1
    for name, p, sign in (("stop_price", d.stop_price, -1), ("take_profit_price", d.take_profit_price, 1)):
        if p is None:
            continue
        if not np.isfinite(p) or p <= 0:
            return f"{name} {p!r} is not a positive price"
        if (p - close) * side * sign <= 0:
            where = "below" if side * sign < 0 else "above"
            return f"{name} {p:g} must be {where} the close {close:g} for a {'long' if side > 0 else 'short'}"
    return None
