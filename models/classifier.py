"""What the two classifiers (``dsc``, ``rollout``) share: the training data pipeline and the
model card section.

:func:`prepare`: causal features on the whole file -> labels by the model's rule -> windows ending
at every labelled bar whose window and label span no gap (:mod:`models.gaps`) -> chronological
train/val/test split with an embargo of window + horizon bars -> normaliser and volatility-only
baseline fitted on the training windows only. Nothing fitted here reads a bar after the training
part (``tests/test_training_leak.py`` replaces those bars with garbage and checks).

:func:`card_section`: classification scores, the naive baselines, the skill numbers with their
intervals and sentences (:mod:`models.skill`), and a fee-aware signal backtest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bot.errors import ModelError
from models.features import (
    FEATURE_WARMUP,
    Layout,
    Normalizer,
    check_finite,
    compute_features,
    first_window_end,
    make_windows,
)
from models.gaps import scored_ends, usable_ends
from models.labels import FLAT, Labeling, class_balance, forward_returns
from models.metrics import baselines, classification_report, signal_backtest
from models.provenance import Sample, evaluation_sample
from models.skill import VolBaseline, classifier_skill
from models.training import Split, TrainConfig, chronological_split

MIN_SAMPLES = 300
BARS_PER_YEAR = {"1m": 525_600, "5m": 105_120, "15m": 35_040, "1h": 8760, "4h": 2190, "1d": 365}


def decide_class(probs: np.ndarray, prob_threshold: float) -> np.ndarray:
    """The strategies' rule as a class: the top class if its probability passes, else flat."""
    top = probs.argmax(axis=1)
    return np.where(probs.max(axis=1) >= prob_threshold, top, FLAT)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A candle file made ready for a classifier; ``split`` holds positions into ``ends``."""

    feats: np.ndarray          # raw causal features [T, F]
    labels: np.ndarray         # class of every bar (-1 = none)
    ends: np.ndarray           # bar index of each sample's window end
    split: Split
    train_pos: np.ndarray      # the training positions used (the newest max_train_samples)
    fit_end: int               # last bar whose price the fitting saw (a validation label)
    normalizer: Normalizer
    vol_baseline: VolBaseline
    labeling: Labeling
    gap_excluded: int          # windows left out because their window or label spans a gap

    @property
    def y(self) -> np.ndarray:
        return self.labels[self.ends]

    @property
    def majority(self) -> int:
        """The most frequent class of the training windows."""
        return int(np.bincount(self.y[self.train_pos], minlength=3).argmax())

    def windows(self, window: int, layout: Layout) -> np.ndarray:
        return make_windows(self.normalizer.transform(self.feats), self.ends, window, layout)

    def label_meta(self) -> dict[str, Any]:
        """``meta.labels``: the rule, the training majority, the split, class balances, the baseline."""
        y = self.y
        return {**self.labeling.to_meta(), "train_majority": self.majority, "split": self.split.describe(),
                "gap_excluded": self.gap_excluded,
                "train_balance": class_balance(y[self.train_pos])["shares"],
                "test_balance": class_balance(y[self.split.test])["shares"],
                "vol_baseline": self.vol_baseline.to_dict()}


def prepare(data: Any, labeling: Labeling, window: int, tc: TrainConfig, timeframe: str, kind: str) -> Prepared:
    """Features, labels, split and the fitted normaliser of ``data`` (``timeframe`` bars) for a
    ``window``-bar classifier."""
    n = len(data.close)
    h = labeling.horizon
    first = max(first_window_end(window), labeling.lookback)  # the first window with its label
    if n - h - first < MIN_SAMPLES:
        reads = f"; its label reads {labeling.lookback} bars back" if first > first_window_end(window) else ""
        raise ModelError(f"too little data to train {kind}: {n} bars, need at least {first + h + MIN_SAMPLES} "
                         f"(window {window} + feature warm-up {FEATURE_WARMUP} + horizon {h} + {MIN_SAMPLES} "
                         f"samples{reads})")
    feats = compute_features(data)
    check_finite(feats, data.time)
    labels = labeling.labels(data.close)
    ends, gap_excluded = usable_ends(data, timeframe, first, window, h, labeling.lookback)
    ends = ends[labels[ends] >= 0]  # every window has its label by now; kept as a guard
    if ends.size < MIN_SAMPLES:
        raise ModelError(f"too little data to train {kind}: {ends.size} labelled windows without a gap, "
                         f"need {MIN_SAMPLES}")
    split = chronological_split(ends, tc.val_frac, tc.test_frac, embargo=max(tc.embargo, window + h))
    train_pos = split.train[-tc.max_train_samples:] if tc.max_train_samples else split.train
    last_train = int(ends[train_pos[-1]])
    norm = Normalizer.fit(feats[FEATURE_WARMUP: last_train + 1])
    vol = VolBaseline.fit(data.close, ends[train_pos], labels[ends[train_pos]])
    return Prepared(feats, labels, ends, split, train_pos, int(ends[split.val[-1]] + h), norm, vol, labeling,
                    gap_excluded)


@dataclass(frozen=True, slots=True)
class Scoring:
    """Everything a card section needs besides the predictions."""

    labeling: Labeling
    majority: int
    vol_baseline: VolBaseline | None
    prob_threshold: float
    fee_rate: float
    long_only: bool            # no shorts: a spot market, or allow_short off
    bars_per_year: float
    block: int                 # bootstrap block length in windows (window + horizon)


def scoring(labeling: Labeling, majority: int, vol: VolBaseline | None, prob_threshold: float, allow_short: bool,
            fee_rate: float, long_only: bool, timeframe: str, window: int) -> Scoring:
    """The card's scoring rules; intervals use blocks of window + horizon windows (the embargo)."""
    return Scoring(labeling, majority, vol, prob_threshold, fee_rate, long_only or not allow_short,
                   BARS_PER_YEAR.get(timeframe, 8760), window + labeling.horizon)


