"""The ``rollout`` model at run time: settings, checkpoint loading, and one batched explain call.

:class:`RolloutConfig` is ``strategy.params`` of the ``rollout`` strategy (model size, labels,
rollout and regime settings, decision rule, training). :class:`RolloutExplainer` turns windows
``[B, W, F]`` into class probabilities, the rollout attribution over the window, the recent
share and the regime code in one forward pass; the strategy's bar-by-bar path and its batched
backtest path both call it, in float64, so they make the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.errors import ConfigError, ModelError
from models.checkpoint import ModelMeta, data_hash, load_checkpoint
from models.features import FEATURE_NAMES, Normalizer
from models.labels import FLAT
from models.rollout import attention_rollout, input_attribution, recent_share, regime_codes
from models.training import TrainConfig
from models.transformer import TransformerClassifier, TransformerConfig

KIND = "rollout"


class RolloutConfig(BaseModel):
    """Model, label, rollout, decision and training settings of ``rollout`` (``strategy.params``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(48, ge=4, le=512)
    horizon: int = Field(4, ge=1, le=500)
    #: Flat band half-width for labels; raised to the round-trip fee (2 x broker.fee_rate).
    threshold: float = Field(0.0, ge=0, lt=1)
    d_model: int = Field(32, ge=4, le=512)
    n_heads: int = Field(4, ge=1, le=32)
    n_layers: int = Field(2, ge=1, le=12)
    d_ff: int = Field(64, ge=4, le=2048)
    dropout: float = Field(0.1, ge=0, lt=1)
    positions: Literal["sinusoidal", "learned"] = "sinusoidal"
    pool: Literal["last", "mean"] = "last"
    # -- attention rollout (explanation only; the model does not depend on these) --
    head_fusion: Literal["mean", "max", "min"] = "mean"
    discard_ratio: float = Field(0.0, ge=0, lt=1)
    residual_weight: float = Field(0.5, ge=0, le=1)
    start_layer: int = Field(0, ge=0)
    #: Regime: share of the attribution on the newest ``recent_fraction`` of the window.
    recent_fraction: float = Field(0.25, gt=0, le=1)
    momentum_above: float = Field(0.6, ge=0, le=1)
    reversion_below: float = Field(0.4, ge=0, le=1)
    # -- decision rule --
    #: Trade only when the top class's probability reaches this; otherwise flat.
    prob_threshold: float = Field(0.5, ge=0, le=1)
    allow_short: bool = True
    #: Backtests: compute every bar's output in batches first (proved equal to bar by bar).
    batch_precompute: bool = True
    #: Backtests without a checkpoint train on this leading fraction of the data first.
    train_fraction: float = Field(0.6, gt=0.1, lt=0.95)
    #: Defaults keep `bot train` to a few minutes on a shared 2-core machine (1 torch thread).
    train: TrainConfig = TrainConfig(epochs=8, batch_size=256, lr=2e-3, patience=3, threads=1,
                                     max_train_samples=8000)

    def model_config_for(self, n_features: int) -> TransformerConfig:
        return TransformerConfig(n_features=n_features, window=self.window, d_model=self.d_model,
                                 n_heads=self.n_heads, n_layers=self.n_layers, d_ff=self.d_ff,
                                 dropout=self.dropout, positions=self.positions, pool=self.pool)


def parse_config(params: dict[str, Any]) -> RolloutConfig:
    """Validate ``strategy.params``; a bad key or value is one ConfigError line."""
    try:
        cfg = RolloutConfig.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = "unknown parameter" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"strategy.params.{loc}: {msg} (strategy rollout)") from None
    if cfg.d_model % cfg.n_heads:
        raise ConfigError(f"strategy.params.d_model: {cfg.d_model} is not divisible by n_heads {cfg.n_heads}")
    if cfg.start_layer >= cfg.n_layers:
        raise ConfigError(f"strategy.params.start_layer: {cfg.start_layer} must be below n_layers {cfg.n_layers}")
    if cfg.reversion_below > cfg.momentum_above:
        raise ConfigError("strategy.params.reversion_below must not exceed momentum_above")
    return cfg


