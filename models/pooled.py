"""One or several markets' candles as one classifier training set (``bot train --data A --data B``).

Every asset gets its own causal features, labels and gap-free windows (a window never spans two
assets or a gap: windows are cut from each asset's own rows, then stacked). The samples are then
pooled in time order and split by time: one calendar cut for every asset, with the embargo
counted in bars of the calendar, so no asset's validation or test window precedes another
asset's training windows. A single asset is the same code with the bar index as its clock, so
single-market trainings are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bot.domain import timeframe_ms
from bot.errors import ModelError
from models.training import Split, TrainConfig, chronological_split


@dataclass(frozen=True, slots=True)
class Part:
    """One asset of a training set: its candles and where its rows sit in the stacked arrays."""

    symbol: str
    data: Any
    offset: int        # first row of this asset in the stacked arrays
    fit_end: int = -1  # local index of its last fitted bar (set once the split is known)

    @property
    def n(self) -> int:
        return len(self.data.close)


@dataclass(frozen=True, slots=True)
class Pool:
    """Samples of every asset in time order (``ends``: stacked row of each window's last bar)."""

    parts: tuple[Part, ...]
    ends: np.ndarray
    time: np.ndarray   # stacked open times of every row
    split: Split

    @property
    def multi(self) -> bool:
        return len(self.parts) > 1

    def asset_of(self, pos: np.ndarray) -> np.ndarray:
        """Index into ``parts`` of the samples at positions ``pos``."""
        offsets = np.array([p.offset for p in self.parts])
        return np.searchsorted(offsets, self.ends[pos], side="right") - 1

    def by_asset(self, pos: np.ndarray) -> list[tuple[int, Part, np.ndarray, np.ndarray]]:
        """(asset index, part, which of ``pos`` are its samples (a mask), their local window ends)."""
        who = self.asset_of(pos)
        out = []
        for i, part in enumerate(self.parts):
            mask = who == i
            out.append((i, part, mask, self.ends[pos[mask]] - part.offset))
        return out


def stack_rows(parts: Sequence[Part], per_asset: Callable[[Part], np.ndarray]) -> np.ndarray:
    """``per_asset(part)`` of every asset, stacked along the rows (each computed on its own series)."""
    return np.concatenate([per_asset(p) for p in parts], axis=0)


def pool(parts: Sequence[Part], local_ends: Sequence[np.ndarray], tc: TrainConfig, timeframe: str,
         embargo: int) -> Pool:
    """Pool every asset's samples in time order and split them at one calendar cut."""
    time = np.concatenate([np.asarray(p.data.time, dtype=np.int64) for p in parts])
    ends = np.concatenate([np.asarray(e, dtype=np.int64) + p.offset for p, e in zip(parts, local_ends, strict=True)])
    who = np.concatenate([np.full(len(e), i) for i, e in enumerate(local_ends)])
    order = np.lexsort((who, time[ends]))  # by time, then asset: a single asset keeps its order
    ends = ends[order]
    # The clock the split and its embargo count in: bars of the file (one asset) or of the calendar.
    clock = ends if len(parts) == 1 else time[ends] // timeframe_ms(timeframe)
    split = chronological_split(clock, tc.val_frac, tc.test_frac, embargo=embargo)
    out = Pool(tuple(parts), ends, time, split)
    if out.multi:
        for name, pos in (("training", split.train), ("validation", split.val), ("test", split.test)):
            for _, part, mask, _ in out.by_asset(pos):
                if not mask.any():
                    raise ModelError(f"{part.symbol}: no {name} windows at the common calendar cut (its candles "
                                     "cover too little of the other assets' time range)")
    return out


def last_at(part: Part, t_ms: int) -> int:
    """Local index of ``part``'s last bar opening at or before ``t_ms``."""
    return int(np.searchsorted(np.asarray(part.data.time, dtype=np.int64), t_ms, side="right")) - 1


def with_fit_ends(p: Pool, horizon: int) -> Pool:
    """Each asset's fitted range ends at the same calendar bar: the last bar a validation label reads."""
    e = int(p.ends[p.split.val[-1]])
    t_fit = int(p.time[e + horizon])  # labels stay in their asset's run, so e + horizon is the same asset
    parts = tuple(Part(q.symbol, q.data, q.offset, last_at(q, t_fit)) for q in p.parts)
    return Pool(parts, p.ends, p.time, p.split)


def split_counts(p: Pool) -> dict[str, dict[str, int]]:
    """Samples per asset in each part (multi-asset model cards)."""
    out: dict[str, dict[str, int]] = {}
    for name, pos in (("train", p.split.train), ("val", p.split.val), ("test", p.split.test)):
        for _, part, mask, _ in p.by_asset(pos):
            out.setdefault(part.symbol, {})[name] = int(mask.sum())
    return out
