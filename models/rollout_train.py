"""Train and evaluate the ``rollout`` transformer (``bot train --strategy rollout``, ``bot evaluate``).

The shared pipeline (as ``dsc``): causal features on the whole file -> forward-return labels ->
windows ending at every labelled bar ([B, W, F]) -> chronological train/val/test split with an
embargo of window + horizon bars -> normaliser fitted on training bars -> the generic
:func:`models.training.fit` -> model card on validation and the unseen test part, plus the
deletion test of every attribution method on the validation part (the winner is stored).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from bot.errors import ModelError
from models import vol_regime
from models.checkpoint import ModelMeta, save_checkpoint
from models.faithfulness import deletion_test, selection
from models.features import FEATURE_NAMES, FEATURE_WARMUP, Normalizer, compute_features, first_window_end, make_windows
from models.gaps import scored_ends, usable_ends
from models.labels import FLAT, backward_labels, class_balance, class_weights, effective_threshold, make_labels
from models.metrics import baselines, classification_report, signal_backtest
from models.provenance import evaluation_sample, provenance
from models.rollout import REGIMES
from models.rollout_runtime import (
    KIND,
    RolloutConfig,
    RolloutExplainer,
    decide_class,
    load_rollout,
    parse_config,
)
from models.training import EvalRequest, TrainRequest, chronological_split, fit
from models.transformer import TransformerClassifier

BARS_PER_YEAR = {"1m": 525_600, "5m": 105_120, "15m": 35_040, "1h": 8760, "4h": 2190, "1d": 365}
FAITHFULNESS_MAX_SAMPLES = 2000  # newest windows used for the deletion test (keeps training short)


def deletion_table(explainer: RolloutExplainer, x: np.ndarray, seed: int = 0) -> dict[str, dict[str, Any]]:
    """The deletion test of every method (``models.faithfulness.deletion_test``) on windows ``x``."""
    _, methods = explainer.attributions(x)
    return deletion_test(explainer.predict_probs, x, methods, seed=seed)


def card_section(y: np.ndarray, ex: Any, ends: np.ndarray, data: Any, cfg: RolloutConfig, fee_rate: float,
                 long_only: bool, majority: int, bpy: float) -> dict[str, Any]:
    """Classification scores, the same baselines as ``dsc``, a fee-aware signal backtest, regime mix."""
    rep = classification_report(y, ex.probs.argmax(axis=1))
    trade = signal_backtest(decide_class(ex.probs, cfg.prob_threshold), data.close, ends, fee_rate,
                            long_only=long_only or not cfg.allow_short, bars_per_year=bpy)
    last = backward_labels(data.close, cfg.horizon, cfg.threshold, fee_rate)[ends]
    mix = Counter(REGIMES[int(c)] for c in ex.regime)
    return {
        "from": int(data.time[ends[0]]), "to": int(data.time[ends[-1]]),
        **{k: rep[k] for k in ("samples", "accuracy", "balanced_accuracy", "macro_f1", "confusion")},
        "baselines": baselines(y, majority, last),
        "trading_after_fees": trade,
        "attention": {"mean_recent_share": float(ex.share.mean()),
                      **{f"regime_{r}": mix.get(r, 0) / max(len(ex.regime), 1) for r in REGIMES}},
    }


def train_rollout(data: Any, cfg: RolloutConfig, *, fee_rate: float, long_only: bool, symbol: str,
                  timeframe: str, out: Path, progress: bool = True, console: Console | None = None) -> Path:
    """Train on ``data`` (split train/val/test in time order); write checkpoint + model card."""
    n = len(data.close)
    w, h = cfg.window, cfg.horizon
    first = first_window_end(w)
    if n - h - first < 300:
        raise ModelError(f"too little data to train rollout: {n} bars, need at least {first + h + 300} "
                         f"(window {w} + feature warm-up {FEATURE_WARMUP} + horizon {h} + 300 samples)")
    feats = compute_features(data)
    labels = make_labels(data.close, h, cfg.threshold, fee_rate)
    ends, gap_dropped = usable_ends(data, timeframe, first, w, h)
    tc = cfg.train
    split = chronological_split(ends, tc.val_frac, tc.test_frac, embargo=max(tc.embargo, w + h))
    train_pos = split.train[-tc.max_train_samples:] if tc.max_train_samples else split.train
    fit_end = int(ends[split.val[-1]] + h)  # last bar whose price the fitting saw (a val label)
    norm = Normalizer.fit(feats[FEATURE_WARMUP: int(ends[train_pos[-1]]) + 1])
    z = norm.transform(feats)
    if not np.all(np.isfinite(z[FEATURE_WARMUP:])):
        raise ModelError("NaN features in the training data (check the candle file)")
    x = make_windows(z, ends, w, "seq")
    y = labels[ends]
    weights = class_weights(y[train_pos]) if tc.class_weights else None
    mcfg = cfg.model_config_for(len(FEATURE_NAMES))
    res = fit(lambda: TransformerClassifier(mcfg), (x[train_pos], y[train_pos]), (x[split.val], y[split.val]),
              tc, class_weights=weights, progress=progress, description="train rollout", console=console)
    net = res.model
    explainer = RolloutExplainer(net, cfg, dtype=torch.float32)  # card numbers; trading runs float64
    majority = int(np.bincount(y[train_pos], minlength=3).argmax())
    bpy = BARS_PER_YEAR.get(timeframe, 8760)
    metrics: dict[str, Any] = {}
    for name, pos in (("validation", split.val), ("test", split.test)):
        ex = explainer.explain(x[pos])
        metrics[name] = card_section(y[pos], ex, ends[pos], data, cfg, fee_rate, long_only, majority, bpy)
    # Which explanation to store: the deletion test on the VALIDATION windows (never the test part).
    chosen = selection(deletion_table(explainer, x[split.val[-FAITHFULNESS_MAX_SAMPLES:]], tc.seed), "validation")
    metrics["faithfulness_validation"] = chosen["table"]
    metrics["training"] = {"epochs_run": len(res.history), "best_epoch": res.best_epoch,
                           "best_val_loss": res.best_val_loss, "stopped_early": res.stopped_early,
                           "seconds": round(res.seconds, 1), "threads": tc.threads,
                           "params": int(sum(p.numel() for p in net.parameters()))}
    eff = effective_threshold(cfg.threshold, fee_rate)
    meta = ModelMeta(
        kind=KIND, hparams=mcfg.to_dict(), feature_names=list(FEATURE_NAMES), window=w, horizon=h,
        normalizer=norm.to_dict(),
        **provenance(data, fit_end, symbol, timeframe, test_start=int(data.time[ends[split.test[0]]]),
                     test_end=int(data.time[ends[split.test[-1]]])),
        metrics=metrics, train_config=tc.model_dump(),
        labels={"horizon": h, "threshold": eff, "fee_rate": fee_rate, "train_majority": majority,
                "split": split.describe(), "gap_excluded": gap_dropped,
                "train_balance": class_balance(y[train_pos])["shares"],
                "test_balance": class_balance(y[split.test])["shares"]},
        extra={"prob_threshold": cfg.prob_threshold, "history": res.history, "explain": chosen,
               "vol_regime": vol_regime.fit(np.asarray(data.close), fit_end).to_dict(),
               "rollout": {k: getattr(cfg, k) for k in ("head_fusion", "discard_ratio", "residual_weight",
                                                        "start_layer", "recent_fraction", "momentum_above",
                                                        "reversion_below")}},
    )
    return save_checkpoint(out, net, meta)


def train(req: TrainRequest) -> Path:
    """``bot train --strategy rollout`` entry point (see ``bot/cli/models.py``)."""
    cfg = parse_config(req.params)
    return train_rollout(req.data, cfg, fee_rate=req.fee_rate, long_only=req.long_only, symbol=req.symbol,
                         timeframe=req.timeframe, out=req.out, progress=req.progress, console=req.console)


def evaluate(req: EvalRequest) -> dict[str, Any]:
    """``bot evaluate`` for rollout checkpoints: card metrics, baselines and faithfulness on any file."""
    model, meta, norm = load_rollout(req.checkpoint)
    data = req.data
    n = len(data.close)
    w, h = int(meta.window), int(meta.horizon)
    sample = evaluation_sample(meta, req, first_window_end(w), n - h)
    start, notes = sample.first, list(sample.notes)
    if n - h - start < 10:
        raise ModelError(f"too little data to evaluate: {n} bars, need at least {start + h + 10} "
                         f"(window {w} + feature warm-up {FEATURE_WARMUP} + horizon {h})")
    thr = float(meta.labels.get("threshold", 2 * req.fee_rate))
    cfg = RolloutConfig(window=w, horizon=h, threshold=thr,
                        prob_threshold=float(meta.extra.get("prob_threshold", 0.5)),
                        **meta.extra.get("rollout", {}))
    z = norm.transform(compute_features(data))
    ends = scored_ends(data, req.timeframe, start, w, h, notes)
    x = make_windows(z, ends, w, "seq")
    if not np.all(np.isfinite(x)):
        raise ModelError("NaN features in the data to evaluate (check the candle file)")
    explainer = RolloutExplainer(model, cfg, dtype=torch.float32)
    ex = explainer.explain(x)
    y = make_labels(data.close, h, thr, 0.0)[ends]
    section = card_section(y, ex, ends, data, cfg, req.fee_rate, req.long_only,
                           int(meta.labels.get("train_majority", FLAT)), BARS_PER_YEAR.get(req.timeframe, 8760))
    section["class_balance"] = class_balance(y)["shares"]
    deletion = deletion_table(explainer, x[-FAITHFULNESS_MAX_SAMPLES:])
    return {"model_id": meta.model_id, "checkpoint": str(req.checkpoint), "data": str(getattr(data, "source", "")),
            "metrics": {"evaluated": section}, "deletion": deletion, "notes": notes,
            **sample.labels(),
            "selection": meta.extra.get("explain"), "meta": meta.to_dict()}
