"""Training both ``gru_sizer`` stages and writing them as one checkpoint family.

- Stage 1 (price encoder) is plain supervised regression: it reuses the shared loop
  :func:`models.training.fit` with a selectable MSE/MAE/Huber loss on the scaled path.
- Stage 2 (GRU sizer) has a recurrent, non-supervised objective, so it has its own loop here:
  stage 1 frozen (eval mode, ``requires_grad`` off, features computed once under no_grad),
  random T-step sequences, annealed Gumbel temperature, gradient accumulation, optional AMP
  (bf16 autocast, only on a GPU), early stopping on the validation objective with argmax
  positions, and the shared seeding helper.

``bot train --strategy gru_sizer`` calls :func:`train`; ``--stage 2`` retrains only the sizer
on top of the stage-1 weights already in the checkpoint.
"""

from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from bot.domain import timeframe_ms
from bot.errors import ModelError
from models import vol_regime
from models.checkpoint import ModelMeta, load_checkpoint, save_checkpoint
from models.features import N_FEATURES, Normalizer, compute_features, first_window_end
from models.gaps import Runs, scored_ends
from models.gru_config import GRUSizerConfig, Stage2Train, parse_config
from models.gru_data import FEATURES, Prepared, encode_bars, prepare, stage1_arrays
from models.gru_eval import exposure_backtest, price_metrics, sizer_levels, sizer_sections
from models.gru_explain import deletion_sections, explanation_meta, held_back_test
from models.labels import multi_forward_returns
from models.price_encoder import EncoderConfig, PathHead, PriceEncoder, PricePathLoss
from models.progress import TrainingBar
from models.provenance import evaluation_sample, fitted_of, provenance, widen
from models.sizer import PositionSizer, SizerConfig, sizer_loss, temperature
from models.skill import VOL_WINDOW, fit_sigma_ref
from models.training import EvalRequest, FitResult, TrainRequest, fit, predict, set_seed

KIND = "gru_sizer"


def train_stage1(prep: Prepared, cfg: GRUSizerConfig, *, progress: bool = False,
                 console: Console | None = None) -> tuple[PriceEncoder, FitResult]:
    """Fit the price encoder on the training part; early stopping on the validation part."""
    enc_cfg = cfg.encoder_config(N_FEATURES)
    xtr, ytr = stage1_arrays(prep, cfg.window, "train")
    if cfg.train.max_train_samples and xtr.shape[0] > cfg.train.max_train_samples:
        xtr, ytr = xtr[-cfg.train.max_train_samples:], ytr[-cfg.train.max_train_samples:]  # most recent
    xva, yva = stage1_arrays(prep, cfg.window, "val")
    res = fit(lambda: PathHead(PriceEncoder(enc_cfg)), (xtr, ytr), (xva, yva), cfg.train,
              task="regression", loss_fn=PricePathLoss(cfg.price_loss), progress=progress,
              description="stage 1: price encoder", console=console)
    return res.model.encoder, res


def stage1_metrics(encoder: PriceEncoder, prep: Prepared, window: int, part: str = "test") -> dict[str, Any]:
    x, _ = stage1_arrays(prep, window, part)
    pred = predict(PathHead(encoder), x) * prep.target_scale
    actual = prep.targets[prep.ends[getattr(prep.split, part)]]
    return price_metrics(pred, actual, block=window + encoder.cfg.horizon)


def sigma_ref(prep: Prepared) -> float:
    """The volatility-only sizer's target: median trailing volatility over the training bars."""
    return fit_sigma_ref(prep.close, *prep.bars("train"))


def freeze(encoder: PriceEncoder) -> PriceEncoder:
    """Stage 1 as stage 2 sees it: eval mode (no dropout) and no parameter takes a gradient."""
    encoder.eval()
    encoder.requires_grad_(False)
    encoder.zero_grad(set_to_none=True)  # drop stage-1 leftovers: any gradient now would be a bug
    return encoder


def _device(t: Stage2Train) -> torch.device:
    if t.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if t.device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("train2.device is cuda but no GPU is available")
    return torch.device(t.device)


