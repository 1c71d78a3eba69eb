"""Train and evaluate the ``dsc`` classifier (``bot train --strategy dsc``, ``bot evaluate``).

Pipeline: :func:`models.classifier.prepare` (causal features, labels by the rule, windows, a
chronological split with an embargo, normaliser and baselines fitted on training windows) ->
:func:`models.training.fit` -> model card metrics on the validation and (unseen) test parts ->
checkpoint + card + ONNX export.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console

from bot.errors import ConfigError
from models.checkpoint import ModelMeta, save_checkpoint
from models.classifier import Prepared, Scoring, card_section, evaluated_ends, evaluation, prepare_assets, scoring
from models.dsc import build, count_macs, count_params
from models.features import (
    FEATURE_NAMES,
    FEATURE_WARMUP,
    Normalizer,
    check_finite,
    compute_features,
    make_windows,
)
from models.labels import Labeling, LabelRule, class_weights
from models.normalize import FeatureNorm
from models.skill import VolBaseline
from models.training import (
    EvalRequest,
    TrainConfig,
    TrainRequest,
    fit,
    predict,
    softmax,
    walk_forward_splits,
)

FAITHFULNESS_MAX_SAMPLES = 2000  # newest windows used for the deletion test (keeps training short)


class DSCConfig(BaseModel):
    """Model, label, decision and training settings of ``dsc`` (``strategy.params``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(48, ge=4, le=1024)
    horizon: int = Field(4, ge=1, le=500)
    #: Flat band half-width for labels; raised to the round-trip fee (2 x broker.fee_rate).
    threshold: float = Field(0.0, ge=0, lt=1)
    #: The label rule: band (default, the threshold above) or vol (k x trailing sigma).
    label: LabelRule = LabelRule()
    arch: Literal["dsc", "standard_conv"] = "dsc"
    channels: int = Field(24, ge=4, le=512)
    blocks: int = Field(4, ge=1, le=10)
    kernel_size: int = Field(3, ge=1, le=31)
    dropout: float = Field(0.2, ge=0, lt=1)
    #: Trade only when the top class's probability reaches this; otherwise flat.
    prob_threshold: float = Field(0.5, ge=0, le=1)
    allow_short: bool = True
    #: The stored attribution: auto = the checkpoint's most faithful method on validation data.
    explain: Literal["auto", "signed_grad_x_input", "abs_grad_x_input"] = "auto"
    #: onnx (default): ONNX Runtime, exported beside the checkpoint; torch: eager PyTorch.
    backend: Literal["torch", "onnx"] = "onnx"
    #: Feature normalisation: fitted z-score (default) or per-asset rolling (``features.norm: rolling``).
    features: FeatureNorm = FeatureNorm()
    #: Backtests without a checkpoint train on this leading fraction of the data first.
    train_fraction: float = Field(0.6, gt=0.1, lt=0.95)
    train: TrainConfig = TrainConfig(epochs=15, batch_size=256, lr=3e-3, patience=4, threads=1)

    def hparams(self) -> dict[str, Any]:
        return {"n_features": len(FEATURE_NAMES), "channels": self.channels, "blocks": self.blocks,
                "kernel_size": self.kernel_size, "dropout": self.dropout, "n_classes": 3}


def parse_config(params: dict[str, Any]) -> DSCConfig:
    try:
        return DSCConfig.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = "unknown parameter" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"strategy.params.{loc}: {msg} (strategy dsc)") from None