@dataclass(frozen=True, slots=True)
class Explained:
    """Batched outputs: probs [B, 3], attribution [B, W] (rows sum to 1), share [B], regime [B]."""

    probs: np.ndarray
    attribution: np.ndarray
    share: np.ndarray
    regime: np.ndarray


class RolloutExplainer:
    """Probabilities + attention-rollout attribution for windows [B, W, F], in float64."""

    def __init__(self, model: TransformerClassifier, cfg: RolloutConfig,
                 dtype: torch.dtype = torch.float64) -> None:
        # A private copy in ``dtype`` (float64 by default: batch and bar-by-bar agree far below
        # any decision boundary); the caller's model is left untouched.
        self.net = TransformerClassifier(model.cfg).to(dtype)
        self.net.load_state_dict(model.state_dict())
        self.net.eval().requires_grad_(False)
        self.cfg = cfg
        self.dtype = dtype
        self.position: int | None = -1 if model.cfg.pool == "last" else None
        if cfg.start_layer >= model.cfg.n_layers:
            raise ModelError(f"start_layer {cfg.start_layer} is not below the model's {model.cfg.n_layers} layers")

    def explain(self, x: np.ndarray | torch.Tensor, chunk: int = 1024) -> Explained:
        xt = torch.as_tensor(x).to(self.dtype)
        c = self.cfg
        probs, attrs = [], []
        with torch.inference_mode():
            for s in range(0, xt.shape[0], chunk):
                logits, attentions = self.net.forward_explained(xt[s:s + chunk])
                r = attention_rollout(attentions, c.head_fusion, c.discard_ratio, c.residual_weight,
                                      c.start_layer)
                probs.append(logits.softmax(dim=-1))
                attrs.append(input_attribution(r, self.position))
            if len(probs) == 1:  # the per-bar case: no concatenation
                p, a = probs[0], attrs[0]
            else:
                p = torch.cat(probs) if probs else torch.zeros(0, 3, dtype=self.dtype)
                a = torch.cat(attrs) if attrs else torch.zeros(0, xt.shape[1], dtype=self.dtype)
            share = recent_share(a, c.recent_fraction)
            codes = regime_codes(share, c.momentum_above, c.reversion_below)
        return Explained(p.numpy(), a.numpy(), share.numpy(), codes.numpy())

    def predict_probs(self, x: np.ndarray) -> np.ndarray:
        """Probabilities only (used by the faithfulness test)."""
        xt = torch.as_tensor(x).to(self.dtype)
        with torch.inference_mode():
            return torch.cat([self.net(xt[s:s + 2048]).softmax(-1) for s in range(0, xt.shape[0], 2048)]).numpy()


def decide_class(probs: np.ndarray, prob_threshold: float) -> np.ndarray:
    """The strategy's rule as a class: the top class if its probability passes, else flat."""
    top = probs.argmax(axis=1)
    return np.where(probs.max(axis=1) >= prob_threshold, top, FLAT)


def load_rollout(path: str | Path, window: int | None = None) -> tuple[TransformerClassifier, ModelMeta, Normalizer]:
    """Load and check a ``rollout`` checkpoint: (model in eval mode, metadata, normaliser)."""
    ck = load_checkpoint(path, kind=KIND, feature_names=FEATURE_NAMES, window=window)
    try:
        tcfg = TransformerConfig(**ck.meta.hparams)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"checkpoint {path} has unusable hyper-parameters: {exc}") from None
    model = ck.load_into("model", TransformerClassifier(tcfg))
    return model, ck.meta, Normalizer.from_dict(ck.meta.normalizer)


def overlap_end(meta: ModelMeta, data: Any) -> int | None:
    """Index of the last in-sample bar if ``data`` starts with the exact candles the model was
    fitted on (same start, same content hash), else None (another market or period)."""
    k = meta.train_range.get("fit_end_index")
    if k is None or len(data.close) <= int(k) or int(data.time[0]) != meta.train_range.get("start"):
        return None
    return int(k) if data_hash(data.slice(0, int(k) + 1)) == meta.data_hash else None
