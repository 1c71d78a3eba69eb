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

from collections.abc import Callable, Sequence
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
from models.normalize import FeatureNorm, reach_of_meta
from models.normalize import build as build_norm
from models.pooled import Part, Pool, last_at, pool, split_counts, stack_rows, with_fit_ends
from models.provenance import Sample, evaluation_sample, pooled_provenance, provenance
from models.skill import VolBaseline, classifier_skill
from models.training import Split, TrainConfig

MIN_SAMPLES = 300
BARS_PER_YEAR = {"1m": 525_600, "5m": 105_120, "15m": 35_040, "1h": 8760, "4h": 2190, "1d": 365}


def decide_class(probs: np.ndarray, prob_threshold: float) -> np.ndarray:
    """The strategies' rule as a class: the top class if its probability passes, else flat."""
    top = probs.argmax(axis=1)
    return np.where(probs.max(axis=1) >= prob_threshold, top, FLAT)


@dataclass(frozen=True, slots=True)
class Prepared:
    """One or several candle files made ready for a classifier; ``split`` holds positions into
    ``ends`` (stacked rows, see :mod:`models.pooled`; one asset: its bar indices)."""

    feats: np.ndarray          # raw causal features [T, F], every asset's rows stacked
    labels: np.ndarray         # class of every row (-1 = none)
    ends: np.ndarray           # stacked row of each sample's window end, in time order
    split: Split
    train_pos: np.ndarray      # the training positions used (the newest max_train_samples)
    fit_end: int               # the first asset's last bar whose price the fitting saw (a validation label)
    normalizer: Any            # Normalizer or models.normalize.RollingNormalizer
    vol_baseline: VolBaseline
    labeling: Labeling
    gap_excluded: int          # windows left out because their window or label spans a gap
    pool: Pool

    @property
    def y(self) -> np.ndarray:
        return self.labels[self.ends]

    @property
    def majority(self) -> int:
        """The most frequent class of the training windows."""
        return int(np.bincount(self.y[self.train_pos], minlength=3).argmax())

    def windows(self, window: int, layout: Layout) -> np.ndarray:
        """Every sample's normalised window; each asset is normalised over its own rows only."""
        z = stack_rows(self.pool.parts, lambda p: self.normalizer.transform(self.feats[p.offset: p.offset + p.n]))
        return make_windows(z, self.ends, window, layout)

    def label_meta(self) -> dict[str, Any]:
        """``meta.labels``: the rule, the training majority, the split, class balances, the baseline."""
        y = self.y
        per_asset = {"split_by_asset": split_counts(self.pool)} if self.pool.multi else {}
        return {**self.labeling.to_meta(), "train_majority": self.majority, "split": self.split.describe(),
                **per_asset, "gap_excluded": self.gap_excluded,
                "train_balance": class_balance(y[self.train_pos])["shares"],
                "test_balance": class_balance(y[self.split.test])["shares"],
                "vol_baseline": self.vol_baseline.to_dict()}

    def provenance(self, timeframe: str) -> dict[str, Any]:
        """``ModelMeta`` keywords: every asset's fitted range and data hash, the test part's range."""
        first, test = self.pool.parts[0], self.split.test
        extra = {"test_start": int(self.pool.time[self.ends[test[0]]]),
                 "test_end": int(self.pool.time[self.ends[test[-1]]])}
        if not self.pool.multi:
            return provenance(first.data, first.fit_end, first.symbol, timeframe, **extra)
        return pooled_provenance([(p.symbol, p.data, p.fit_end) for p in self.pool.parts], timeframe, **extra)

    def sections(self, score: Callable[[np.ndarray, np.ndarray, Any], dict[str, Any]]) -> dict[str, Any]:
        """Card sections ``validation`` and ``test`` of the first asset, ``score(positions, local ends,
        data)``; a multi-asset card has every asset's under ``assets`` too (trading figures need one
        market's consecutive bars, so nothing is scored over the pooled samples)."""
        out: dict[str, Any] = {}
        for name, pos in (("validation", self.split.val), ("test", self.split.test)):
            for i, part, mask, local in self.pool.by_asset(pos):
                sec = score(pos[mask], local, part.data)
                if i == 0:
                    out[name] = sec
                if self.pool.multi:
                    out.setdefault("assets", {}).setdefault(part.symbol, {})[name] = sec
        return out


