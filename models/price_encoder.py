"""Stage 1 of ``gru_sizer``: a small price encoder over a [window, features] block.

Building blocks follow the published design (DeepSeek-V2 style): RMSNorm, rotary position
embedding from precomputed complex frequencies, multi-head latent attention (K/V squeezed
through a low-rank latent of ``kv_lora_rank`` with its own RMSNorm, then up-projected per head;
queries split into a rotary and a non-rotary part), and a SwiGLU feed-forward. Two heads:

- the *feature head* emits the vector stage 2 (the GRU sizer) consumes;
- the *price head* reads that vector and predicts the next ``horizon`` closes as cumulative
  returns relative to the last close (scaled by ``target_scale`` during training).

The price head sits on top of the feature head on purpose: the supervised price loss is what
trains the feature vector, so stage 2 receives a representation that carries the forecast.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bot.errors import ModelError

LOSSES = ("mse", "mae", "huber")


@dataclass(frozen=True)
class EncoderConfig:
    """Hyper-parameters of the price encoder.

    The published design uses 180 steps x 11 features. The default here is 64 steps (over the
    project's feature set): attention cost grows with window^2, and 64 hourly bars (2.7 days)
    keep one epoch on ~15k hourly windows to tens of seconds on one shared CPU core and one
    decision well under a millisecond, while still covering the 24- and 48-bar look-backs
    already folded into the features.
    """

    n_features: int
    window: int = 64
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 4
    kv_lora_rank: int = 16
    qk_nope_dim: int = 8
    qk_rope_dim: int = 8
    v_head_dim: int = 8
    ffn_hidden: int = 64
    feature_dim: int = 16
    horizon: int = 7
    dropout: float = 0.1
    rope_theta: float = 10_000.0

    def __post_init__(self) -> None:
        if self.qk_rope_dim % 2:
            raise ModelError("qk_rope_dim must be even (rotary pairs)")
        for name in ("n_features", "window", "d_model", "n_layers", "n_heads", "kv_lora_rank",
                     "feature_dim", "horizon"):
            if getattr(self, name) < 1:
                raise ModelError(f"encoder {name} must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        try:
            return cls(**d)
        except TypeError as exc:
            raise ModelError(f"price-encoder hyper-parameters are malformed: {exc}") from None


class RMSNorm(nn.Module):
    """Root-mean-square norm: scale only, no centring (cheaper than LayerNorm, same effect here)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if torch.onnx.is_in_onnx_export():  # no RMSNormalization before opset 23: the formula itself
            return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight
        # x * rsqrt(mean(x^2) + eps) * weight, as one fused op
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rotary_table(dim: int, length: int, theta: float = 10_000.0) -> Tensor:
    """The rotation of each pair of dimensions at each position, e^{i * pos * freq}, as its cosine
    and sine: [length, dim/2, 2] float32. Real arithmetic, so the encoder exports to ONNX."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), freqs)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def apply_rotary(x: Tensor, table: Tensor) -> Tensor:
    """Rotate pairs of the last dim of x [B, L, H, D] by ``table`` [L, D/2, 2] (or [1, L, 1, D/2, 2]):
    each pair (a, b) times cos + i sin, written out as (a cos - b sin, a sin + b cos)."""
    dtype = x.dtype
    if dtype not in (torch.float32, torch.float64):
        x = x.float()  # the rotation in float32 (bf16/fp16 under autocast)
    t = table if table.dim() == 5 else table.view(1, x.shape[1], 1, -1, 2)
    t = t.to(x.dtype)
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    cos, sin = t[..., 0], t[..., 1]
    out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(3)
    return out if out.dtype == dtype else out.to(dtype)


class LatentAttention(nn.Module):
    """Multi-head latent attention (MLA): K/V through a shared low-rank latent.

    Keys are [non-rotary part from the latent, per head | rotary part shared by all heads];
    queries carry the same split. Attention spans the whole window (every row is already in the
    past of the decision bar, so no causal mask is needed for lookahead safety).
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.h, self.nope, self.rope, self.vd = cfg.n_heads, cfg.qk_nope_dim, cfg.qk_rope_dim, cfg.v_head_dim
        self.wq = nn.Linear(cfg.d_model, self.h * (self.nope + self.rope), bias=False)
        self.wkv_a = nn.Linear(cfg.d_model, cfg.kv_lora_rank + self.rope, bias=False)
        self.kv_norm = RMSNorm(cfg.kv_lora_rank)
        self.wkv_b = nn.Linear(cfg.kv_lora_rank, self.h * (self.nope + self.vd), bias=False)
        self.wo = nn.Linear(self.h * self.vd, cfg.d_model, bias=False)
        self.kv_lora_rank = cfg.kv_lora_rank
        self.scale = 1.0 / math.sqrt(self.nope + self.rope)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, rotary: Tensor) -> Tensor:
        b, n, _ = x.shape
        q = self.wq(x).view(b, n, self.h, self.nope + self.rope)
        q_nope, q_pe = q.split([self.nope, self.rope], dim=-1)
        q_pe = apply_rotary(q_pe, rotary)
        kv = self.wkv_a(x)
        latent, k_pe = kv.split([self.kv_lora_rank, self.rope], dim=-1)
        k_pe = apply_rotary(k_pe.unsqueeze(2), rotary)  # [B, N, 1, rope], shared by heads
        kv = self.wkv_b(self.kv_norm(latent)).view(b, n, self.h, self.nope + self.vd)
        k_nope, v = kv.split([self.nope, self.vd], dim=-1)
        # score = q_nope . k_nope + q_pe . k_pe: one dot product over the concatenated parts
        q = torch.cat([q_nope, q_pe], dim=-1).transpose(1, 2)
        k = torch.cat([k_nope, k_pe.expand(-1, -1, self.h, -1)], dim=-1).transpose(1, 2)
        # Plain matmul + softmax: on CPU at this size it is ~2x faster than the SDPA math path.
        attn = self.drop((q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1))
        out = attn @ v.transpose(1, 2)
        return self.wo(out.transpose(1, 2).reshape(b, n, self.h * self.vd))


