"""Targets: the forward return over ``horizon`` bars, as three classes or as raw returns.

The label of bar t uses close[t + horizon]: it is a *target*, never an input. The last
``horizon`` bars have no label (-1). Classes: 0 = down, 1 = flat, 2 = up.

Two rules (:class:`LabelRule`, ``strategy.params.label``) draw the flat band around zero:

- ``band`` (default): a fixed half-width, at least the round-trip fee (:func:`effective_threshold`);
- ``vol``: ``k`` x the trailing sigma of bar t x sqrt(horizon), where sigma is the standard
  deviation of the ``window`` one-bar log returns ending at close t (:func:`trailing_sigma`):
  bars up to t only, nothing fitted, so "flat" means "small for the current volatility" rather
  than "quiet". No fee floor. Bars without a full sigma window have no label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.errors import ModelError

CLASSES: tuple[str, ...] = ("down", "flat", "up")
DOWN, FLAT, UP = 0, 1, 2
NO_LABEL = -1


class LabelRule(BaseModel):
    """How a forward return becomes a class (``strategy.params.label``); the band's half-width
    stays the strategy's ``threshold`` parameter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["band", "vol"] = "band"
    #: vol: the flat band is +/- k x trailing sigma x sqrt(horizon)
    k: float = Field(0.5, gt=0, le=20)
    #: vol: one-bar log returns in the trailing sigma
    window: int = Field(24, ge=2, le=5000)


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


def trailing_sigma(close: np.ndarray, window: int) -> np.ndarray:
    """Population std of the ``window`` one-bar log returns ending at close t (NaN before bar
    ``window``): reads closes [t - window, t] only."""
    c = np.asarray(close, dtype=np.float64)
    out = np.full(c.shape[0], np.nan)
    if c.shape[0] > window:
        lr = np.log(c[1:] / c[:-1])  # lr[i - 1] = log(c[i] / c[i - 1])
        out[window:] = sliding_window_view(lr, window).std(axis=1)
    return out


def band_of(close: np.ndarray, horizon: int, threshold: float, fee_rate: float,
            rule: LabelRule | None = None) -> np.ndarray | float:
    """Half-width of the flat band per bar: a constant (band) or k x sigma_t x sqrt(h) (vol)."""
    if rule is None or rule.mode == "band":
        return effective_threshold(threshold, fee_rate)
    return rule.k * trailing_sigma(close, rule.window) * math.sqrt(horizon)


def classify_returns(ret: np.ndarray, threshold: np.ndarray | float) -> np.ndarray:
    """Returns -> {0 down, 1 flat, 2 up}; NaN return or NaN band -> -1."""
    r = np.asarray(ret, dtype=np.float64)
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), r.shape)
    lab = np.full(r.shape[0], FLAT, dtype=np.int64)
    lab[r > thr] = UP
    lab[r < -thr] = DOWN
    lab[~(np.isfinite(r) & np.isfinite(thr))] = NO_LABEL
    return lab


def make_labels(close: np.ndarray, horizon: int, threshold: float, fee_rate: float = 0.0,
                rule: LabelRule | None = None) -> np.ndarray:
    """Class of the forward return over ``horizon`` bars (fee-covering fixed band by default)."""
    return classify_returns(forward_returns(close, horizon), band_of(close, horizon, threshold, fee_rate, rule))


def backward_labels(close: np.ndarray, horizon: int, threshold: float, fee_rate: float = 0.0,
                    rule: LabelRule | None = None) -> np.ndarray:
    """Class of the *past* return close[t]/close[t-h]-1 with the same band: known at t (the
    "same as last bar" baseline)."""
    c = np.asarray(close, dtype=np.float64)
    r = np.full(c.shape[0], np.nan)
    if c.shape[0] > horizon:
        r[horizon:] = c[horizon:] / c[:-horizon] - 1.0
    return classify_returns(r, band_of(close, horizon, threshold, fee_rate, rule))


@dataclass(frozen=True, slots=True)
class Labeling:
    """One model's label rule, complete: the rule, the band's threshold, the fee and the horizon.

    Training builds it from ``strategy.params``; ``bot evaluate`` rebuilds it from the
    checkpoint (:meth:`from_meta`), so a model is always scored against the labels it learnt.
    """

    rule: LabelRule
    threshold: float
    fee_rate: float
    horizon: int

    @property
    def lookback(self) -> int:
        """Bars before t the labels of bar t read: the past return of :meth:`backward` and the
        vol rule's trailing sigma (no window or label may span a gap: :mod:`models.gaps`)."""
        return max(self.horizon, self.rule.window if self.rule.mode == "vol" else 0)

    def labels(self, close: np.ndarray) -> np.ndarray:
        return make_labels(close, self.horizon, self.threshold, self.fee_rate, self.rule)

    def backward(self, close: np.ndarray) -> np.ndarray:
        return backward_labels(close, self.horizon, self.threshold, self.fee_rate, self.rule)

    def to_meta(self) -> dict[str, Any]:
        """The rule as ``meta.labels`` records it."""
        out: dict[str, Any] = {"mode": self.rule.mode, "horizon": self.horizon, "fee_rate": self.fee_rate}
        if self.rule.mode == "band":
            return {**out, "threshold": effective_threshold(self.threshold, self.fee_rate)}
        return {**out, "k": self.rule.k, "sigma_window": self.rule.window}

    @classmethod
    def from_meta(cls, labels: dict[str, Any], horizon: int, fee_rate: float) -> Labeling:
        """From a checkpoint's ``meta.labels``; a checkpoint from before the option has a band
        (its stored threshold, else the round-trip fee at ``fee_rate``)."""
        try:
            fee = float(labels.get("fee_rate", fee_rate))
            if labels.get("mode", "band") == "vol":
                rule = LabelRule(mode="vol", k=float(labels["k"]), window=int(labels["sigma_window"]))
                return cls(rule, 0.0, fee, horizon)
            return cls(LabelRule(), float(labels.get("threshold", 2 * fee_rate)), fee, horizon)
        except (KeyError, TypeError, ValueError, ValidationError):
            raise ModelError("checkpoint label rule (meta.labels) is malformed") from None


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
