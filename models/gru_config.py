"""Settings of the ``gru_sizer`` model family (``strategy.params`` in config.yaml).

Lives in ``models`` so the trainer can validate ``strategy.params`` without importing the
strategy; ``strategies.gru_sizer.GRUSizerParams`` is this model plus the strategy base.
Every key can be overridden, e.g. ``--set strategy.params.sizer.w_risk=1.0``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.errors import ConfigError
from models.price_encoder import EncoderConfig
from models.sizer import SizerConfig
from models.training import TrainConfig


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncoderParams(_Frozen):
    d_model: int = Field(32, ge=4)
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(4, ge=1)
    kv_lora_rank: int = Field(16, ge=1)
    qk_nope_dim: int = Field(8, ge=1)
    qk_rope_dim: int = Field(8, ge=2, multiple_of=2)
    v_head_dim: int = Field(8, ge=1)
    ffn_hidden: int = Field(64, ge=1)
    feature_dim: int = Field(16, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)


class SizerParams(_Frozen):
    hidden: int = Field(32, ge=1)
    steps: int = Field(20, ge=2)
    tau_start: float = Field(2.0, gt=0)
    tau_end: float = Field(0.3, gt=0)
    hard: bool = True
    risk: Literal["downside", "drawdown"] = "downside"
    w_risk: float = Field(0.1, ge=0)   # 0.5 / 0.2 collapsed to level 0 on validation data
    w_opp: float = Field(0.5, ge=0)
    w_turn: float = Field(5.0, ge=0)   # chosen on validation: 0.5 churned ~300x a year


class Stage2Train(_Frozen):
    """Stage-2 loop settings (its recurrent objective has its own loop, see models.gru_training)."""

    epochs: int = Field(15, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float = Field(1.0, ge=0)
    accum_steps: int = Field(1, ge=1)   # gradient accumulation: optimiser step every N batches
    amp: bool = False                   # mixed precision (bf16 autocast); used only on a GPU
    device: str = "cpu"                 # "cpu", "cuda" or "auto"
    patience: int = Field(4, ge=1)
    seed: int = 7
    threads: int = Field(0, ge=0)
    stride: int = Field(1, ge=1)        # distance between training sequence starts


def _stage1_default() -> TrainConfig:
    # 6 epochs over the latest 6,000 windows keeps the default training near 4 minutes on 2 cores
    # (docs/gru_sizer.md, "Speed"); more barely moved the validation loss.
    return TrainConfig(epochs=6, patience=3, batch_size=256, lr=2e-3, label_smoothing=0.0,
                       class_weights=False, max_train_samples=6000)


class GRUSizerConfig(_Frozen):
    window: int = Field(64, ge=8)
    horizon: int = Field(7, ge=1)
    encoder: EncoderParams = EncoderParams()
    price_loss: Literal["mse", "mae", "huber"] = "huber"
    sizer: SizerParams = SizerParams()
    regime_window: int = Field(64, ge=8)
    train: TrainConfig = Field(default_factory=_stage1_default)
    train2: Stage2Train = Stage2Train()
    stage: int = Field(0, ge=0, le=2)   # bot train: 0 = stage 1 then 2, 1 = encoder only, 2 = sizer only
    # The latest share of the training part that stage 1 never fits: stage 2 learns the sizer from
    # the encoder's outputs on those bars, as it will see them when trading (0: both on all of it).
    stage2_share: float = Field(0.3, ge=0, le=0.8)
    max_exposure: float = Field(1.0, gt=0, le=10)  # level 10 -> this fraction of equity
    batch_precompute: bool = True       # backtests: batch the encoder (same decisions, tested)
    #: Stage 1 of a decision: ONNX Runtime in float32 (default) or float64 torch
    #: (models.encoder_runtime); the attribution runs in float64 torch either way.
    backend: Literal["torch", "onnx"] = "onnx"

    @field_validator("train", mode="before")
    @classmethod
    def _train_over_defaults(cls, v: Any) -> Any:
        # ``--set strategy.params.train.epochs=3`` changes one key, not the whole stage-1 default.
        if isinstance(v, dict):
            return {**_stage1_default().model_dump(), **v}
        return v

    def encoder_config(self, n_features: int) -> EncoderConfig:
        return EncoderConfig(n_features=n_features, window=self.window, horizon=self.horizon,
                             **self.encoder.model_dump())

    def sizer_config(self, feature_dim: int, fee: float) -> SizerConfig:
        return SizerConfig(feature_dim=feature_dim, fee=fee, **self.sizer.model_dump())


def parse_config(raw: dict[str, Any]) -> GRUSizerConfig:
    """Validate ``strategy.params``; a bad key is one ConfigError line."""
    try:
        return GRUSizerConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = "unknown parameter" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"strategy.params.{loc}: {msg} (strategy gru_sizer)") from None
