"""Market-regime classifier: bull / bear / sideways by a vote of three simple rules.

Each rule reads only the log returns of one window (all in the past of the decision bar):

1. trend: the window's total log return against its own noise (z = sum / (sigma * sqrt(n)));
2. breadth: the share of up bars;
3. position: the last log price against the window's mean log price, in units of sigma*sqrt(n).

Each rule votes bull, bear or sideways; two equal votes decide, otherwise sideways. The
thresholds are relative to the window's volatility, so one setting works on any timeframe.
Stage 2 uses the regime to pick the benchmark of its relative-return loss and to switch the
opportunity cost on in rising markets; the strategy reports it in every explanation.
"""

from __future__ import annotations

import math

import numpy as np

REGIMES: tuple[str, ...] = ("bear", "sideways", "bull")
BEAR, SIDEWAYS, BULL = 0, 1, 2
#: Benchmark exposure per regime: bull -> buy and hold, bear -> cash, sideways -> half.
BENCHMARK_EXPOSURE: tuple[float, ...] = (0.0, 0.5, 1.0)


def _vote(x: float, hi: float) -> int:
    return BULL if x > hi else BEAR if x < -hi else SIDEWAYS


def classify(log_returns: np.ndarray, z: float = 0.5, breadth: float = 0.05) -> int:
    """Regime code (0 bear, 1 sideways, 2 bull) of one window of log returns (oldest first).

    Computed with plain Python sums in a fixed order so that the batch and the bar-by-bar
    paths give bit-identical answers.
    """
    r = [float(x) for x in log_returns if math.isfinite(x)]
    n = len(r)
    if n < 4:
        return SIDEWAYS
    total = math.fsum(r)
    mean = total / n
    sigma = math.sqrt(math.fsum((x - mean) ** 2 for x in r) / n)
    scale = sigma * math.sqrt(n)
    if scale <= 0.0:
        return SIDEWAYS
    up = sum(1 for x in r if x > 0) / n
    # Log price path relative to the window's first bar; compare its end with its mean.
    path, acc = [], 0.0
    for x in r:
        acc += x
        path.append(acc)
    position = (path[-1] - math.fsum(path) / n) / scale
    votes = [_vote(total / scale, z), _vote(up - 0.5, breadth), _vote(position, z / 2)]
    for code in (BULL, BEAR):
        if votes.count(code) >= 2:
            return code
    return SIDEWAYS


def regime_codes(close: np.ndarray, window: int, **kw: float) -> np.ndarray:
    """Regime of every bar t from the ``window`` log returns ending at t (SIDEWAYS before that).

    Bar t uses closes [t - window, t] only (causal).
    """
    c = np.asarray(close, dtype=np.float64)
    out = np.full(c.shape[0], SIDEWAYS, dtype=np.int64)
    if c.shape[0] <= window:
        return out
    lr = np.log(c[1:] / c[:-1])  # lr[i] = log(c[i+1] / c[i])
    for t in range(window, c.shape[0]):
        out[t] = classify(lr[t - window: t], **kw)
    return out


def name(code: int) -> str:
    return REGIMES[int(code)]
