"""Train and evaluate the ``dsc`` classifier (``bot train --strategy dsc``, ``bot evaluate``).

Pipeline: causal features on the whole file -> forward-return labels -> windows ending at every
labelled bar -> chronological train/val/test split with an embargo of window + horizon bars ->
normaliser fitted on training bars -> :func:`models.training.fit` -> model card metrics on the
validation and (unseen) test parts -> checkpoint + card + ONNX export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console

from bot.errors import ConfigError, ModelError
from models.checkpoint import ModelMeta, data_hash, save_checkpoint
from models.dsc import build, count_macs, count_params
from models.features import (
    FEATURE_NAMES,
    FEATURE_WARMUP,
    Normalizer,
    check_finite,
    compute_features,
    first_window_end,
    make_windows,
)
from models.gaps import scored_ends, usable_ends
from models.labels import FLAT, backward_labels, class_balance, class_weights, effective_threshold, make_labels
from models.metrics import baselines, classification_report, signal_backtest
from models.training import (
    EvalRequest,
    TrainConfig,
    TrainRequest,
    chronological_split,
    fit,
    predict,
    softmax,
    walk_forward_splits,
)

FAITHFULNESS_MAX_SAMPLES = 2000  # newest windows used for the deletion test (keeps training short)
BARS_PER_YEAR = {"1m": 525_600, "5m": 105_120, "15m": 35_040, "1h": 8760, "4h": 2190, "1d": 365}


class DSCConfig(BaseModel):
    """Model, label, decision and training settings of ``dsc`` (``strategy.params``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(48, ge=4, le=1024)
    horizon: int = Field(4, ge=1, le=500)
    #: Flat band half-width for labels; raised to the round-trip fee (2 x broker.fee_rate).
    threshold: float = Field(0.0, ge=0, lt=1)
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


def decide_class(probs: np.ndarray, prob_threshold: float) -> np.ndarray:
    """The strategy's rule as a class: the top class if its probability passes, else flat."""
    top = probs.argmax(axis=1)
    return np.where(probs.max(axis=1) >= prob_threshold, top, FLAT)


def _card_section(y: np.ndarray, probs: np.ndarray, ends: np.ndarray, data: Any, cfg: DSCConfig,
                  fee_rate: float, long_only: bool, majority: int, bpy: float) -> dict[str, Any]:
    rep = classification_report(y, probs.argmax(axis=1))
    trade = signal_backtest(decide_class(probs, cfg.prob_threshold), data.close, ends, fee_rate,
                            long_only=long_only or not cfg.allow_short, bars_per_year=bpy)
    last = backward_labels(data.close, cfg.horizon, cfg.threshold, fee_rate)[ends]
    return {
        "from": int(data.time[ends[0]]), "to": int(data.time[ends[-1]]),
        **{k: rep[k] for k in ("samples", "accuracy", "balanced_accuracy", "macro_f1", "confusion")},
        "baselines": baselines(y, majority, last),
        "trading_after_fees": trade,
    }


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
              out: Path, progress: bool = True, console: Console | None = None) -> Path:
    """Train on ``data`` (all of it is split train/val/test), write checkpoint + card + ONNX."""
    n = len(data.close)
    w, h = cfg.window, cfg.horizon
    first = first_window_end(w)
    if n - h - first < 300:
        raise ModelError(f"too little data to train dsc: {n} bars, need at least {first + h + 300} "
                         f"(window {w} + feature warm-up {FEATURE_WARMUP} + horizon {h} + 300 samples)")
    feats = compute_features(data)
    labels = make_labels(data.close, h, cfg.threshold, fee_rate)
    ends, gap_dropped = usable_ends(data, timeframe, first, w, h)
    tc = cfg.train
    split = chronological_split(ends, tc.val_frac, tc.test_frac, embargo=max(tc.embargo, w + h))
    train_pos = split.train[-tc.max_train_samples:] if tc.max_train_samples else split.train
    fit_end = int(ends[split.val[-1]] + h)  # last bar whose price the fitting saw (a val label)
    check_finite(feats, data.time)
    norm = Normalizer.fit(feats[FEATURE_WARMUP: int(ends[train_pos[-1]]) + 1])
    z = norm.transform(feats)
    x = make_windows(z, ends, w, "conv")
    y = labels[ends]
    weights = class_weights(y[train_pos]) if tc.class_weights else None
    hp = cfg.hparams()
    res = fit(lambda: build(cfg.arch, hp), (x[train_pos], y[train_pos]), (x[split.val], y[split.val]), tc,
              class_weights=weights, progress=progress, description=f"train {cfg.arch}", console=console)
    net = res.model
    majority = int(np.bincount(y[train_pos], minlength=3).argmax())
    bpy = BARS_PER_YEAR.get(timeframe, 8760)
    metrics: dict[str, Any] = {}
    for name, pos in (("validation", split.val), ("test", split.test)):
        probs = softmax(predict(net, x[pos]))
        metrics[name] = _card_section(y[pos], probs, ends[pos], data, cfg, fee_rate, long_only, majority, bpy)
    metrics["training"] = {"epochs_run": len(res.history), "best_epoch": res.best_epoch,
                           "best_val_loss": res.best_val_loss, "stopped_early": res.stopped_early,
                           "seconds": round(res.seconds, 1), "params": count_params(net),
                           "macs": count_macs(net, len(FEATURE_NAMES), w)}
    if tc.walk_forward_folds:
        metrics["walk_forward"] = _walk_forward(feats, labels, ends, data, cfg, fee_rate, long_only, bpy,
                                                progress, console)
    from models.attribution import ExplainedConv
    from models.faithfulness import selection

    # Which explanation to store: the deletion test on the VALIDATION windows (never the test part).
    chosen = selection(deletion_table(ExplainedConv(net), x[split.val[-FAITHFULNESS_MAX_SAMPLES:]], tc.seed),
                       "validation")
    metrics["faithfulness_validation"] = chosen["table"]
    eff = effective_threshold(cfg.threshold, fee_rate)
    meta = ModelMeta(
        kind="dsc", hparams=hp, feature_names=list(FEATURE_NAMES), window=w, horizon=h,
        normalizer=norm.to_dict(),
        train_range={"symbol": symbol, "timeframe": timeframe, "start": int(data.time[0]),
                     "end": int(data.time[fit_end]), "bars": fit_end + 1, "fit_end_index": fit_end,
                     "test_start": int(data.time[ends[split.test[0]]]),
                     "test_end": int(data.time[ends[split.test[-1]]]),
                     "source": str(getattr(data, "source", ""))},
        data_hash=data_hash(_slice(data, 0, fit_end + 1)),
        metrics=metrics, train_config=tc.model_dump(),
        labels={"horizon": h, "threshold": eff, "fee_rate": fee_rate, "train_majority": majority,
                "split": split.describe(), "gap_excluded": gap_dropped,
                "train_balance": class_balance(y[train_pos])["shares"],
                "test_balance": class_balance(y[split.test])["shares"]},
        extra={"arch": cfg.arch, "prob_threshold": cfg.prob_threshold, "history": res.history,
               "explain": chosen},
    )
    path = save_checkpoint(out, net, meta)
    from models.dsc_runtime import GRAPHS, explain_onnx_path, export_explain

    for graph in GRAPHS:
        export_explain(ExplainedConv(net), explain_onnx_path(path, graph), w, meta.model_id, graph)
    return path


