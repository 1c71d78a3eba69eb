"""Show a strategy a run's bars again, as the first process showed them (a resume rebuilds the
strategy's state this way), and count where it now decides otherwise than the journal says."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.bars import Bars
from strategies.base import Strategy


def replay_mismatches(strategy: Strategy, bars: Bars, warmup_bars: int, journaled: Mapping[int, Any],
                      since: int | None = None) -> int:
    """Warm ``strategy`` up on the first ``warmup_bars`` of ``bars``, then step it through the rest;
    the number of its decisions whose target differs from the journaled decision of that bar
    (``journaled``: by bar open time; objects with ``target`` and ``error``). 0 for a
    deterministic strategy. ``since``: only decisions of bars from this open time on are compared
    (a model swapped in mid-run answers for its own bars, not for its predecessor's)."""
    replay = Bars(bars.symbol, bars.timeframe, capacity=max(bars.n, 16))
    for i in range(min(warmup_bars, bars.n)):
        replay.append(bars.candle(i))
    strategy.on_start(replay)
    mismatches = 0
    for i in range(replay.n, bars.n):
        replay.append(bars.candle(i))
        try:
            d = strategy.on_bar(replay)
        except Exception:  # noqa: BLE001 - the journal already holds this bar's error decision
            continue
        if d is not None and (since is None or d.bar_time >= since):
            j = journaled.get(d.bar_time)
            if j is None or (j.target != d.target and j.error is None):
                mismatches += 1
    return mismatches