class SwiGLU(nn.Module):
    """Gated feed-forward: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class Block(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model)
        self.attn = LatentAttention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model)
        self.ffn = SwiGLU(cfg.d_model, cfg.ffn_hidden, cfg.dropout)

    def forward(self, x: Tensor, rotary: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x), rotary)
        return x + self.ffn(self.ffn_norm(x))


class PriceEncoder(nn.Module):
    """[B, window, features] -> (feature vector [B, feature_dim], predicted path [B, horizon])."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Linear(cfg.n_features, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model)
        # Pool = last step (the decision bar) next to the window mean.
        self.feature_head = nn.Sequential(nn.Linear(2 * cfg.d_model, cfg.feature_dim), nn.Tanh())
        self.price_head = nn.Linear(cfg.feature_dim, cfg.horizon)
        # A plain attribute, not a buffer: Module.to(dtype) would cast a complex buffer to real.
        self._rotary = rotary_table(cfg.qk_rope_dim, cfg.window, cfg.rope_theta).view(1, cfg.window, 1, -1, 2)
        self._rotary_cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def rotary_for(self, x: Tensor) -> Tensor:
        """The rotary table on x's device, float64 for float64 inputs, else float32 (cached)."""
        dt = torch.float64 if x.dtype == torch.float64 else torch.float32
        key = (x.device, dt)
        table = self._rotary_cache.get(key)
        if table is None:
            table = self._rotary_cache[key] = self._rotary.to(device=x.device, dtype=dt)
        return table

    def encode(self, x: Tensor) -> Tensor:
        """The stage-2 feature vector for windows x [B, W, F]."""
        if x.dim() != 3 or x.shape[1] != self.cfg.window or x.shape[2] != self.cfg.n_features:
            raise ModelError(f"price encoder expects [batch, {self.cfg.window}, {self.cfg.n_features}], "
                             f"got {list(x.shape)}")
        h = self.embed(x)
        table = self.rotary_for(x)
        for layer in self.layers:
            h = layer(h, table)
        h = self.norm(h)
        return self.feature_head(torch.cat([h[:, -1], h.mean(dim=1)], dim=-1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feat = self.encode(x)
        return feat, self.price_head(feat)


class PricePathLoss(nn.Module):
    """Supervised stage-1 loss on the predicted path; wraps (features, path) outputs."""

    def __init__(self, kind: str = "huber", delta: float = 1.0) -> None:
        super().__init__()
        self.fn = price_loss_fn(kind, delta)

    def forward(self, out: Tensor | tuple[Tensor, Tensor], target: Tensor) -> Tensor:
        pred = out[1] if isinstance(out, tuple) else out
        return self.fn(pred, target)


def price_loss_fn(kind: str, delta: float = 1.0) -> nn.Module:
    """MSE, MAE or Huber, selectable by name."""
    if kind == "mse":
        return nn.MSELoss()
    if kind == "mae":
        return nn.L1Loss()
    if kind == "huber":
        return nn.HuberLoss(delta=delta)
    raise ModelError(f"unknown price loss {kind!r}: expected one of {', '.join(LOSSES)}")


class PathHead(nn.Module):
    """Adapter: the encoder as a plain ``x -> path`` regressor, for a generic training loop."""

    def __init__(self, encoder: PriceEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)[1]
