"""Train and evaluate the ``rollout`` transformer (``bot train --strategy rollout``, ``bot evaluate``).

The shared pipeline (as ``dsc``, :func:`models.classifier.prepare`): causal features, labels by
the rule, windows ending at every labelled bar ([B, W, F]), a chronological split with an
embargo of window + horizon bars, normaliser and baselines fitted on the training windows ->
the generic :func:`models.training.fit` -> model card on validation and the unseen test part,
plus the deletion test of every attribution method on the validation part (the winner is stored).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from bot.errors import ModelError
from models import vol_regime
from models.checkpoint import ModelMeta, save_checkpoint
from models.classifier import Scoring, evaluated_ends, evaluation, prepare_assets, scoring
from models.classifier import card_section as classifier_section
from models.faithfulness import deletion_test, selection
from models.features import FEATURE_NAMES, compute_features, make_windows
from models.labels import Labeling, class_weights
from models.rollout import REGIMES
from models.rollout_runtime import (
    KIND,
    RolloutConfig,
    RolloutExplainer,
    load_rollout,
    parse_config,
)
from models.training import EvalRequest, TrainRequest, fit
from models.transformer import TransformerClassifier

FAITHFULNESS_MAX_SAMPLES = 2000  # newest windows used for the deletion test (keeps training short)


def deletion_table(explainer: RolloutExplainer, x: np.ndarray, seed: int = 0) -> dict[str, dict[str, Any]]:
    """The deletion test of every method (``models.faithfulness.deletion_test``) on windows ``x``."""
    _, methods = explainer.attributions(x)
    return deletion_test(explainer.predict_probs, x, methods, seed=seed)


def attention_summary(ex: Any) -> dict[str, float]:
    """Mean share of the attribution on the newest bars and the regime mix of explained windows."""
    mix = Counter(REGIMES[int(c)] for c in ex.regime)
    return {"mean_recent_share": float(ex.share.mean()),
            **{f"regime_{r}": mix.get(r, 0) / max(len(ex.regime), 1) for r in REGIMES}}


def card_section(y: np.ndarray, ex: Any, ends: np.ndarray, data: Any, sc: Scoring) -> dict[str, Any]:
    """The classifiers' section (:func:`models.classifier.card_section`) plus the attention summary."""
    return {**classifier_section(y, ex.probs, ends, data, sc), "attention": attention_summary(ex)}


def train_rollout(data: Any, cfg: RolloutConfig, *, fee_rate: float, long_only: bool, symbol: str,
                  timeframe: str, out: Path, progress: bool = True, console: Console | None = None,
                  more: Sequence[tuple[str, Any]] = ()) -> Path:
    """Train on ``data`` (split train/val/test in time order); write checkpoint + model card;
    ``more``: further assets ``(symbol, data)`` pooled with it (split at one calendar cut)."""
    w, h = cfg.window, cfg.horizon
    prep = prepare_assets([(symbol, data), *more], Labeling(cfg.label, cfg.threshold, fee_rate, h), w, cfg.train,
                          timeframe, KIND, cfg.features)
    tc, split, train_pos, fit_end = cfg.train, prep.split, prep.train_pos, prep.fit_end
    x, y = prep.windows(w, "seq"), prep.y
    weights = class_weights(y[train_pos]) if tc.class_weights else None
    mcfg = cfg.model_config_for(len(FEATURE_NAMES))
    res = fit(lambda: TransformerClassifier(mcfg), (x[train_pos], y[train_pos]), (x[split.val], y[split.val]),
              tc, class_weights=weights, progress=progress, description="train rollout", console=console)
    net = res.model
    explainer = RolloutExplainer(net, cfg, dtype=torch.float32)  # card numbers; trading runs float64
    sc = scoring(prep.labeling, prep.majority, prep.vol_baseline, cfg.prob_threshold, cfg.allow_short, fee_rate,
                 long_only, timeframe, w)
    metrics: dict[str, Any] = prep.sections(
        lambda pos, ends, d: card_section(y[pos], explainer.explain(x[pos]), ends, d, sc))
    # Which explanation to store: the deletion test on the VALIDATION windows (never the test part).
    chosen = selection(deletion_table(explainer, x[split.val[-FAITHFULNESS_MAX_SAMPLES:]], tc.seed), "validation")
    metrics["faithfulness_validation"] = chosen["table"]
    metrics["training"] = {"epochs_run": len(res.history), "best_epoch": res.best_epoch,
                           "best_val_loss": res.best_val_loss, "stopped_early": res.stopped_early,
                           "seconds": round(res.seconds, 1), "threads": tc.threads,
                           "params": int(sum(p.numel() for p in net.parameters()))}
    meta = ModelMeta(
        kind=KIND, hparams=mcfg.to_dict(), feature_names=list(FEATURE_NAMES), window=w, horizon=h,
        normalizer=prep.normalizer.to_dict(),
        **prep.provenance(timeframe),
        metrics=metrics, train_config=tc.model_dump(), labels=prep.label_meta(),
        extra={"prob_threshold": cfg.prob_threshold, "history": res.history, "explain": chosen,
               # The regime cut-offs: the first asset's fitted bars (one market's volatility scale).
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
                         timeframe=req.timeframe, out=req.out, progress=req.progress, console=req.console,
                         more=req.more)


def evaluate(req: EvalRequest) -> dict[str, Any]:
    """``bot evaluate`` for rollout checkpoints: card metrics, baselines and faithfulness on any file."""
    model, meta, norm = load_rollout(req.checkpoint)
    data = req.data
    w, h = int(meta.window), int(meta.horizon)
    sample, ends, notes = evaluated_ends(meta, req)
    cfg = RolloutConfig(window=w, horizon=h, prob_threshold=float(meta.extra.get("prob_threshold", 0.5)),
                        **meta.extra.get("rollout", {}))
    z = norm.transform(compute_features(data))
    x = make_windows(z, ends, w, "seq")
    if not np.all(np.isfinite(x)):
        raise ModelError("NaN features in the data to evaluate (check the candle file)")
    explainer = RolloutExplainer(model, cfg, dtype=torch.float32)
    ex = explainer.explain(x)
    section = {**evaluation(meta, ex.probs, ends, data, req.fee_rate, req.long_only, req.timeframe),
               "attention": attention_summary(ex)}
    deletion = deletion_table(explainer, x[-FAITHFULNESS_MAX_SAMPLES:])
    return {"model_id": meta.model_id, "checkpoint": str(req.checkpoint), "data": str(getattr(data, "source", "")),
            "metrics": {"evaluated": section}, "deletion": deletion, "notes": notes, **sample.labels(),
            "selection": meta.extra.get("explain"), "meta": meta.to_dict()}
