"""Feature drift: are the traded data's z-scores still like the training data's (mean 0, std 1)?

A checkpoint normalises features with its training split's mean and std. On a market or period
far from that (a BTC model on SOL), the z-scores it sees have a standard deviation of 2-3 and
the model reads every candle as extreme. :class:`DriftWatch` keeps the running mean and std of
the (clipped) z-scores of every feature row the strategy computes and says **once** when they
drift far: after at least :data:`MIN_ROWS` rows, :data:`MIN_FEATURES` or more features have a
running std outside [1 / :data:`STD_RATIO`, :data:`STD_RATIO`] or a mean beyond
+/- :data:`MEAN_LIMIT`. It is a warning (journaled as a ``feature_drift`` event), never a refusal.

The bar-by-bar path (:meth:`DriftWatch.update`) and the batch path (:meth:`DriftWatch.preload`)
sum the same rows in the same order, so they fire at the same bar.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from models.features import FEATURE_NAMES, FEATURE_WARMUP, Normalizer

MIN_ROWS = 500
STD_RATIO = 2.0
MEAN_LIMIT = 1.5
MIN_FEATURES = 3
WORST = 4  # features named in the warning


def _drifting(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """[..., F] running stats -> [..., F] True where the feature drifts."""
    return (std > STD_RATIO) | (std < 1.0 / STD_RATIO) | (np.abs(mean) > MEAN_LIMIT)


def _badness(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """How far each feature is past its limits (> 1: drifting), to rank the worst."""
    with np.errstate(divide="ignore"):
        return np.maximum(np.abs(np.log(np.maximum(std, 1e-12))) / np.log(STD_RATIO), np.abs(mean) / MEAN_LIMIT)


def report(rows: int, mean: np.ndarray, std: np.ndarray) -> dict[str, Any]:
    """The warning: how many features drift, the worst of them, the rule, in one ``text`` line."""
    bad = _drifting(mean, std)
    order = np.argsort(-_badness(mean, std), kind="stable")[:WORST]
    worst = [{"feature": FEATURE_NAMES[i], "z_mean": round(float(mean[i]), 3), "z_std": round(float(std[i]), 3)}
             for i in order if bad[i]]
    names = ", ".join(f"{w['feature']} (std {w['z_std']:.2f}, mean {w['z_mean']:+.2f})" for w in worst)
    text = (f"feature drift: {int(bad.sum())} of {len(FEATURE_NAMES)} features are far from the checkpoint's "
            f"training statistics over {rows} bars: {names}; the model sees data unlike its training data")
    return {"rows": rows, "drifting": int(bad.sum()), "worst": worst, "text": text,
            "rule": {"min_rows": MIN_ROWS, "std_ratio": STD_RATIO, "mean_limit": MEAN_LIMIT,
                     "min_features": MIN_FEATURES}}


def scan(normalizer: Normalizer, feats: np.ndarray) -> tuple[int, dict[str, Any]] | None:
    """Batch: (index into ``feats`` of the row at which the running stats first drift, the
    warning), or None. Rows before the feature warm-up, or not finite, are not counted."""
    idx = np.flatnonzero(np.all(np.isfinite(feats), axis=1))
    idx = idx[idx >= FEATURE_WARMUP]
    if idx.size < MIN_ROWS:
        return None
    z = np.clip((feats[idx] - normalizer.mean) / normalizer.std, -normalizer.clip, normalizer.clip)
    n = np.arange(1, idx.size + 1, dtype=np.float64)[:, None]
    s1, s2 = np.cumsum(z, axis=0), np.cumsum(z * z, axis=0)
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
    fired = _drifting(mean, std).sum(axis=1) >= MIN_FEATURES
    fired[: MIN_ROWS - 1] = False
    if not fired.any():
        return None
    k = int(np.argmax(fired))
    return int(idx[k]), report(k + 1, mean[k], std[k])


class DriftWatch:
    """Running z-score statistics of one strategy's feature rows; the warning, told once.

    :meth:`update` runs on every bar's order path, so it works on Python floats (15 features:
    a few microseconds, a third of the same arithmetic as NumPy calls), operation for operation
    the IEEE arithmetic of :func:`scan`'s arrays: the two fire at the same bar."""

    __slots__ = ("normalizer", "n", "_s1", "_s2", "_mu", "_sd", "_clip", "_last", "_fire_at", "_warning", "_told")

    def __init__(self, normalizer: Normalizer) -> None:
        self.normalizer = normalizer
        self.n = 0
        f = normalizer.mean.shape[0]
        self._s1, self._s2 = [0.0] * f, [0.0] * f
        self._mu = np.asarray(normalizer.mean, dtype=np.float64).tolist()
        self._sd = np.asarray(normalizer.std, dtype=np.float64).tolist()
        self._clip = float(normalizer.clip)
        self._last: int | None = None
        self._fire_at: int | None = None
        self._warning: dict[str, Any] | None = None
        self._told = False

    def update(self, time: int, raw: np.ndarray) -> None:
        """Count one finite feature row of bar ``time`` (rows already counted are ignored)."""
        if (self._last is not None and time <= self._last) or self._fire_at is not None:
            return
        self._last = time
        s1, s2, mu, sd, c = self._s1, self._s2, self._mu, self._sd, self._clip
        for i, x in enumerate(raw.tolist()):
            z = (x - mu[i]) / sd[i]
            z = c if z > c else (-c if z < -c else z)  # np.clip of a finite value
            s1[i] += z
            s2[i] += z * z
        self.n += 1
        n = self.n
        if n < MIN_ROWS:
            return
        bad = 0
        for a, b in zip(s1, s2, strict=True):
            m = a / n
            v = b / n - m * m
            sd_ = math.sqrt(v) if v > 0.0 else 0.0
            if sd_ > STD_RATIO or sd_ < 1.0 / STD_RATIO or abs(m) > MEAN_LIMIT:  # _drifting, per feature
                bad += 1
        if bad >= MIN_FEATURES:
            mean = np.array(s1) / n
            std = np.sqrt(np.maximum(np.array(s2) / n - mean * mean, 0.0))
            self._fire_at, self._warning = time, report(n, mean, std)

    def preload(self, time: np.ndarray, feats: np.ndarray) -> None:
        """Batch path over a whole file: where the warning fires (the rows are not counted again)."""
        hit = scan(self.normalizer, feats)
        if hit is not None:
            self._fire_at, self._warning = int(time[hit[0]]), hit[1]
        if len(time):
            self._last = int(time[-1])

    def due(self, time: int) -> dict[str, Any] | None:
        """The warning, once, at the first bar at or after the one where it fired."""
        if self._told or self._fire_at is None or time < self._fire_at:
            return None
        self._told = True
        return self._warning