def prepare(data: Any, labeling: Labeling, window: int, tc: TrainConfig, timeframe: str, kind: str,
            norm: FeatureNorm | None = None, symbol: str = "") -> Prepared:
    """Features, labels, split and the fitted normaliser of ``data`` (``timeframe`` bars) for a
    ``window``-bar classifier."""
    return prepare_assets([(symbol, data)], labeling, window, tc, timeframe, kind, norm)


def _samples(part: Part, labeling: Labeling, window: int, reach_w: int, timeframe: str, kind: str,
             multi: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One asset's raw features, labels, usable window ends (local) and gap-excluded count."""
    data, n, h = part.data, part.n, labeling.horizon
    who = f"{part.symbol}: " if multi else ""
    first = max(first_window_end(reach_w), labeling.lookback)  # the first window with its label
    if n - h - first < MIN_SAMPLES:
        reads = f"; its label reads {labeling.lookback} bars back" if first > first_window_end(reach_w) else ""
        rolling = f" + rolling normalisation {reach_w - window}" if reach_w > window else ""
        raise ModelError(f"{who}too little data to train {kind}: {n} bars, need at least {first + h + MIN_SAMPLES} "
                         f"(window {window} + feature warm-up {FEATURE_WARMUP}{rolling} + horizon {h} + "
                         f"{MIN_SAMPLES} samples{reads})")
    feats = compute_features(data)
    check_finite(feats, data.time)
    labels = labeling.labels(data.close)
    ends, gap_excluded = usable_ends(data, timeframe, first, reach_w, h, labeling.lookback)
    ends = ends[labels[ends] >= 0]  # every window has its label by now; kept as a guard
    if ends.size < MIN_SAMPLES:
        raise ModelError(f"{who}too little data to train {kind}: {ends.size} labelled windows without a gap, "
                         f"need {MIN_SAMPLES}")
    return feats, labels, ends, gap_excluded


def prepare_assets(assets: Sequence[tuple[str, Any]], labeling: Labeling, window: int, tc: TrainConfig,
                   timeframe: str, kind: str, norm: FeatureNorm | None = None) -> Prepared:
    """:func:`prepare` of several assets ``(symbol, data)``: per-asset features, labels and windows,
    pooled and split at one calendar cut; the normaliser and baseline see training rows only."""
    norm = norm or FeatureNorm()
    reach_w = window + (norm.norm_window - 1 if norm.norm == "rolling" else 0)
    h, multi = labeling.horizon, len(assets) > 1
    parts, per = [], []
    offset = 0
    for symbol, data in assets:
        part = Part(symbol, data, offset)
        per.append(_samples(part, labeling, window, reach_w, timeframe, kind, multi))
        parts.append(part)
        offset += part.n
    feats = np.concatenate([f for f, _, _, _ in per])
    labels = np.concatenate([lab for _, lab, _, _ in per])
    pl = with_fit_ends(pool(parts, [e for _, _, e, _ in per], tc, timeframe, max(tc.embargo, window + h)), h)
    split = pl.split
    train_pos = split.train[-tc.max_train_samples:] if tc.max_train_samples else split.train
    t_train = int(pl.time[pl.ends[train_pos[-1]]])  # the last training window's end (calendar)
    rows = stack_rows(pl.parts, lambda p: feats[p.offset + FEATURE_WARMUP: p.offset + last_at(p, t_train) + 1])
    normalizer = build_norm(norm, Normalizer.fit(rows))
    close = stack_rows(pl.parts, lambda p: np.asarray(p.data.close, dtype=np.float64))
    vol = VolBaseline.fit(close, pl.ends[train_pos], labels[pl.ends[train_pos]])
    return Prepared(feats, labels, pl.ends, split, train_pos, pl.parts[0].fit_end, normalizer, vol, labeling,
                    sum(g for _, _, _, g in per), pl)


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
    rw = reach_of_meta(meta)  # the window plus a rolling normaliser's trailing rows
    sample = evaluation_sample(meta, req, first_window_end(rw), n - h)
    notes = list(sample.notes)
    if n - h - sample.first < 10:
        raise ModelError(f"too little data to evaluate: {n} bars, need at least {sample.first + h + 10} "
                         f"(window {w} + feature warm-up {FEATURE_WARMUP} + horizon {h})")
    labeling = Labeling.from_meta(meta.labels, h, req.fee_rate)
    ends = scored_ends(data, req.timeframe, max(sample.first, labeling.lookback), rw, h, notes, labeling.lookback)
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
