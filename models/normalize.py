"""Feature normalisation choices: the fitted z-score (default) or a per-asset rolling z-score.

- ``fitted`` (:class:`models.features.Normalizer`): one mean/std per feature, fitted on the
  training bars only; existing checkpoints use it.
- ``rolling`` (:class:`RollingNormalizer`): each feature at bar t is normalised by the mean and
  std of that same series over the trailing ``norm_window`` rows ``[t - n + 1, t]``: bar t's
  close and nothing later, and nothing of another asset (every asset is normalised over its own
  series). It is what makes BTC and ETH features comparable in one training set. The calendar
  features (hour of day) pass through unchanged. A window needs ``n`` valid feature rows, so
  decisions start ``n - 1`` bars later than with the fitted z-score (:func:`reach`).

The batch path (:meth:`RollingNormalizer.transform`) and the bar-by-bar path
(:meth:`RollingNormalizer.stepper`) reduce the same trailing block with the same NumPy calls.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import BaseModel, ConfigDict, Field

from bot.errors import ModelError
from models.features import FEATURE_NAMES, N_FEATURES, Normalizer

#: Columns passed through unchanged by the rolling z-score (bounded, the same for every asset).
CALENDAR = tuple(i for i, name in enumerate(FEATURE_NAMES) if name.startswith("hour_"))
_ROLLED = np.array([i not in CALENDAR for i in range(N_FEATURES)])


class FeatureNorm(BaseModel):
    """``strategy.params.features``: how features are normalised (``norm``) and over how many bars."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    norm: Literal["fitted", "rolling"] = "fitted"
    #: Trailing rows of the rolling z-score (``norm: rolling``); 720 = 30 days of 1h bars.
    norm_window: int = Field(720, ge=24, le=20_000)


def _scale(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (floored to 1 where flat) over the last axis of ``block`` [..., F, n]."""
    mean = block.mean(axis=-1)
    std = block.std(axis=-1)
    return mean, np.where(std > 1e-12, std, 1.0)


@dataclass(frozen=True, slots=True)
class RollingNormalizer:
    """Per-asset trailing z-score over ``window`` rows, clipped to +/- ``clip``.

    ``mean``/``std`` are the training rows' statistics; they never normalise anything and only
    give the drift watch (:mod:`models.drift`) its reference, as with the fitted z-score.
    """

    window: int
    mean: np.ndarray
    std: np.ndarray
    clip: float = 10.0

    @property
    def extra_bars(self) -> int:
        """Bars before the first normalised row beyond the feature warm-up."""
        return self.window - 1

    def transform(self, rows: np.ndarray) -> np.ndarray:
        """Batch: raw feature rows [T, F] of ONE asset -> float32 [T, F]; a row is NaN until
        ``window`` finite rows end at it. Row t reads rows [t - window + 1, t] only."""
        rows = np.asarray(rows, dtype=np.float64)
        out = np.full(rows.shape, np.nan, dtype=np.float32)
        n = self.window
        if rows.ndim != 2 or rows.shape[0] < n:
            return out
        view = sliding_window_view(rows, n, axis=0)  # [T - n + 1, F, n]: row t - n + 1 .. t
        for s in range(0, view.shape[0], 4096):  # chunks keep the temporaries small
            blk = view[s:s + 4096]
            out[s + n - 1: s + n - 1 + blk.shape[0]] = self._z(blk[..., -1], blk)
        return out

    def _z(self, x: np.ndarray, block: np.ndarray) -> np.ndarray:
        mean, std = _scale(block)
        with np.errstate(invalid="ignore"):
            z = np.where(_ROLLED, np.clip((x - mean) / std, -self.clip, self.clip), x)
            z[~np.all(np.isfinite(block), axis=(-2, -1))] = np.nan
        return z.astype(np.float32)

    def stepper(self) -> RollingStep:
        """Bar-by-bar path: a fresh state that takes one raw row per bar."""
        return RollingStep(self)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "rolling", "window": self.window, "mean": [float(x) for x in self.mean],
                "std": [float(x) for x in self.std], "clip": self.clip}


class RollingStep:
    """The last ``window`` raw rows of one asset; :meth:`__call__` returns the newest row's z-score."""

    __slots__ = ("norm", "_rows")

    def __init__(self, norm: RollingNormalizer) -> None:
        self.norm = norm
        self._rows: deque[np.ndarray] = deque(maxlen=norm.window)

    def __call__(self, raw: np.ndarray) -> np.ndarray | None:
        """Add one raw row; None until ``window`` rows are held."""
        self._rows.append(np.asarray(raw, dtype=np.float64))
        if len(self._rows) < self.norm.window:
            return None
        block = sliding_window_view(np.stack(self._rows), self.norm.window, axis=0)  # [1, F, n], as in transform
        return self.norm._z(block[..., -1], block)[0]


AnyNormalizer = Normalizer | RollingNormalizer


def load_normalizer(d: dict[str, Any]) -> AnyNormalizer:
    """The normaliser a checkpoint stored (``ModelMeta.normalizer``): fitted unless it says rolling."""
    if not isinstance(d, dict) or d.get("kind", "fitted") == "fitted":
        return Normalizer.from_dict(d)
    if d.get("kind") != "rolling":
        raise ModelError(f"checkpoint normalisation kind {d.get('kind')!r} is unknown (fitted or rolling)")
    try:
        return RollingNormalizer(int(d["window"]), np.asarray(d["mean"], dtype=np.float64),
                                 np.asarray(d["std"], dtype=np.float64), float(d.get("clip", 10.0)))
    except (KeyError, TypeError, ValueError):
        raise ModelError("checkpoint normalisation statistics are malformed") from None


def build(cfg: FeatureNorm, fitted: Normalizer) -> AnyNormalizer:
    """The normaliser ``cfg`` asks for; ``fitted`` is the training rows' z-score (the rolling one
    keeps its statistics for the drift watch only)."""
    if cfg.norm == "fitted":
        return fitted
    return RollingNormalizer(cfg.norm_window, fitted.mean, fitted.std, fitted.clip)


def extra_bars(norm: Any) -> int:
    """Bars a normaliser needs beyond the feature warm-up (0 for the fitted z-score)."""
    return int(getattr(norm, "extra_bars", 0))


def reach(window: int, norm: Any) -> int:
    """The window length that the gap, warm-up and sample rules must see: the model's window
    plus the rolling normaliser's extra rows."""
    return int(window) + extra_bars(norm)


def reach_of_meta(meta: Any) -> int:
    """:func:`reach` of a checkpoint's metadata (its window and stored normaliser)."""
    d = meta.normalizer or {}
    return int(meta.window) + (int(d.get("window", 1)) - 1 if d.get("kind") == "rolling" else 0)
