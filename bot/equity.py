"""One market's equity curve: equity, cash and position marked on every bar the engine traded,
handed to the journal in blocks.

The per-bar path only appends three floats; rows are built off the hot path, when a block of
``batch`` bars is due (or the engine syncs: a checkpoint, the end of the run).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from bot.bars import Bars
    from storage.journal import Journal


class EquityCurve:
    """The marks of the bars of ``bars`` the engine traded; the bars shown before trading (history,
    warm-up) are never marked or journaled (:meth:`journaled_to`)."""

    def __init__(self, symbol: str, bars: Bars, journal: Journal) -> None:
        self.symbol = symbol
        self.bars = bars
        self.journal = journal
        self.equity = array("d")
        self.cash = array("d")
        self.position = array("d")
        self._eq, self._cash, self._pos = self.equity.append, self.cash.append, self.position.append
        #: Bar index up to which (inclusive) the curve has been handed to the journal.
        self._synced_to = bars.n - 1
        self._batch = max(1, journal.batch_size)

    def __len__(self) -> int:
        return len(self.equity)

    def journaled_to(self, bar_index: int) -> None:
        """Bars up to ``bar_index`` are journaled already (or never will be: the warm-up)."""
        self._synced_to = bar_index

    def mark(self, bar_index: int, equity: float, cash: float, qty: float) -> None:
        """Bar ``bar_index``'s marks."""
        self._eq(equity)
        self._cash(cash)
        self._pos(qty)
        if bar_index - self._synced_to >= self._batch:
            self.sync(bar_index)

    def mark_block(self, bar_index: int, closes: np.ndarray, cash: float, qty: float,
                   equity: Iterable[float] | None = None) -> None:
        """The marks of ``len(closes)`` quiet bars ending at ``bar_index``: equity = cash + qty x
        close (or the portfolio's ``equity``, one value per bar)."""
        k = len(closes)
        if equity is None:
            self.equity.frombytes((cash + qty * closes).tobytes())
        else:
            self.equity.extend(equity)
        self.cash.extend(array("d", (cash,)) * k)
        self.position.extend(array("d", (qty,)) * k)
        if bar_index - self._synced_to >= self._batch:
            self.sync(bar_index)

    def restore(self, rows: Iterable[Any]) -> None:
        """The journaled marks of a resumed run (rows with equity, cash and position)."""
        for r in rows:
            self._eq(r.equity)
            self._pos(r.position)
            self._cash(r.cash)

    def sync(self, bar_index: int) -> None:
        """Hand the marks not yet journaled, up to bar ``bar_index``, to the journal as one block."""
        n = len(self.equity)
        hi, lo = bar_index + 1, self._synced_to + 1
        if hi <= lo:
            return
        k0 = n - (hi - lo)
        self.journal.record_equity_block(self.symbol, self.bars.time[lo:hi], self.equity[k0:n], self.cash[k0:n],
                                         self.position[k0:n], self.bars.close[lo:hi])
        self._synced_to = hi - 1

    def first_bar(self, bar_index: int) -> int | None:
        """Open time of the first marked bar, the newest being ``bar_index`` (None before any)."""
        n = len(self.equity)
        return self.bars.time.item(bar_index - n + 1) if n else None
