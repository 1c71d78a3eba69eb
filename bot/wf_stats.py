"""Stitched out-of-sample curves and their block-bootstrap intervals (``bot walkforward``).

A strategy's test blocks are compounded in time order: the stitched equity is
``initial x prod(1 + r)`` over every traded bar's return ``r`` (each block's first bar against
the cash it started with). Its total return and Sharpe (annualised by the bar length, ``None``
under :data:`bot.metrics.MIN_ANNUALISE_DAYS`) get 95 % intervals from a moving-block bootstrap:
:data:`RESAMPLES` series of the same length made of random runs of ``block_bars`` consecutive
returns (default: one week of bars, at most a tenth of the series), so a day's volatility
clustering stays inside a block; the generator is seeded, so a rerun prints the same intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bot.metrics import bars_per_year, can_annualise

RESAMPLES = 2000
WEEK_MS = 7 * 86_400_000


@dataclass(frozen=True, slots=True)
class Interval:
    value: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True, slots=True)
class Stitched:
    strategy: str
    seed: int | None
    bars: int
    total_return: Interval
    sharpe: Interval
    max_drawdown: float
    block_bars: int


def sharpe(r: np.ndarray, bar_ms: int) -> float | None:
    sd = float(r.std(ddof=1)) if r.size > 1 else 0.0
    if not can_annualise(int(r.size), bar_ms):
        return None
    return float(r.mean() / sd * math.sqrt(bars_per_year(bar_ms))) if sd > 0 else 0.0


def block_resamples(n: int, block: int, rng: np.random.Generator, count: int = RESAMPLES) -> np.ndarray:
    """Indices (count x n) of moving-block bootstrap series: runs of ``block`` consecutive bars
    from random starts, cut to n."""
    starts = rng.integers(0, n - block + 1, size=(count, -(-n // block)))
    idx = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(count, -1)
    return idx[:, :n]


def stitch(strategy: str, seed: int | None, blocks: list[np.ndarray], *, initial: float, bar_ms: int,
           block_bars: int | None = None, seed_rng: int = 0) -> Stitched:
    r = np.concatenate(blocks) if blocks else np.zeros(0)
    n = int(r.size)
    if n == 0:
        empty = Interval(None, None, None)
        return Stitched(strategy, seed, 0, empty, empty, 0.0, 0)
    curve = initial * np.cumprod(1.0 + r)
    peak = np.maximum.accumulate(np.concatenate(([initial], curve)))
    mdd = float((1.0 - np.concatenate(([initial], curve)) / peak).max())
    block = block_bars or max(1, min(WEEK_MS // bar_ms, n // 10))
    block = max(1, min(block, n))
    idx = block_resamples(n, block, np.random.default_rng(seed_rng))
    sample = r[idx]
    totals = np.prod(1.0 + sample, axis=1) - 1.0
    total = Interval(float(curve[-1] / initial - 1.0), *_pct(totals))
    s = sharpe(r, bar_ms)
    if s is None:
        sh = Interval(None, None, None)
    else:
        sd = sample.std(axis=1, ddof=1)
        ratios = np.where(sd > 0, sample.mean(axis=1) / np.where(sd > 0, sd, 1.0), 0.0)
        sh = Interval(s, *_pct(ratios * math.sqrt(bars_per_year(bar_ms))))
    return Stitched(strategy, seed, n, total, sh, mdd, block)


def _pct(x: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(x, [2.5, 97.5])
    return float(lo), float(hi)
