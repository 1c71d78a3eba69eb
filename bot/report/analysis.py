"""Series derived from a run for plotting: benchmark, drawdown, monthly returns, decimation.

Definitions follow :mod:`bot.metrics` so that what the charts show agrees with the summary
table: the equity curve starts from the initial cash, drawdown is measured against the running
peak including it, buy-and-hold is the close relative to the first journaled close.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from bot.report.data import ReportData

#: With more fills than this, the price chart marks only entries, exits and flips (not every
#: add/reduce of a rebalancing strategy), keeping the page light enough to open.
MAX_MARKERS = 3000
#: Line series longer than this are decimated (min/max per bucket keeps every spike visible).
MAX_LINE_POINTS = 2500


def marker_fills(d: ReportData) -> pd.DataFrame:
    """Fills to mark on the price chart: all of them, or only position changes when there are many."""
    f = d.fills
    if len(f) <= MAX_MARKERS:
        return f
    return f[f["action"].isin(("entry", "exit", "flip"))]


def buy_and_hold(d: ReportData) -> np.ndarray:
    """Equity of holding the asset from the first journaled close with the same initial cash."""
    px = d.equity["price"].to_numpy()
    if not len(px) or px[0] <= 0:
        return np.full(len(px), d.initial_cash)
    return d.initial_cash * px / px[0]


def drawdown(equity: np.ndarray, initial: float) -> np.ndarray:
    """Fraction below the running peak (0 = at a new high), as in :func:`bot.metrics.compute_metrics`."""
    if not len(equity):
        return np.zeros(0)
    curve = np.concatenate(([initial], equity))
    peak = np.maximum.accumulate(curve)
    return (1.0 - curve / peak)[1:]


def monthly_returns(d: ReportData) -> pd.DataFrame:
    """Returns per calendar month (UTC): rows are years, columns 1..12 and ``year``; NaN where no bars.

    Each month compares its last equity mark with the previous month's (the initial cash for the
    first), so compounding every cell gives the run's total return.
    """
    cols = [*range(1, 13), "year"]
    if not d.has_bars:
        return pd.DataFrame(columns=cols, dtype="float64")
    eq = d.equity.set_index("dt")["equity"]
    last = eq.groupby([eq.index.year, eq.index.month]).last()
    prev = np.concatenate(([d.initial_cash], last.to_numpy()[:-1]))
    rets = last.to_numpy() / prev - 1.0
    table = pd.DataFrame(np.nan, index=sorted({y for y, _ in last.index}), columns=cols, dtype="float64")
    for (year, month), r in zip(last.index, rets, strict=True):
        table.loc[year, month] = r
    for year in table.index:
        months = table.loc[year, list(range(1, 13))].dropna().to_numpy()
        table.loc[year, "year"] = float(np.prod(1.0 + months) - 1.0)
    return table


def decimate_idx(y: np.ndarray, max_points: int = MAX_LINE_POINTS) -> np.ndarray:
    """Indices that keep the first, last, minimum and maximum of each bucket of ``y``."""
    n = len(y)
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, max_points // 2)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    keep = [0, n - 1]
    yv = np.nan_to_num(np.asarray(y, dtype=np.float64), nan=0.0)
    for a, b in itertools.pairwise(edges):
        if b <= a:
            continue
        seg = yv[a:b]
        keep.append(a + int(seg.argmin()))
        keep.append(a + int(seg.argmax()))
    return np.unique(np.asarray(keep, dtype=np.int64))


def union_idx(*series: np.ndarray, max_points: int = MAX_LINE_POINTS) -> np.ndarray:
    """Decimation indices that preserve the extremes of every series (same x for all)."""
    if not series or not len(series[0]):
        return np.arange(0)
    return np.unique(np.concatenate([decimate_idx(s, max_points) for s in series]))


def bucket_rows(matrix: np.ndarray, max_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Average consecutive rows into at most ``max_rows`` buckets; returns (matrix, first row index)."""
    n = matrix.shape[0]
    if n <= max_rows:
        return matrix, np.arange(n)
    edges = np.linspace(0, n, max_rows + 1).astype(np.int64)
    out = np.stack([matrix[a:b].mean(axis=0) for a, b in itertools.pairwise(edges) if b > a])
    starts = np.asarray([a for a, b in itertools.pairwise(edges) if b > a])
    return out, starts