def deletion_table(net: Any, x: np.ndarray, seed: int = 0) -> dict[str, dict[str, Any]]:
    """The deletion test of both gradient methods on conv windows ``x`` [B, F, W]: ``net`` is an
    :class:`models.attribution.ExplainedConv` (or anything with its call signature)."""
    import torch

    from models.explain import GRAD_METHODS, from_grad_x_input
    from models.faithfulness import deletion_test

    def run(xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ps, ats = [], []
        with torch.inference_mode():
            for s in range(0, xc.shape[0], 1024):
                p, a = net(torch.from_numpy(np.ascontiguousarray(xc[s:s + 1024], dtype=np.float32)))
                ps.append(p.numpy().astype(np.float64))
                ats.append(a.numpy().astype(np.float64))
        return np.concatenate(ps), np.concatenate(ats)

    seq = np.ascontiguousarray(x.transpose(0, 2, 1))  # [B, W, F]: the deletion test's layout
    _, attr = run(x)
    gxi = attr.transpose(0, 2, 1)
    methods = {m: from_grad_x_input(gxi, m) for m in GRAD_METHODS}
    return deletion_test(lambda s: run(s.transpose(0, 2, 1))[0], seq, methods, seed=seed)


def train_dsc(data: Any, cfg: DSCConfig, *, fee_rate: float, long_only: bool, symbol: str, timeframe: str,
              out: Path, progress: bool = True, console: Console | None = None,
              more: Sequence[tuple[str, Any]] = ()) -> Path:
    """Train on ``data`` (all of it is split train/val/test), write checkpoint + card + ONNX;
    ``more``: further assets ``(symbol, data)`` pooled with it (split at one calendar cut)."""
    w = cfg.window
    if more and cfg.train.walk_forward_folds:
        raise ConfigError("strategy.params.train.walk_forward_folds: not available with several --data files "
                          "(use `bot walkforward` per market)")
    prep = prepare_assets([(symbol, data), *more], Labeling(cfg.label, cfg.threshold, fee_rate, cfg.horizon), w,
                          cfg.train, timeframe, "dsc", cfg.features)
    tc, split, train_pos = cfg.train, prep.split, prep.train_pos
    x, y = prep.windows(w, "conv"), prep.y
    weights = class_weights(y[train_pos]) if tc.class_weights else None
    hp = cfg.hparams()
    res = fit(lambda: build(cfg.arch, hp), (x[train_pos], y[train_pos]), (x[split.val], y[split.val]), tc,
              class_weights=weights, progress=progress, description=f"train {cfg.arch}", console=console)
    net = res.model
    sc = scoring(prep.labeling, prep.majority, prep.vol_baseline, cfg.prob_threshold, cfg.allow_short, fee_rate,
                 long_only, timeframe, w)
    metrics: dict[str, Any] = prep.sections(
        lambda pos, ends, d: card_section(y[pos], softmax(predict(net, x[pos])), ends, d, sc))
    metrics["training"] = {"epochs_run": len(res.history), "best_epoch": res.best_epoch,
                           "best_val_loss": res.best_val_loss, "stopped_early": res.stopped_early,
                           "seconds": round(res.seconds, 1), "params": count_params(net),
                           "macs": count_macs(net, len(FEATURE_NAMES), w)}
    if tc.walk_forward_folds:
        metrics["walk_forward"] = _walk_forward(prep, data, cfg, sc, progress, console)
    from models.attribution import ExplainedConv
    from models.faithfulness import selection

    # Which explanation to store: the deletion test on the VALIDATION windows (never the test part).
    chosen = selection(deletion_table(ExplainedConv(net), x[split.val[-FAITHFULNESS_MAX_SAMPLES:]], tc.seed),
                       "validation")
    metrics["faithfulness_validation"] = chosen["table"]
    meta = ModelMeta(
        kind="dsc", hparams=hp, feature_names=list(FEATURE_NAMES), window=w, horizon=cfg.horizon,
        normalizer=prep.normalizer.to_dict(),
        **prep.provenance(timeframe),
        metrics=metrics, train_config=tc.model_dump(), labels=prep.label_meta(),
        extra={"arch": cfg.arch, "prob_threshold": cfg.prob_threshold, "history": res.history,
               "explain": chosen},
    )
    path = save_checkpoint(out, net, meta)
    from models.dsc_runtime import GRAPHS, explain_onnx_path, export_explain

    for graph in GRAPHS:
        export_explain(ExplainedConv(net), explain_onnx_path(path, graph), w, meta.model_id, graph)
    return path


def _walk_forward(prep: Prepared, data: Any, cfg: DSCConfig, sc: Scoring, progress: bool,
                  console: Console | None) -> dict[str, Any]:
    """Expanding-window folds: refit (normaliser, baseline, model) per fold, score the next block unseen."""
    tc, w, ends, y = cfg.train, cfg.window, prep.ends, prep.y
    folds = walk_forward_splits(ends, tc.walk_forward_folds, max(tc.embargo, w + cfg.horizon), tc.val_frac)
    out: dict[str, Any] = {}
    accs, sharpes = [], []
    for i, sp in enumerate(folds, 1):
        norm = (prep.normalizer if cfg.features.norm == "rolling"  # nothing fitted: the trailing rows only
                else Normalizer.fit(prep.feats[FEATURE_WARMUP: int(ends[sp.train[-1]]) + 1]))
        x = make_windows(norm.transform(prep.feats), ends, w, "conv")
        cw = class_weights(y[sp.train]) if tc.class_weights else None
        r = fit(lambda: build(cfg.arch, cfg.hparams()), (x[sp.train], y[sp.train]), (x[sp.val], y[sp.val]), tc,
                class_weights=cw, progress=progress, description=f"walk-forward {i}/{len(folds)}", console=console)
        probs = softmax(predict(r.model, x[sp.test]))
        fold_sc = Scoring(**{**{f: getattr(sc, f) for f in sc.__slots__},
                             "majority": int(np.bincount(y[sp.train], minlength=3).argmax()),
                             "vol_baseline": VolBaseline.fit(data.close, ends[sp.train], y[sp.train])})
        sec = card_section(y[sp.test], probs, ends[sp.test], data, fold_sc)
        accs.append(sec["accuracy"])
        sharpes.append(sec["trading_after_fees"]["sharpe"])
        out[f"fold{i}"] = {"from": sec["from"], "to": sec["to"], "accuracy": sec["accuracy"],
                           "balanced_accuracy": sec["balanced_accuracy"],
                           "majority_accuracy": sec["baselines"]["majority_class"]["accuracy"],
                           "directional_auc": sec["skill"]["directional_auc"],
                           "sharpe": sec["trading_after_fees"]["sharpe"]}
    out["mean"] = {"accuracy": float(np.mean(accs)), "sharpe": float(np.mean(sharpes))}
    return out


def train(req: TrainRequest) -> Path:
    """``bot train --strategy dsc`` entry point (see ``bot/cli/models.py``)."""
    cfg = parse_config(req.params)
    return train_dsc(req.data, cfg, fee_rate=req.fee_rate, long_only=req.long_only, symbol=req.symbol,
                     timeframe=req.timeframe, out=req.out, progress=req.progress, console=req.console,
                     more=req.more)


def evaluate(req: EvalRequest) -> dict[str, Any]:
    """``bot evaluate`` for dsc checkpoints: card metrics + baselines on any candle file."""
    from models.dsc_runtime import DSCRuntime

    rt = DSCRuntime(req.checkpoint, "torch")
    meta = rt.meta
    data = req.data
    w = rt.window
    sample, ends, notes = evaluated_ends(meta, req)
    feats = compute_features(data)
    check_finite(feats, data.time, int(ends[0]) - w + 1)
    z = rt.normalizer.transform(feats)
    x = make_windows(z, ends, w, "conv")
    probs, _ = rt.explain_batched(x)
    deletion = deletion_table(rt.net, x[-FAITHFULNESS_MAX_SAMPLES:])
    section = evaluation(meta, probs, ends, data, req.fee_rate, req.long_only, req.timeframe)
    return {"model_id": meta.model_id, "checkpoint": str(req.checkpoint), "data": str(getattr(data, "source", "")),
            "metrics": {"evaluated": section}, "deletion": deletion, "notes": notes, **sample.labels(),
            "selection": meta.extra.get("explain"), "meta": meta.to_dict()}
