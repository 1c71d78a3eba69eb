"""The checkpoint guards every run goes through, per market, before the journal hears of it.

- **Other market** (every mode): a checkpoint fitted on another symbol or timeframe than the
  market's is refused in one line, unless ``strategy.allow_other_market`` (``--allow-other-market``);
  then the run journals an ``other_market`` event. Decisions, orders and fills always carry the
  market's own symbol.
- **In-sample** (backtests, paper replays of a file): trading starts after the file's last bar
  inside the checkpoint's fitted range (``models.provenance.sample_range``), or the run is refused
  when nothing out of sample remains; with ``strategy.allow_in_sample`` (``--allow-in-sample``)
  those bars are traded and the run journals an ``in_sample`` event, and its summary carries
  ``in_sample``. Paper and live on a venue's feed refuse a first bar inside the fitted range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bot.config import MarketConfig
from bot.domain import timeframe_ms
from bot.errors import ModelError
from bot.timeutil import ms_to_iso
from models.provenance import Fitted, check_market, sample_range
from strategies.base import Strategy

Event = tuple[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Guarded:
    """What the guards decided for one market: its first tradable bar, lines for the user, events
    for the journal and the summary's ``in_sample`` entry (None: out of sample)."""

    first: int = 0
    notes: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    in_sample: dict[str, Any] | None = None


def _model(strategy: Strategy) -> str:
    return f"model {strategy.model_id}" if strategy.model_id else "the model"


def guard_market(strategy: Strategy, m: MarketConfig) -> tuple[Fitted | None, Guarded]:
    """The other-market guard (ModelError unless allowed) and the checkpoint's own note."""
    f = strategy.fitted
    if f is None:
        return None, Guarded()
    line = check_market(f, m.symbol, m.timeframe, allow=m.strategy.allow_other_market, model=_model(strategy))
    if line is None:
        return f, Guarded()
    event = ("other_market", {"symbol": m.symbol, "timeframe": m.timeframe, "model_id": strategy.model_id,
                              "fitted_symbol": f.symbol, "fitted_timeframe": f.timeframe})
    return f, Guarded(notes=[line], events=[event])


def guard_file(strategy: Strategy, m: MarketConfig, time: np.ndarray, first: int = 0) -> Guarded:
    """Both guards for a run over a candle file whose bars open at ``time`` (first tradable: ``first``)."""
    f, g = guard_market(strategy, m)
    if f is None:
        return Guarded(first)
    s = sample_range(f, m.symbol, m.timeframe, time, first=first, allow_in_sample=m.strategy.allow_in_sample,
                     model=_model(strategy))
    events = list(g.events)
    info = None
    if s.in_sample:
        info = {"symbol": m.symbol, **s.in_sample}
        events.append(("in_sample", info))
    return Guarded(s.first, [*g.notes, *s.notes], events, info)


def guard_venue(strategy: Strategy, m: MarketConfig, first_open: int, stop_at: int | None) -> Guarded:
    """Both guards for a run on a venue's feed whose first traded bar opens at ``first_open``."""
    f, g = guard_market(strategy, m)
    if f is None:
        return g
    g = Guarded(0, [*([f.note] if f.note else []), *g.notes], g.events)
    f = f.of(m.symbol)  # a multi-asset checkpoint: this market's own fitted range
    if f.end is None or not f.same_market(m.symbol, m.timeframe) or first_open > f.end:
        return g
    if not m.strategy.allow_in_sample:
        raise ModelError(f"{_model(strategy)} was fitted on {f.describe()}: a run from {ms_to_iso(first_open)} "
                         "would trade bars it was fitted on (--allow-in-sample trades them anyway, "
                         "or start after that range)")
    tf = timeframe_ms(m.timeframe)
    last = f.end if stop_at is None else min(f.end, stop_at - tf)
    info = {"symbol": m.symbol, "bars": max(0, (last - first_open) // tf + 1), "from": ms_to_iso(first_open),
            "to": ms_to_iso(last), "fitted": f.describe()}
    note = f"in-sample: the bars up to {info['to']} lie in the range {_model(strategy)} was fitted on"
    return Guarded(0, [*g.notes, note], [*g.events, ("in_sample", info)], info)
