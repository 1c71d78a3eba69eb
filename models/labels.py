"""Targets: the forward return over ``horizon`` bars, as three classes or as raw returns.

The label of bar t uses close[t + horizon]: it is a *target*, never an input. The last
``horizon`` bars have no label (-1). Classes: 0 = down, 1 = flat, 2 = up.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CLASSES: tuple[str, ...] = ("down", "flat", "up")
DOWN, FLAT, UP = 0, 1, 2
NO_LABEL = -1


def effective_threshold(threshold: float, fee_rate: float) -> float:
    """The flat band half-width: at least the round-trip fee (2 x fee per side)."""
    return max(float(threshold), 2.0 * float(fee_rate))


def forward_returns(close: np.ndarray, horizon: int) -> np.ndarray:
    """close[t+h] / close[t] - 1 (NaN for the last ``horizon`` bars)."""
    c = np.asarray(close, dtype=np.float64)
    out = np.full(c.shape[0], np.nan)
    if c.shape[0] > horizon:
        out[:-horizon] = c[horizon:] / c[:-horizon] - 1.0
    return out


def multi_forward_returns(close: np.ndarray, k: int) -> np.ndarray:
    """[T, k]: column j is the log return from bar t to bar t+j+1 (NaN past the end).

    The regression target of a k-step price-path head (gru_sizer stage 1).
    """
    c = np.asarray(close, dtype=np.float64)
    out = np.full((c.shape[0], k), np.nan)
    lc = np.log(c)
    for j in range(1, k + 1):
        if c.shape[0] > j:
            out[:-j, j - 1] = lc[j:] - lc[:-j]
    return out


def classify_returns(ret: np.ndarray, threshold: float) -> np.ndarray:
    """Returns -> {0 down, 1 flat, 2 up}; NaN -> -1."""
    r = np.asarray(ret, dtype=np.float64)
    lab = np.full(r.shape[0], FLAT, dtype=np.int64)
    lab[r > threshold] = UP
    lab[r < -threshold] = DOWN
    lab[~np.isfinite(r)] = NO_LABEL
    return lab


def make_labels(close: np.ndarray, horizon: int, threshold: float, fee_rate: float = 0.0) -> np.ndarray:
    """Class of the forward return over ``horizon`` bars with a fee-covering flat band."""
    return classify_returns(forward_returns(close, horizon), effective_threshold(threshold, fee_rate))


def backward_labels(close: np.ndarray, horizon: int, threshold: float, fee_rate: float = 0.0) -> np.ndarray:
    """Class of the *past* return close[t]/close[t-h]-1: known at t (the "same as last bar" baseline)."""
    c = np.asarray(close, dtype=np.float64)
    r = np.full(c.shape[0], np.nan)
    if c.shape[0] > horizon:
        r[horizon:] = c[horizon:] / c[:-horizon] - 1.0
    return classify_returns(r, effective_threshold(threshold, fee_rate))


def class_balance(labels: np.ndarray) -> dict[str, Any]:
    """Counts and shares per class (unlabelled rows ignored)."""
    lab = np.asarray(labels)
    lab = lab[lab >= 0]
    total = int(lab.shape[0])
    counts = {name: int(np.sum(lab == i)) for i, name in enumerate(CLASSES)}
    shares = {name: (counts[name] / total if total else 0.0) for name in CLASSES}
    return {"total": total, "counts": counts, "shares": shares}


def class_weights(labels: np.ndarray, n_classes: int = 3) -> np.ndarray:
    """Inverse-frequency weights normalised to mean 1 (absent classes get weight 0)."""
    lab = np.asarray(labels)
    lab = lab[lab >= 0]
    counts = np.bincount(lab, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    nz = w[w > 0]
    return (w / nz.mean()) if nz.size else np.ones(n_classes)
