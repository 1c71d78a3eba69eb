"""Data for both ``gru_sizer`` stages: features, windows, targets, time-ordered parts.

One :class:`Prepared` holds everything computed once from a candle file: normalised causal
features, the stage-1 samples (a window ending at bar t, target = log returns t -> t+1..t+k),
the chronological split with an embargo, and the bar ranges stage 2 trains and tests on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bot.errors import ModelError
from models.features import (
    FEATURE_NAMES,
    Normalizer,
    compute_features,
    first_window_end,
    make_windows,
)
from models.gaps import Runs
from models.gru_config import GRUSizerConfig
from models.labels import multi_forward_returns
from models.price_encoder import PriceEncoder
from models.regime import regime_codes
from models.training import Split, chronological_split


@dataclass(slots=True)
class Prepared:
    time: np.ndarray
    close: np.ndarray
    z: np.ndarray                 # normalised features [T, F] float32 (NaN during warm-up)
    normalizer: Normalizer
    ends: np.ndarray              # bar index of each stage-1 sample (window end)
    split: Split                  # positions into ``ends``
    targets: np.ndarray           # [T, k] log returns t -> t+j (NaN past the end)
    target_scale: np.ndarray      # [k] std of each target column over the training part
    regime: np.ndarray            # [T] regime code of every bar (causal)
    runs: Runs                    # contiguous runs: no window, target or sequence spans a gap
    stage1_train: np.ndarray      # positions into ``ends`` stage 1 fits (the training part's head)
    gap_excluded: int = 0         # stage-1 samples left out because they span a gap

    @property
    def first_bar(self) -> int:
        return int(self.ends[0])

    def bars(self, part: str) -> tuple[int, int]:
        """Inclusive bar range [lo, hi] of a part for stage 2 (which needs one bar ahead only)."""
        e, s = self.ends, self.split
        if part == "train":
            return int(e[s.train[0]]), int(e[s.train[-1]])
        if part == "stage2":  # after stage 1's last target bar: returns the encoder was never fitted on
            if self.stage1_train.size == s.train.size:
                return self.bars("train")
            first = int(e[self.stage1_train[-1]]) + self.targets.shape[1] + 1
            return first, int(e[s.train[-1]])
        if part == "val":
            return int(e[s.val[0]]), int(e[s.val[-1]])
        if part == "test":
            return int(e[s.test[0]]), int(self.close.shape[0] - 2)
        raise ValueError(part)

    def usable(self, bars: np.ndarray, window: int) -> np.ndarray:
        """True where the window ending at each of ``bars`` spans no gap."""
        return self.runs.windows_ok(bars, window)

    def sequence_starts(self, starts: np.ndarray, window: int, steps: int) -> np.ndarray:
        """The stage-2 sequence starts whose ``steps`` bars and their next-bar returns span no gap."""
        s = np.asarray(starts, dtype=np.int64)
        return s[self.runs.windows_ok(s, window) & self.runs.labels_ok(s, steps)]

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.split.describe())
        out["gap_excluded"] = self.gap_excluded
        for part in ("train", "val", "test"):
            lo, hi = self.bars(part)
            out[f"{part}_bars"] = [int(self.time[lo]), int(self.time[hi])]
        lo, hi = self.bars("stage2")
        out["stage1_train"] = int(self.stage1_train.size)
        out["stage2_bars"] = [int(self.time[lo]), int(self.time[hi])]
        return out


def prepare(data: Any, cfg: GRUSizerConfig, bar_ms: int, normalizer: Normalizer | None = None) -> Prepared:
    """Features, samples and parts of ``data`` (bars ``bar_ms`` apart; samples spanning a gap
    are left out); the normaliser is fitted on the training part."""
    close = np.asarray(data.close, dtype=np.float64)
    n = close.shape[0]
    first = first_window_end(cfg.window)
    last = n - 1 - cfg.horizon
    if last - first < 200:
        raise ModelError(f"too little data to train gru_sizer: {n} bars, need at least "
                         f"{first + cfg.horizon + 201} (window {cfg.window}, warm-up and horizon)")
    runs = Runs.of(data, bar_ms)
    ends, dropped = runs.samples(np.arange(first, last + 1, dtype=np.int64), cfg.window, cfg.horizon)
    embargo = max(cfg.train.embargo, cfg.window + cfg.horizon + cfg.sizer.steps)
    split = chronological_split(ends, cfg.train.val_frac, cfg.train.test_frac, embargo)
    feats = compute_features(data)
    if normalizer is None:
        normalizer = Normalizer.fit(feats[: int(ends[split.train[-1]]) + 1])
    z = normalizer.transform(feats)
    targets = multi_forward_returns(close, cfg.horizon)
    scale = targets[ends[split.train]].std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return Prepared(np.asarray(data.time, dtype=np.int64), close, z, normalizer, ends, split, targets,
                    scale, regime_codes(close, cfg.regime_window), runs, _stage1_part(ends, split, cfg), dropped)


def _stage1_part(ends: np.ndarray, split: Split, cfg: GRUSizerConfig) -> np.ndarray:
    """The training positions stage 1 fits: all but the latest ``stage2_share`` of the training
    bars, which stage 2 then learns from (:meth:`Prepared.bars` "stage2")."""
    train = split.train
    if cfg.stage2_share <= 0:
        return train
    cut = int(ends[train[0]]) + int(round((int(ends[train[-1]]) - int(ends[train[0]])) * (1 - cfg.stage2_share)))
    head = train[ends[train] <= cut]
    gap = cfg.horizon + cfg.window + cfg.sizer.steps  # room for stage-2 sequences after the last target
    if head.size < 200 or int(ends[train[-1]]) - cut < gap + cfg.sizer.steps:
        raise ModelError(f"too little training data for stage2_share {cfg.stage2_share}: "
                         f"{train.size} training windows (set strategy.params.stage2_share=0 to fit both "
                         "stages on the same bars)")
    return head


def stage1_arrays(prep: Prepared, window: int, part: str) -> tuple[np.ndarray, np.ndarray]:
    """(windows [N, W, F] float32, scaled targets [N, k] float32) of one part."""
    pos = prep.stage1_train if part == "train" else getattr(prep.split, part)
    ends = prep.ends[pos]
    x = make_windows(prep.z, ends, window, layout="seq")
    y = (prep.targets[ends] / prep.target_scale).astype(np.float32)
    return x, y


@torch.no_grad()
def encode_bars(encoder: PriceEncoder, z: np.ndarray, bars: np.ndarray, *, batch: int = 512,
                dtype: torch.dtype = torch.float32) -> tuple[np.ndarray, np.ndarray]:
    """Frozen stage-1 outputs for windows ending at ``bars``: (features [N, d], path [N, k]).

    ``path`` is in the encoder's scaled units (multiply by the checkpoint's target scale).
    """
    encoder.eval()
    w = encoder.cfg.window
    feats, paths = [], []
    bars = np.asarray(bars, dtype=np.int64)
    for s in range(0, bars.shape[0], batch):
        x = torch.from_numpy(make_windows(z, bars[s:s + batch], w, layout="seq")).to(dtype)
        f, p = encoder(x)
        feats.append(f.numpy())
        paths.append(p.numpy())
    if not feats:
        d = encoder.cfg.feature_dim
        return np.zeros((0, d)), np.zeros((0, encoder.cfg.horizon))
    return np.concatenate(feats), np.concatenate(paths)


FEATURES = list(FEATURE_NAMES)
