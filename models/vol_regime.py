"""Volatility regime shown in explanations: low / normal / high realised volatility.

The feature of bar t is the realised volatility of the ``window`` log returns ending at close t
(population standard deviation of log(c[i] / c[i-1]) for i in t-window+1 .. t): it reads closes
[t - window, t] only. The two edges are the terciles of that feature over the TRAINING bars of
the model, fitted once by :func:`fit` and stored in the checkpoint (``meta.extra["vol_regime"]``),
so a label never depends on bars after the model was fitted nor on bars after t.

Why this label and not a trend one: on held-out data (``bench/regime_study.py``, the table in
docs/explanations.md) the three classes differ in forward realised volatility on every shared
data file (volatility clusters) and each holds >= 15 % of the held-out bars on the Bybit files
(not on the calmer Binance 2022-24 period), while the bull / bear / sideways vote of
:mod:`models.regime` shows no consistent difference. No class differs in forward return.

Computed with plain Python sums in a fixed order, so the batch and bar-by-bar paths agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

LABELS: tuple[str, ...] = ("low", "normal", "high")
LOW, NORMAL, HIGH = 0, 1, 2
WINDOW = 24
_THIRD = ("bottom third", "middle third", "top third")


def window_vol(closes: np.ndarray | list[float]) -> float:
    """Realised volatility (std of log returns) of one run of closes (oldest first); NaN if < 3."""
    c = closes.tolist() if isinstance(closes, np.ndarray) else [float(x) for x in closes]
    r = [math.log(b / a) for a, b in zip(c[:-1], c[1:], strict=True) if a > 0 and b > 0]
    if len(r) < 2:
        return math.nan
    mean = math.fsum(r) / len(r)
    return math.sqrt(math.fsum((x - mean) ** 2 for x in r) / len(r))


def realised_vol(close: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Feature of every bar t from closes [t - window, t] (NaN before bar ``window``): causal."""
    c = np.asarray(close, dtype=np.float64)
    out = np.full(c.shape[0], np.nan)
    for t in range(window, c.shape[0]):
        out[t] = window_vol(c[t - window: t + 1])
    return out


@dataclass(frozen=True, slots=True)
class VolRegime:
    """Fitted edges: feature <= low_edge -> low, > high_edge -> high, else normal."""

    window: int
    low_edge: float
    high_edge: float
    fit_bars: int

    def code(self, vol: float) -> int | None:
        if not math.isfinite(vol):
            return None
        return LOW if vol <= self.low_edge else HIGH if vol > self.high_edge else NORMAL

    def codes(self, close: np.ndarray) -> np.ndarray:
        """Code of every bar of ``close`` (-1 where the window is not full yet)."""
        v = realised_vol(close, self.window)
        return np.array([-1 if (k := self.code(x)) is None else k for x in v], dtype=np.int64)

    def explain(self, closes: np.ndarray | list[float]) -> dict[str, str] | None:
        """``{"label", "basis"}`` for the newest bar of ``closes`` (needs ``window + 1`` closes)."""
        tail = closes[-(self.window + 1):]
        c = tail.tolist() if isinstance(tail, np.ndarray) else list(tail)  # Python floats, at once
        if len(c) < self.window + 1:
            return None
        k = self.code(window_vol(c))
        if k is None:
            return None
        return {"label": LABELS[k],
                "basis": f"{self.window}-bar realised vol in the {_THIRD[k]} of the training bars"}

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window, "low_edge": self.low_edge, "high_edge": self.high_edge,
                "fit_bars": self.fit_bars}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> VolRegime | None:
        """From checkpoint metadata; None for a checkpoint trained before the label existed."""
        if not d:
            return None
        return cls(int(d["window"]), float(d["low_edge"]), float(d["high_edge"]), int(d["fit_bars"]))


def fit(close: np.ndarray, end: int, window: int = WINDOW) -> VolRegime:
    """Terciles of the feature over bars [window, end] (the training bars, ``end`` included)."""
    c = np.asarray(close, dtype=np.float64)[: end + 1]
    v = realised_vol(c, window)
    v = v[np.isfinite(v)]
    if v.size < 3:
        raise ValueError(f"too few bars to fit the volatility regime: {c.shape[0]} (window {window})")
    lo, hi = np.quantile(v, [1 / 3, 2 / 3])
    return VolRegime(window, float(lo), float(hi), int(v.size))


def regime_entry(vr: VolRegime | None, close: np.ndarray) -> dict[str, Any]:
    """``{"regime": {"label", "basis"}}`` of the newest of ``close``, or ``{}`` (a checkpoint
    trained before the label existed, or fewer than ``window + 1`` closes)."""
    r = vr.explain(close[-(vr.window + 1):]) if vr is not None else None
    return {"regime": r} if r else {}
