"""Quiet bars of markets that close together, played as one block (backtests).

One market plays its quiet bars as blocks by itself (``Engine.fast_forward``). Markets that close
together share the portfolio's equity (``bot.portfolio.Marks``): at each bar each market, in
slot order, sets its position at its close and marks the cash plus every market's position,
those after it in the group still at their previous close. A block of such a group is the bars
on which none of its markets can act (``Engine.quiet_market``, ``Engine.quiet_strategy``: the
smallest count of any); the equity marks over it are computed in that same order, with the same
sum, so the journal is the bar-by-bar one float for float (tests/test_fast_forward.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.engine import Engine

def fast_forward_group(engines: Sequence[Engine], left: int) -> int:
    """Play the next quiet bars of ``engines`` (a group that closes together, in slot order; the
    next ``left`` bars of each book are the group's) as blocks. Returns how many; unless that is
    ``left``, the next bar is not quiet for at least one of them (it is played bar by bar)."""
    if not all(e.idle for e in engines):
        return 0
    marks = engines[0].marks
    assert marks is not None
    played, window = 0, engines[0].FF_WINDOW  # then four times as many, while all are quiet
    while played < left:
        want = k = min(window, left - played)
        ahead = []
        for e in engines:  # the brokers first: an order working ends it before a strategy is asked
            upcoming, k = e.quiet_market(k)
            if not k:
                return played
            ahead.append(upcoming)
        for e, upcoming in zip(engines, ahead, strict=True):
            k = e.quiet_strategy(upcoming, k)
            if not k:
                return played
        _play(engines, ahead, k, marks.held, marks.price)
        played += k
        if k < want:
            break
        window *= 4
    return played


def _play(engines: Sequence[Engine], ahead: list[dict[str, Any]], k: int, held: list[float],
          price: list[float]) -> None:
    """Mark ``k`` bars of every market as ``Engine.decide`` would, bar after bar, market after
    market (``held`` is the portfolio's, updated in place), then advance each over them."""
    slots = [e.slot for e in engines]
    books = [e.broker.cash_and_qty() for e in engines]
    closes = [a["close"][:k].tolist() for a in ahead]
    marked: list[list[float]] = [[] for _ in engines]
    for j in range(k):
        for p, s in enumerate(slots):
            cash, qty = books[p]
            held[s] = qty * closes[p][j]
            marked[p].append(cash + sum(held))
    for p, (e, s) in enumerate(zip(engines, slots, strict=True)):
        price[s] = closes[p][-1]
        e.skip(ahead[p], k, marked[p])