def _walk_forward(feats: np.ndarray, labels: np.ndarray, ends: np.ndarray, data: Any, cfg: DSCConfig,
                  fee_rate: float, long_only: bool, bpy: float, progress: bool,
                  console: Console | None) -> dict[str, Any]:
    """Expanding-window folds: refit (normaliser + model) per fold, score the next block unseen."""
    tc, w = cfg.train, cfg.window
    folds = walk_forward_splits(ends, tc.walk_forward_folds, max(tc.embargo, w + cfg.horizon), tc.val_frac)
    out: dict[str, Any] = {}
    accs, sharpes = [], []
    for i, sp in enumerate(folds, 1):
        norm = Normalizer.fit(feats[FEATURE_WARMUP: int(ends[sp.train[-1]]) + 1])
        x = make_windows(norm.transform(feats), ends, w, "conv")
        y = labels[ends]
        cw = class_weights(y[sp.train]) if tc.class_weights else None
        r = fit(lambda: build(cfg.arch, cfg.hparams()), (x[sp.train], y[sp.train]), (x[sp.val], y[sp.val]), tc,
                class_weights=cw, progress=progress, description=f"walk-forward {i}/{len(folds)}", console=console)
        probs = softmax(predict(r.model, x[sp.test]))
        maj = int(np.bincount(y[sp.train], minlength=3).argmax())
        sec = _card_section(y[sp.test], probs, ends[sp.test], data, cfg, fee_rate, long_only, maj, bpy)
        accs.append(sec["accuracy"])
        sharpes.append(sec["trading_after_fees"]["sharpe"])
        out[f"fold{i}"] = {"from": sec["from"], "to": sec["to"], "accuracy": sec["accuracy"],
                           "balanced_accuracy": sec["balanced_accuracy"],
                           "majority_accuracy": sec["baselines"]["majority_class"]["accuracy"],
                           "sharpe": sec["trading_after_fees"]["sharpe"]}
    out["mean"] = {"accuracy": float(np.mean(accs)), "sharpe": float(np.mean(sharpes))}
    return out