def evaluated_ends(meta: Any, req: Any) -> tuple[Sample, np.ndarray, list[str]]:
    """``bot evaluate``'s window ends (``req``: a models.training.EvalRequest): from after the
    checkpoint's fitted range (the overlap rule, :func:`models.provenance.evaluation_sample`), none
    whose window or label (by the checkpoint's rule, its trailing sigma included) spans a gap.
    Returns the sample, the ends and the notes (what was skipped and why); ModelError when too few remain."""
    data = req.data
    n, w, h = len(data.close), int(meta.window), int(meta.horizon)
    sample = evaluation_sample(meta, req, first_window_end(w), n - h)
    notes = list(sample.notes)
    if n - h - sample.first < 10:
        raise ModelError(f"too little data to evaluate: {n} bars, need at least {sample.first + h + 10} "
                         f"(window {w} + feature warm-up {FEATURE_WARMUP} + horizon {h})")
    labeling = Labeling.from_meta(meta.labels, h, req.fee_rate)
    ends = scored_ends(data, req.timeframe, max(sample.first, labeling.lookback), w, h, notes, labeling.lookback)
    return sample, ends, notes


def evaluation(meta: Any, probs: np.ndarray, ends: np.ndarray, data: Any, fee_rate: float, long_only: bool,
               timeframe: str) -> dict[str, Any]:
    """``bot evaluate``'s section: ``probs`` of windows ending at ``ends`` scored against the labels of
    the checkpoint's own rule, with the baselines fitted on its training windows."""
    labeling = Labeling.from_meta(meta.labels, int(meta.horizon), fee_rate)
    y = labeling.labels(data.close)[ends]
    ok = y >= 0  # a vol rule has no label before its first full sigma window
    if ok.sum() < 10:
        raise ModelError(f"too little data to evaluate: {int(ok.sum())} labelled windows")
    sc = scoring(labeling, int(meta.labels.get("train_majority", FLAT)),
                 VolBaseline.from_dict(meta.labels.get("vol_baseline")),
                 float(meta.extra.get("prob_threshold", 0.5)), True, fee_rate, long_only, timeframe,
                 int(meta.window))
    section = card_section(y[ok], probs[ok], ends[ok], data, sc)
    section["class_balance"] = class_balance(y[ok])["shares"]
    return section


def card_section(y: np.ndarray, probs: np.ndarray, ends: np.ndarray, data: Any, sc: Scoring) -> dict[str, Any]:
    """Scores of windows ending at ``ends`` with true classes ``y`` and model probabilities ``probs``."""
    close = np.asarray(data.close, dtype=np.float64)
    pred = probs.argmax(axis=1)
    rep = classification_report(y, pred)
    trade = signal_backtest(decide_class(probs, sc.prob_threshold), close, ends, sc.fee_rate,
                            long_only=sc.long_only, bars_per_year=sc.bars_per_year)
    last = sc.labeling.backward(close)[ends]
    base = baselines(y, sc.majority, last)
    vol_pred = None
    if sc.vol_baseline is not None:
        vol_pred = sc.vol_baseline.predict(close, ends)
        vrep = classification_report(y, vol_pred)
        base["volatility_only"] = {**{k: vrep[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")},
                                   **sc.vol_baseline.to_dict()}
    skill = classifier_skill(y, probs[:, 2] - probs[:, 0], forward_returns(close, sc.labeling.horizon)[ends], pred,
                             sc.majority, vol_pred, sc.block, sc.labeling.horizon)
    verdict = skill.pop("verdict")
    return {
        "from": int(data.time[ends[0]]), "to": int(data.time[ends[-1]]),
        **{k: rep[k] for k in ("samples", "accuracy", "balanced_accuracy", "macro_f1", "confusion")},
        "baselines": base,
        "skill": skill,
        "trading_after_fees": trade,
        "verdict": verdict,
    }
