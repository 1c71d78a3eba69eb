"""Model-card metrics: classification scores, naive baselines and a fee-aware signal backtest.

Pure NumPy so every model kind (and ``bot evaluate``) reports the same numbers the same way.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from models.labels import CLASSES, DOWN, UP


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int = 3) -> np.ndarray:
    """[n, n] counts: rows = true class, columns = predicted class."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return m


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, n: int = 3) -> dict[str, Any]:
    """Accuracy, balanced accuracy (mean recall over present classes), macro F1, confusion matrix."""
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    m = confusion(yt, yp, n)
    total = int(m.sum())
    tp = np.diag(m).astype(np.float64)
    support = m.sum(axis=1).astype(np.float64)
    predicted = m.sum(axis=0).astype(np.float64)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(n), where=denom > 0)
    present = support > 0
    return {
        "samples": total,
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "confusion": m.tolist(),
        "recall": {CLASSES[i] if n == 3 else str(i): float(recall[i]) for i in range(n)},
    }


def signal_backtest(pred: np.ndarray, close: np.ndarray, bar_index: np.ndarray, fee_rate: float,
                    long_only: bool = False, bars_per_year: float = 24 * 365) -> dict[str, Any]:
    """Trade the predicted class bar by bar: up -> long, down -> short (flat if long-only), flat -> 0.

    The position decided at the close of bar t earns close[t+1]/close[t]-1; each change of
    position pays ``fee_rate`` per unit turned over. ``bar_index`` must be consecutive bars.
    A rough, vectorised view of whether the classifier is worth trading after fees.
    """
    p = np.asarray(pred)
    idx = np.asarray(bar_index, dtype=np.int64)
    c = np.asarray(close, dtype=np.float64)
    pos = np.where(p == UP, 1.0, np.where(p == DOWN, 0.0 if long_only else -1.0, 0.0))
    ok = idx + 1 < c.shape[0]
    pos, idx = pos[ok], idx[ok]
    if pos.size == 0:
        return {"total_return": 0.0, "sharpe": 0.0, "trades": 0, "exposure": 0.0}
    nxt = c[idx + 1] / c[idx] - 1.0
    turnover = np.abs(np.diff(np.concatenate(([0.0], pos))))
    r = pos * nxt - fee_rate * turnover
    eq = np.cumprod(1.0 + r)
    sd = r.std()
    peak = np.maximum.accumulate(eq)
    return {
        "total_return": float(eq[-1] - 1.0),
        "buy_and_hold": float(c[idx[-1] + 1] / c[idx[0]] - 1.0),
        "sharpe": float(r.mean() / sd * math.sqrt(bars_per_year)) if sd > 0 else 0.0,
        "max_drawdown": float((1.0 - eq / peak).max()),
        "trades": int((turnover > 0).sum()),
        "exposure": float((pos != 0).mean()),
        "fees_paid_frac": float((fee_rate * turnover).sum()),
    }


def baselines(y_true: np.ndarray, majority_class: int, last_bar_labels: np.ndarray) -> dict[str, Any]:
    """Majority class (of the training split) and "same as last bar" (class of the past h-bar
    return, known at decision time) scored like the model."""
    yt = np.asarray(y_true)
    maj = classification_report(yt, np.full(yt.shape[0], majority_class))
    lb = np.asarray(last_bar_labels)
    ok = lb >= 0
    last = classification_report(yt[ok], lb[ok])
    keep = ("accuracy", "balanced_accuracy", "macro_f1")
    return {"majority_class": {"class": CLASSES[majority_class], **{k: maj[k] for k in keep}},
            "same_as_last_bar": {k: last[k] for k in keep}}