def _slice(data: Any, start: int, stop: int) -> Any:
    if hasattr(data, "slice"):
        return data.slice(start, stop)
    from types import SimpleNamespace

    cols = ("time", "open", "high", "low", "close", "volume")
    return SimpleNamespace(**{k: getattr(data, k)[start:stop] for k in cols})


def overlap_end(meta: ModelMeta, data: Any) -> int | None:
    """If ``data`` starts with the exact candles the model was fitted on, the index of the last
    such bar (everything up to it is in-sample); else None (another market or period)."""
    tr = meta.train_range
    k = tr.get("fit_end_index")
    if k is None or len(data.close) <= int(k) or int(data.time[0]) != tr.get("start"):
        return None
    return int(k) if data_hash(_slice(data, 0, int(k) + 1)) == meta.data_hash else None


def train(req: TrainRequest) -> Path:
    """``bot train --strategy dsc`` entry point (see ``bot/cli/models.py``)."""
    cfg = parse_config(req.params)
    return train_dsc(req.data, cfg, fee_rate=req.fee_rate, long_only=req.long_only, symbol=req.symbol,
                     timeframe=req.timeframe, out=req.out, progress=req.progress, console=req.console)


def evaluate(req: EvalRequest) -> dict[str, Any]:
    """``bot evaluate`` for dsc checkpoints: card metrics + baselines on any candle file."""
    from models.dsc_runtime import DSCRuntime

    rt = DSCRuntime(req.checkpoint, "torch")
    meta = rt.meta
    data = req.data
    n = len(data.close)
    w, h = rt.window, rt.horizon
    first = first_window_end(w)
    notes: list[str] = []
    start = first
    k = overlap_end(meta, data)
    if k is not None:
        start = max(first, k + 1)
        notes.append(f"this file starts with the model's training data: scoring only bars after "
                     f"bar {k} (out of sample)")
    if n - h - start < 10:
        raise ModelError(f"too little data to evaluate: {n} bars, need at least {start + h + 10} "
                         f"(window {w} + feature warm-up {FEATURE_WARMUP} + horizon {h})")
    feats = compute_features(data)
    ends = scored_ends(data, req.timeframe, start, w, h, notes)
    check_finite(feats, data.time, int(ends[0]) - w + 1)
    z = rt.normalizer.transform(feats)
    x = make_windows(z, ends, w, "conv")
    probs, _ = rt.explain_batched(x)
    deletion = deletion_table(rt.net, x[-FAITHFULNESS_MAX_SAMPLES:])
    lab = meta.labels
    thr = float(lab.get("threshold", 2 * req.fee_rate))
    y = make_labels(data.close, h, thr, 0.0)[ends]
    cfg = DSCConfig(window=w, horizon=h, threshold=thr, prob_threshold=float(meta.extra.get("prob_threshold", 0.5)))
    section = _card_section(y, probs, ends, data, cfg, req.fee_rate, req.long_only,
                            int(lab.get("train_majority", FLAT)), BARS_PER_YEAR.get(req.timeframe, 8760))
    section["class_balance"] = class_balance(y)["shares"]
    return {"model_id": meta.model_id, "checkpoint": str(req.checkpoint), "data": str(getattr(data, "source", "")),
            "metrics": {"evaluated": section}, "deletion": deletion, "notes": notes,
            "selection": meta.extra.get("explain"), "meta": meta.to_dict()}
