"""One generic supervised training loop for every model kind (classifiers and regressors).

- :class:`TrainConfig`: optimiser/schedule/early-stopping settings; embed it in a strategy's
  ``Params`` (``train: TrainConfig = TrainConfig()``) so ``--set strategy.params.train.epochs=3`` works.
- :func:`chronological_split`: train / validation / test in time order with an embargo gap
  (>= window + horizon bars) so no label of one part overlaps the inputs of the next.
- :func:`fit`: AdamW, per-step cosine schedule, label smoothing (classification), gradient
  clipping, class weights, early stopping on validation loss (best weights restored), fixed
  seeds (same data + seed -> bit-identical weights), a rich progress bar.
- :func:`walk_forward_splits`: expanding-window folds for rolling out-of-sample evaluation.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from torch import nn

from bot.errors import ModelError
from models.progress import TrainingBar

Task = Literal["classification", "regression"]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class TrainConfig(BaseModel):
    """Training settings shared by every model kind (all overridable with ``--set``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    label_smoothing: float = Field(0.05, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0)  # 0 disables
    patience: int = Field(5, ge=1)  # epochs without validation improvement before stopping
    min_delta: float = Field(1e-4, ge=0)
    class_weights: bool = True
    seed: int = 7
    threads: int = Field(0, ge=0)  # torch intra-op threads; 0 keeps torch's setting
    val_frac: float = Field(0.15, gt=0, lt=0.5)
    test_frac: float = Field(0.15, gt=0, lt=0.5)
    embargo: int = Field(0, ge=0)  # bars between parts; raised to window + horizon if smaller
    max_train_samples: int = Field(0, ge=0)  # 0 = all; else keep the most recent ones
    walk_forward_folds: int = Field(0, ge=0)  # 0 = off


@dataclass(frozen=True, slots=True)
class TrainRequest:
    """What ``bot train`` hands a strategy's trainer (its spec's ``trainer``, see ``strategies/spec.py``).

    ``data`` has candle column arrays (``CandleData``); ``params`` is ``strategy.params`` from
    the config (validate it with the strategy's own Params). The trainer writes the checkpoint
    (and its card) to ``out`` and returns the path.
    """

    data: Any
    params: dict[str, Any]
    symbol: str
    timeframe: str
    fee_rate: float
    long_only: bool
    out: Path
    progress: bool = True
    console: Console | None = None
    #: Further assets ``(symbol, data)`` trained together with ``data`` (``bot train --data A --data B``);
    #: only strategies whose spec sets ``multi_asset`` are given any.
    more: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class EvalRequest:
    """What ``bot evaluate`` hands the evaluator registered for a checkpoint's kind.

    The evaluator returns a JSON-ready dict: ``{"meta": ModelMeta.to_dict(), "metrics": {...}}``
    where ``metrics`` has one dict per section (e.g. ``"evaluated"``, ``"baselines"``), and what
    ``models.provenance.evaluation_sample`` decided: ``notes`` and its ``labels()``.
    """

    checkpoint: Path
    data: Any
    symbol: str
    timeframe: str
    fee_rate: float
    long_only: bool
    #: Score bars inside the checkpoint's fitted range too (labelled in-sample); default: skip them.
    allow_in_sample: bool = False


@dataclass(frozen=True, slots=True)
class Split:
    """Sample indices (positions into the sample arrays) of each part, in time order."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    embargo: int

    def describe(self) -> dict[str, int]:
        return {"train": int(self.train.size), "val": int(self.val.size), "test": int(self.test.size),
                "embargo_bars": self.embargo}


def chronological_split(bar_index: np.ndarray, val_frac: float, test_frac: float, embargo: int) -> Split:
    """Split samples (given by the bar index their window ends at, ascending) in time order.

    Between the last sample of one part and the first of the next lie at least ``embargo``
    bars, so with ``embargo >= window + horizon`` neither inputs nor labels are shared.
    """
    t = np.asarray(bar_index, dtype=np.int64)
    n = t.size
    n_test = int(round(n * test_frac))
    n_val = int(round(n * val_frac))
    n_train = n - n_val - n_test
    if n_train < 1 or n_val < 1 or n_test < 1:
        raise ModelError(f"too little data to split {n} samples into train/validation/test")
    pos = np.arange(n)
    train = pos[:n_train]
    val = pos[n_train:n_train + n_val]
    test = pos[n_train + n_val:]
    val = val[t[val] >= t[train[-1]] + embargo]
    if val.size == 0:
        raise ModelError(f"too little data: the validation part is empty after an embargo of {embargo} bars")
    test = test[t[test] >= t[val[-1]] + embargo]
    if test.size == 0:
        raise ModelError(f"too little data: the test part is empty after an embargo of {embargo} bars")
    return Split(train, val, test, embargo)


def walk_forward_splits(bar_index: np.ndarray, folds: int, embargo: int,
                        val_frac: float = 0.15) -> list[Split]:
    """Expanding-window folds: the data is cut into ``folds + 1`` blocks; fold k trains on blocks
    [0, k] (its tail as validation) and tests on block k + 1, with embargo gaps."""
    t = np.asarray(bar_index, dtype=np.int64)
    n = t.size
    bounds = np.linspace(0, n, folds + 2).astype(int)
    out = []
    for k in range(folds):
        fit_pos = np.arange(bounds[k + 1])
        n_val = max(1, int(len(fit_pos) * val_frac))
        train, val = fit_pos[:-n_val], fit_pos[-n_val:]
        val = val[t[val] >= t[train[-1]] + embargo] if train.size else val
        test = np.arange(bounds[k + 1], bounds[k + 2])
        if val.size:
            test = test[t[test] >= t[val[-1]] + embargo]
        if train.size and val.size and test.size:
            out.append(Split(train, val, test, embargo))
    if not out:
        raise ModelError(f"too little data for {folds} walk-forward folds")
    return out


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU) so a run can be repeated bit for bit."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass(slots=True)
class FitResult:
    """The trained model (best validation weights restored) and its learning curve."""

    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = float("inf")
    stopped_early: bool = False
    seconds: float = 0.0


def _as_tensor(a: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    return t.to(dtype) if dtype is not None else t


def default_loss(task: Task, cfg: TrainConfig, weights: np.ndarray | None, *, train: bool) -> LossFn:
    """Cross-entropy (class weights; label smoothing on the training loss only) or MSE."""
    if task == "regression":
        return nn.MSELoss()
    w = torch.as_tensor(weights, dtype=torch.float32) if weights is not None else None
    return nn.CrossEntropyLoss(weight=w, label_smoothing=cfg.label_smoothing if train else 0.0)


def fit(
    model: nn.Module | Callable[[], nn.Module],
    train: tuple[Any, Any],
    val: tuple[Any, Any],
    cfg: TrainConfig,
    *,
    task: Task = "classification",
    loss_fn: LossFn | None = None,
    val_loss_fn: LossFn | None = None,
    class_weights: np.ndarray | None = None,
    progress: bool = True,
    description: str = "training",
    console: Console | None = None,
) -> FitResult:
    """Train ``model`` on ``train = (X, y)``; early-stop on the loss over ``val = (X, y)``.

    ``model`` may be a factory: it is called after seeding so the initial weights are seeded
    too. ``loss_fn(output, y)`` overrides the default (cross-entropy / MSE by ``task``); the
    validation loss defaults to the same loss without label smoothing. Classification targets
    are int64 class ids; regression targets float32 of the model output's shape.
    """
    import time

    t0 = time.perf_counter()
    old_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        set_seed(cfg.seed)
        net = model() if callable(model) and not isinstance(model, nn.Module) else model
        ydtype = torch.int64 if task == "classification" else torch.float32
        xtr, ytr = _as_tensor(train[0], torch.float32), _as_tensor(train[1], ydtype)
        xva, yva = _as_tensor(val[0], torch.float32), _as_tensor(val[1], ydtype)
        if xtr.shape[0] == 0 or xva.shape[0] == 0:
            raise ModelError("too little data: empty training or validation set")
        train_loss = loss_fn or default_loss(task, cfg, class_weights, train=True)
        eval_loss = val_loss_fn or (loss_fn if loss_fn is not None
                                    else default_loss(task, cfg, class_weights, train=False))
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps_per_epoch = (xtr.shape[0] + cfg.batch_size - 1) // cfg.batch_size
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs * steps_per_epoch))
        gen = torch.Generator().manual_seed(cfg.seed)
        result = FitResult(model=net)
        best_state = copy.deepcopy(net.state_dict())
        bad_epochs = 0
        with TrainingBar(description, cfg.epochs, steps_per_epoch, enabled=progress, console=console) as bar:
            for epoch in range(1, cfg.epochs + 1):
                net.train()
                perm = torch.randperm(xtr.shape[0], generator=gen)
                total, count = 0.0, 0
                for s in range(0, xtr.shape[0], cfg.batch_size):
                    idx = perm[s:s + cfg.batch_size]
                    xb, yb = xtr[idx], ytr[idx]
                    opt.zero_grad(set_to_none=True)
                    loss = train_loss(net(xb), yb)
                    if not torch.isfinite(loss):
                        raise ModelError(f"training diverged at epoch {epoch} (loss is NaN/inf); "
                                         "check the data or lower train.lr")
                    loss.backward()
                    if cfg.grad_clip > 0:
                        nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                    opt.step()
                    sched.step()
                    total += float(loss.detach()) * xb.shape[0]
                    count += xb.shape[0]
                    bar.batch()
                vloss = evaluate_loss(net, xva, yva, eval_loss, cfg.batch_size * 4)
                result.history.append({"epoch": epoch, "train_loss": total / max(count, 1), "val_loss": vloss})
                if vloss < result.best_val_loss - cfg.min_delta:
                    result.best_val_loss, result.best_epoch = vloss, epoch
                    best_state = copy.deepcopy(net.state_dict())
                    bad_epochs = 0
                else:
                    bad_epochs += 1
                bar.epoch(epoch, f"train {total / max(count, 1):.4f}  val {vloss:.4f}  best@{result.best_epoch}")
                if bad_epochs >= cfg.patience:
                    result.stopped_early = True
                    bar.stop()
                    break
        net.load_state_dict(best_state)
        net.eval()
        result.seconds = time.perf_counter() - t0
        return result
    finally:
        torch.set_num_threads(old_threads)


def evaluate_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, batch: int = 1024) -> float:
    """Mean loss over a dataset in eval mode (batched, no gradients)."""
    net.eval()
    total, n = 0.0, 0
    with torch.inference_mode():
        for s in range(0, x.shape[0], batch):
            xb, yb = x[s:s + batch], y[s:s + batch]
            total += float(loss_fn(net(xb), yb)) * xb.shape[0]
            n += xb.shape[0]
    return total / max(n, 1)


def predict(net: nn.Module, x: Any, batch: int = 2048) -> np.ndarray:
    """Raw model outputs (logits / regression values) for ``x`` in eval + inference mode."""
    xt = _as_tensor(x, torch.float32)
    net.eval()
    outs: list[np.ndarray] = []
    with torch.inference_mode():
        for s in range(0, xt.shape[0], batch):
            outs.append(net(xt[s:s + batch]).float().numpy())
    if not outs:
        return np.zeros((0,), dtype=np.float32)
    return np.concatenate(outs, axis=0)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (numerically stable)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def state_fingerprint(net: nn.Module) -> str:
    """Short hash of all parameters and buffers (proves two trainings gave identical weights)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def take(arrays: Sequence[Any], idx: np.ndarray) -> tuple[Any, ...]:
    """Index several aligned arrays with the same positions."""
    return tuple(a[idx] for a in arrays)