def train_stage2(encoder: PriceEncoder, prep: Prepared, cfg: GRUSizerConfig, fee: float, *,
                 progress: bool = False, console: Console | None = None) -> tuple[PositionSizer, dict[str, Any]]:
    """Train the sizer on top of the frozen encoder; returns (sizer, training report)."""
    t = cfg.train2
    t0 = time.perf_counter()
    old_threads = torch.get_num_threads()
    if t.threads:
        torch.set_num_threads(t.threads)
    try:
        freeze(encoder)
        set_seed(t.seed)
        dev = _device(t)
        use_amp = t.amp and dev.type == "cuda"
        lo, hi = prep.first_bar, prep.close.shape[0] - 2
        all_bars = np.arange(lo, hi + 1)
        feats, _ = encode_bars(encoder, prep.z, all_bars)
        nxt = prep.close[all_bars + 1] / prep.close[all_bars] - 1.0
        xf = torch.from_numpy(feats.astype(np.float32)).to(dev)
        rr = torch.from_numpy(nxt.astype(np.float32)).to(dev)
        rg = torch.from_numpy(prep.regime[all_bars]).to(dev)
        steps = cfg.sizer.steps
        scfg = cfg.sizer_config(encoder.cfg.feature_dim, fee)
        sizer = PositionSizer(scfg).to(dev)
        opt = torch.optim.AdamW(sizer.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        tr_lo, tr_hi = prep.bars("stage2")  # bars stage 1 was not fitted on
        va_lo, va_hi = prep.bars("val")
        w = encoder.cfg.window
        starts = prep.sequence_starts(np.arange(tr_lo, tr_hi - steps + 2, t.stride), w, steps) - lo
        vstarts = prep.sequence_starts(np.arange(va_lo, va_hi - steps + 2, steps), w, steps) - lo
        if starts.size < 1 or vstarts.size < 1:
            raise ModelError(f"too little data for {steps}-step sizer sequences")
        offs = torch.arange(steps, device=dev)
        burn_ok = _burn_in_ok(prep, starts + lo, lo, w, steps, dev)
        gen = torch.Generator().manual_seed(t.seed)
        best = {"val_loss": float("inf"), "epoch": 0, "state": copy.deepcopy(sizer.state_dict())}
        history: list[dict[str, float]] = []
        bad = 0
        batches = (starts.size + t.batch_size - 1) // t.batch_size
        with TrainingBar("stage 2: GRU sizer", t.epochs, batches, enabled=progress, console=console) as bar:
            for epoch in range(1, t.epochs + 1):
                tau = temperature(scfg, (epoch - 1) / max(1, t.epochs - 1))
                sizer.train()
                perm = torch.from_numpy(starts)[torch.randperm(starts.size, generator=gen)].to(dev)
                total, nb = 0.0, 0
                opt.zero_grad(set_to_none=True)
                for k, s in enumerate(range(0, perm.numel(), t.batch_size)):
                    idx = perm[s:s + t.batch_size, None] + offs
                    held = _held(sizer, xf, idx, burn_ok[perm[s:s + t.batch_size]])
                    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else nullcontext()
                    with ctx:
                        pos, _ = sizer(xf[idx], tau=tau, prev=held)
                    loss, _parts = sizer_loss(pos.float(), rr[idx], rg[idx], scfg, prev=held)
                    (loss / t.accum_steps).backward()
                    if (k + 1) % t.accum_steps == 0 or s + t.batch_size >= perm.numel():
                        if t.grad_clip > 0:
                            torch.nn.utils.clip_grad_norm_(sizer.parameters(), t.grad_clip)
                        opt.step()
                        opt.zero_grad(set_to_none=True)
                    total += float(loss.detach())
                    nb += 1
                    bar.batch()
                vloss, vparts = _val_loss(sizer, xf, rr, rg, vstarts, offs, scfg)
                history.append({"epoch": epoch, "tau": tau, "train_loss": total / max(nb, 1),
                                "val_loss": vloss, **{f"val_{k}": v for k, v in vparts.items()}})
                if vloss < best["val_loss"] - 1e-5:
                    best = {"val_loss": vloss, "epoch": epoch, "state": copy.deepcopy(sizer.state_dict())}
                    bad = 0
                else:
                    bad += 1
                bar.epoch(epoch, f"tau {tau:.2f}  train {total / max(nb, 1):.4f}  val {vloss:.4f}  "
                                 f"best@{best['epoch']}")
                if bad >= t.patience:
                    bar.stop()
                    break
        sizer.load_state_dict(best["state"])
        sizer = sizer.cpu().eval()
        report = {"best_epoch": best["epoch"], "best_val_loss": best["val_loss"], "epochs_run": len(history),
                  "history": history, "seconds": time.perf_counter() - t0, "amp_used": use_amp,
                  "device": str(dev), "sequences_per_epoch": int(starts.size)}
        return sizer, report
    finally:
        torch.set_num_threads(old_threads)


def _burn_in_ok(prep: Prepared, starts: np.ndarray, lo: int, window: int, steps: int,
                dev: torch.device) -> torch.Tensor:
    """Per bar (relative to ``lo``): 1 where the ``steps`` bars before a sequence starting there
    can be traded (inside the data, no gap), else 0: the bot was flat there."""
    ok = np.zeros(prep.close.shape[0] - lo, dtype=np.float32)
    before = starts - steps
    good = before >= lo
    good[good] = prep.runs.windows_ok(before[good], window) & prep.runs.labels_ok(before[good], steps)
    ok[starts[good] - lo] = 1.0
    return torch.from_numpy(ok).to(dev)


@torch.no_grad()
def _held(sizer: PositionSizer, xf: torch.Tensor, idx: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """The position held when each sequence (rows of ``idx``) starts, as a trading-time restart
    carries it: the sizer's own argmax recurrence over the ``steps`` bars before, from flat (0
    where those bars cannot be traded). The first step then pays for leaving it."""
    before = (idx - idx.shape[1]).clamp(min=0)
    pos, _ = sizer(xf[before], tau=None)
    return pos[:, -1] * ok


@torch.no_grad()
def _val_loss(sizer: PositionSizer, xf: torch.Tensor, rr: torch.Tensor, rg: torch.Tensor,
              vstarts: np.ndarray, offs: torch.Tensor, scfg: SizerConfig) -> tuple[float, dict[str, float]]:
    """Objective on consecutive non-overlapping validation sequences with trading-time (argmax)
    positions, each starting from the position the one before ended with, as when trading."""
    sizer.eval()
    idx = torch.from_numpy(vstarts).to(xf.device)[:, None] + offs
    held = torch.zeros(1, dtype=xf.dtype, device=xf.device)
    rows, starts = [], []
    for i in range(idx.shape[0]):
        starts.append(held)
        pos, _ = sizer(xf[idx[i: i + 1]], tau=None, prev=held)
        rows.append(pos)
        held = pos[:, -1]
    loss, parts = sizer_loss(torch.cat(rows), rr[idx], rg[idx], scfg, prev=torch.cat(starts))
    return float(loss), parts


def card_metrics(encoder: PriceEncoder, sizer: PositionSizer | None, prep: Prepared, cfg: GRUSizerConfig,
                 fee: float, timeframe: str) -> dict[str, Any]:
    """Out-of-sample (test part) numbers after fees: price head vs random walk, sizer vs baselines."""
    out: dict[str, Any] = {"price_head_test": stage1_metrics(encoder, prep, cfg.window, "test")}
    if sizer is None:
        return out
    bar_ms = timeframe_ms(timeframe)
    bpy = 365 * 86_400_000 / bar_ms
    usable = prep.usable(np.arange(prep.close.shape[0]), cfg.window)
    for part in ("val", "test"):
        lo, hi = prep.bars(part)
        bars = np.arange(lo, hi + 1)
        levels = sizer_levels(encoder, sizer, prep.z, prep.time, bars, bar_ms, prep.first_bar, usable)
        pos = levels / 10.0
        out[f"sizer_{part}"] = {**exposure_backtest(pos, prep.close, bars, fee, bpy),
                                "level_hist": np.bincount(levels, minlength=11).tolist()}
        out[f"buy_and_hold_{part}"] = exposure_backtest(np.ones_like(pos), prep.close, bars, fee, bpy)
    out["half_exposure_test"] = exposure_backtest(np.full_like(pos, 0.5), prep.close, bars, fee, bpy)
    out.update(sizer_sections(pos, prep.close, bars, fee, bpy, cfg.window + cfg.horizon, sigma_ref(prep),
                              prep.runs.scored(bars, cfg.window, 1), "_test"))
    return out


def _meta(cfg: GRUSizerConfig, enc: EncoderConfig, scfg: SizerConfig | None, norm: Normalizer,
          prep: Prepared, data: Any, req: TrainRequest, metrics: dict[str, Any],
          stage1_report: dict[str, Any], stage2_report: dict[str, Any] | None,
          explanation: dict[str, Any] | None, prov: dict[str, Any]) -> ModelMeta:
    return ModelMeta(
        kind=KIND,
        hparams={"encoder": enc.to_dict(), "sizer": scfg.to_dict() if scfg else None,
                 "regime_window": cfg.regime_window, "price_loss": cfg.price_loss},
        feature_names=FEATURES, window=cfg.window, horizon=cfg.horizon, normalizer=norm.to_dict(),
        **prov, metrics=metrics,
        train_config={**cfg.train.model_dump(), "stage2": cfg.train2.model_dump()},
        labels={"target": "log return t -> t+1..t+k", "target_scale": prep.target_scale.tolist(),
                "fee_rate": req.fee_rate, "vol_baseline": {"window": VOL_WINDOW, "sigma_ref": sigma_ref(prep)}},
        extra={"stage1": stage1_report, "stage2": stage2_report, "explanation": explanation,
               "vol_regime": vol_regime.fit(np.asarray(data.close), prep.bars("train")[1]).to_dict()},
    )


def train_family(data: Any, cfg: GRUSizerConfig, req: TrainRequest, *,
                 base: Path | None = None) -> tuple[PriceEncoder, PositionSizer | None, Prepared, ModelMeta]:
    """Train stage 1 (unless ``base`` holds it) and stage 2 (unless ``cfg.stage == 1``)."""
    if base is not None:
        ck = load_checkpoint(base, kind=KIND, feature_names=FEATURES, window=cfg.window, horizon=cfg.horizon)
        encoder = ck.load_into("stage1", PriceEncoder(EncoderConfig.from_dict(ck.meta.hparams["encoder"])))
        norm = Normalizer.from_dict(ck.meta.normalizer)
        prep = prepare(data, cfg, timeframe_ms(req.timeframe), normalizer=norm)
        prep.target_scale = np.asarray(ck.meta.labels["target_scale"], dtype=np.float64)
        s1_report = dict(ck.meta.extra.get("stage1") or {})
        s1_report["reused_from"] = str(base)
        base_fitted = fitted_of(ck.meta)
    else:
        base_fitted = None
        prep = prepare(data, cfg, timeframe_ms(req.timeframe))
        encoder, res = train_stage1(prep, cfg, progress=req.progress, console=req.console)
        s1_report = {"best_epoch": res.best_epoch, "best_val_loss": res.best_val_loss,
                     "epochs_run": len(res.history), "seconds": res.seconds, "history": res.history}
        norm = prep.normalizer
    sizer, s2_report = None, None
    if cfg.stage != 1:
        sizer, s2_report = train_stage2(encoder, prep, cfg, req.fee_rate, progress=req.progress,
                                        console=req.console)
    metrics = card_metrics(encoder, sizer, prep, cfg, req.fee_rate, req.timeframe)
    explanation = None
    if sizer is not None:  # rank the attribution methods on validation windows; report the test part
        tables = {}
        usable = prep.usable(np.arange(prep.close.shape[0]), cfg.window)
        for part in ("val", "test"):
            lo, hi = prep.bars(part)
            tables[part] = held_back_test(encoder, sizer, prep.z, prep.time, np.arange(lo, hi + 1),
                                          timeframe_ms(req.timeframe), prep.first_bar, usable)
        explanation = explanation_meta(tables["val"])
        for part, table in tables.items():
            metrics.update(deletion_sections(table, f"deletion_{part}"))
    # Fitted: up to the last bar a validation target reads (stage 1: + horizon; the sizer: + 1).
    fit_end = prep.bars("val")[1] + (1 if base is not None else cfg.horizon)
    prov = provenance(data, fit_end, req.symbol, req.timeframe, **prep.describe())
    if base_fitted is not None:  # the reused encoder was fitted on the base checkpoint's bars too
        prov["fitted"] = widen(prov["fitted"], base_fitted)
    meta = _meta(cfg, encoder.cfg, sizer.cfg if sizer else None, norm, prep, data, req, metrics,
                 s1_report, s2_report, explanation, prov)
    return encoder, sizer, prep, meta


def train(req: TrainRequest) -> Path:
    """``bot train --strategy gru_sizer [--stage 1|2]``: write the checkpoint family and card.

    ``--stage 2`` (``strategy.params.stage=2``) keeps the stage-1 weights of the checkpoint at
    ``req.out`` and retrains the sizer only.
    """
    cfg = parse_config(req.params)
    encoder, sizer, _prep, meta = train_family(req.data, cfg, req, base=req.out if cfg.stage == 2 else None)
    modules: dict[str, torch.nn.Module] = {"stage1": encoder}
    if sizer is not None:
        modules["stage2"] = sizer
    return save_checkpoint(req.out, modules, meta)


def load_family(path: str | Path) -> tuple[PriceEncoder, PositionSizer, Normalizer, np.ndarray, ModelMeta]:
    """A trained checkpoint ready to trade: (encoder, sizer, normaliser, target scale, meta)."""
    ck = load_checkpoint(path, kind=KIND, feature_names=FEATURES)
    meta = ck.meta
    if "stage2" not in ck.states or not meta.hparams.get("sizer"):
        raise ModelError(f"checkpoint {path} holds stage 1 only; train the sizer with "
                         "`bot train --strategy gru_sizer --stage 2`")
    encoder = ck.load_into("stage1", PriceEncoder(EncoderConfig.from_dict(meta.hparams["encoder"])))
    sizer = ck.load_into("stage2", PositionSizer(SizerConfig.from_dict(meta.hparams["sizer"])))
    norm = Normalizer.from_dict(meta.normalizer)
    scale = np.asarray(meta.labels.get("target_scale", [1.0] * meta.horizon), dtype=np.float64)
    return freeze(encoder), sizer.eval(), norm, scale, meta


def evaluate(req: EvalRequest) -> dict[str, Any]:
    """``bot evaluate`` for a gru_sizer checkpoint: price head vs random walk and the sizer vs
    fixed exposures, after fees, over every bar of ``req.data`` that has a full window."""
    encoder, sizer, norm, scale, meta = load_family(req.checkpoint)
    data = req.data
    close = np.asarray(data.close, dtype=np.float64)
    z = norm.transform(compute_features(data))
    first = first_window_end(meta.window)
    if close.shape[0] - meta.horizon - first < 2:
        raise ModelError(f"{len(data)} candles are too few to evaluate (need more than {first + meta.horizon + 1})")
    sample = evaluation_sample(meta, req, first, close.shape[0] - 1)
    notes = [f"fee {req.fee_rate} per side; positions held close to close (Bybit opens equal the previous close)",
             *sample.notes]
    ends = scored_ends(data, req.timeframe, sample.first, meta.window, meta.horizon, notes)
    _, path = encode_bars(encoder, z, ends)
    block = int(meta.window) + int(meta.horizon)
    actual = multi_forward_returns(close, meta.horizon)[ends]
    metrics: dict[str, Any] = {"price_head": price_metrics(path * scale, actual, block=block)}
    bar_ms = timeframe_ms(req.timeframe)
    bpy = 365 * 86_400_000 / bar_ms
    bars = np.arange(sample.first, close.shape[0] - 1)
    runs = Runs.of(data, bar_ms)
    usable = runs.windows_ok(np.arange(close.shape[0]), meta.window)
    levels = sizer_levels(encoder, sizer, z, np.asarray(data.time), bars, bar_ms, first, usable)
    pos = levels / 10.0
    metrics["sizer"] = {**exposure_backtest(pos, close, bars, req.fee_rate, bpy),
                        "level_hist": np.bincount(levels, minlength=11).tolist()}
    metrics["buy_and_hold"] = exposure_backtest(np.ones_like(pos), close, bars, req.fee_rate, bpy)
    metrics["half_exposure"] = exposure_backtest(np.full_like(pos, 0.5), close, bars, req.fee_rate, bpy)
    ref = (meta.labels.get("vol_baseline") or {}).get("sigma_ref")
    metrics.update(sizer_sections(pos, close, bars, req.fee_rate, bpy, block, None if ref is None else float(ref),
                                  runs.scored(bars, meta.window, 1)))
    metrics.update(deletion_sections(held_back_test(encoder, sizer, z, np.asarray(data.time), bars, bar_ms, first,
                                                    usable), "deletion"))
    return {"model_id": meta.model_id, "meta": meta.to_dict(), "metrics": metrics, "notes": notes, **sample.labels()}
