"""Which model windows and labels lie in one contiguous run of bars: none may span a gap.

A gap is a missing bar: two consecutive bars more than one bar apart (zero-volume filler
candles are dropped at load, so they are gaps too). The features of bar t read bars before it
(look-backs of up to 48 bars, EMAs that settle over :data:`models.features.FEATURE_WARMUP`
bars), so a window of ``W`` feature rows ending at bar t is usable only when bars
``[t - FEATURE_WARMUP - W + 1, t]`` are contiguous: after a gap the pipeline starts again, as
at the first bar of a file. A label of horizon ``h`` at bar t is usable only when bar t + h
lies in t's run. Training and evaluation keep only such samples (:meth:`Runs.samples`);
trading asks :func:`window_gap` and goes flat until the window is whole again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bot.domain import timeframe_ms
from bot.errors import ModelError
from bot.timeutil import ms_to_iso
from models.features import first_window_end

REASON = "window spans a gap"


def span(window: int) -> int:
    """Contiguous bars a decision on a ``window``-row window needs: the feature warm-up + the window."""
    return first_window_end(window) + 1


def run_starts(time: np.ndarray, bar_ms: int) -> np.ndarray:
    """For every bar, the index of the first bar of its contiguous run."""
    t = np.asarray(time, dtype=np.int64)
    n = t.shape[0]
    breaks = np.ones(n, dtype=bool)
    if n > 1:
        breaks[1:] = np.diff(t) != bar_ms
    return np.maximum.accumulate(np.where(breaks, np.arange(n), 0)) if n else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Runs:
    """The contiguous runs of one candle series."""

    start: np.ndarray  # [T] index of the first bar of each bar's run

    @classmethod
    def of(cls, data: Any, bar_ms: int) -> Runs:
        return cls(run_starts(np.asarray(data.time), bar_ms))

    def windows_ok(self, ends: np.ndarray, window: int, lookback: int = 0) -> np.ndarray:
        """True where the window ending at ``ends`` (and its feature warm-up, or the ``lookback``
        bars before ``end`` when that is longer) is one run."""
        e = np.asarray(ends, dtype=np.int64)
        return e - self.start[e] >= max(first_window_end(window), int(lookback))

    def labels_ok(self, ends: np.ndarray, horizon: int) -> np.ndarray:
        """True where bar ``end + horizon`` exists and lies in the same run as ``end``."""
        e = np.asarray(ends, dtype=np.int64)
        far = e + horizon
        ok = far < self.start.shape[0]
        ok[ok] = self.start[far[ok]] == self.start[e[ok]]
        return ok

    def scored(self, ends: np.ndarray, window: int, horizon: int = 0, lookback: int = 0) -> np.ndarray:
        """True where neither the window ending at ``ends`` (``lookback``: bars before the end a
        label reads, e.g. a trailing sigma) nor its label spans a gap."""
        e = np.asarray(ends, dtype=np.int64)
        return self.windows_ok(e, window, lookback) & self.labels_ok(e, horizon)

    def samples(self, ends: np.ndarray, window: int, horizon: int = 0,
                lookback: int = 0) -> tuple[np.ndarray, int]:
        """(the ``ends`` whose window and label span no gap, how many were dropped for a gap)."""
        e = np.asarray(ends, dtype=np.int64)
        ok = self.scored(e, window, horizon, lookback)
        return e[ok], int(e.size - np.count_nonzero(ok))


def usable_ends(data: Any, timeframe: str, first: int, window: int, horizon: int,
                lookback: int = 0) -> tuple[np.ndarray, int]:
    """Window ends ``first .. n - horizon - 1`` of ``data`` whose window and label span no gap,
    and how many were dropped for one."""
    n = len(data.close)
    return Runs.of(data, timeframe_ms(timeframe)).samples(np.arange(first, n - horizon), window, horizon, lookback)


def scored_ends(data: Any, timeframe: str, first: int, window: int, horizon: int, notes: list[str],
                lookback: int = 0) -> np.ndarray:
    """``bot evaluate``: the usable window ends (at least 10), a note when a gap left some out."""
    ends, dropped = usable_ends(data, timeframe, first, window, horizon, lookback)
    if dropped:
        notes.append(f"{dropped} windows left out: their window or label spans a gap in the data")
    if ends.size < 10:
        raise ModelError(f"too little data to evaluate: {ends.size} windows without a gap, need 10")
    return ends


def window_gap(time: np.ndarray, bar_ms: int, window: int) -> dict[str, Any] | None:
    """At trading time: the gap inside the newest bar's window (with its feature warm-up), or
    None when those bars are contiguous (or fewer than that were ever seen, with no gap: warm-up).

    O(1) per bar while the data is contiguous; reads the last :func:`span` bars only after a gap.
    """
    n = time.shape[0]
    k = min(n, span(window))
    if k < 2 or int(time[n - 1]) - int(time[n - k]) == (k - 1) * bar_ms:
        return None
    tail = np.asarray(time[n - k:], dtype=np.int64)
    g = int(np.flatnonzero(np.diff(tail) != bar_ms)[-1]) + 1  # first bar after the newest gap
    return {"after": int(tail[g - 1]), "missing_bars": int((tail[g] - tail[g - 1]) // bar_ms - 1),
            "contiguous_bars": k - g, "needs": span(window)}


def gap_explanation(kind: str, gap: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The explanation of a flat decision taken because the window spans a gap."""
    text = (f"{REASON} ({gap['missing_bars']} bars missing after {ms_to_iso(gap['after'])}): flat until "
            f"{gap['needs']} contiguous bars (have {gap['contiguous_bars']})")
    return {"kind": kind, "signal": "flat", "reason": REASON, "gap": gap, "rule": {"text": text}, **extra}
