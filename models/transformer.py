"""Transformer encoder classifier whose layers hand back their attention maps.

Input ``[batch, window, features]`` -> logits ``[batch, classes]``. Every encoder layer returns
its softmax attention weights ``[batch, heads, window, window]`` from its own forward pass, so
attention rollout (``models.rollout``) needs no forward hooks matched by module name.
Post-LN layers as in Vaswani et al. 2017: ``x = LN(x + MHA(x))``, ``x = LN(x + FF(x))``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from bot.errors import ModelError


@dataclass(frozen=True, slots=True)
class TransformerConfig:
    """Hyper-parameters (stored in checkpoints). The defaults are the benchmarked default size."""

    n_features: int
    window: int = 48
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 64
    dropout: float = 0.1
    n_classes: int = 3
    positions: str = "sinusoidal"  # sinusoidal | learned
    pool: str = "last"  # last (head on the newest step) | mean (pooled over the window)

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ModelError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.positions not in ("sinusoidal", "learned"):
            raise ModelError(f"positions must be sinusoidal or learned, not {self.positions!r}")
        if self.pool not in ("last", "mean"):
            raise ModelError(f"pool must be last or mean, not {self.pool!r}")
        if min(self.n_features, self.window, self.n_layers, self.d_ff) < 1:
            raise ModelError("n_features, window, n_layers and d_ff must be positive")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def sinusoidal_positions(n: int, d: int) -> Tensor:
    """The fixed sin/cos position table of Vaswani et al. 2017, ``[n, d]``."""
    pos = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : d // 2]
    return pe


class MultiHeadAttention(nn.Module):
    """Scaled dot-product self-attention that returns the weights it used (rows sum to 1).

    No dropout on the weights themselves (it was the costliest op of a training step on CPU, and
    the explained weights are then exactly the mixing weights); the layer drops its output.
    """

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.d_head))
        attn = scores.softmax(dim=-1)  # [b, h, n, n]
        ctx = (attn @ v).transpose(1, 2).reshape(b, n, d)
        return self.out(ctx), attn


class EncoderLayer(nn.Module):
    """Multi-head attention + feed-forward, each with a residual and a LayerNorm."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(d_ff, d_model))
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, weights = self.attn(x)
        x = self.norm1(x + self.drop(a))
        x = self.norm2(x + self.drop(self.ff(x)))
        return x, weights


class TransformerClassifier(nn.Module):
    """``[batch, window, features]`` -> class logits; :meth:`forward_explained` adds attentions."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Linear(cfg.n_features, cfg.d_model)
        if cfg.positions == "learned":
            self.pos = nn.Parameter(torch.zeros(cfg.window, cfg.d_model))
            nn.init.normal_(self.pos, std=0.02)
        else:
            self.register_buffer("pos", sinusoidal_positions(cfg.window, cfg.d_model), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.n_classes)

    def hidden(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(the final norm's output [b, n, d_model], one attention map [b, heads, n, n] per layer,
        first layer first): everything before the pooling and the head."""
        if x.dim() != 3 or x.shape[-1] != self.cfg.n_features or x.shape[1] > self.cfg.window:
            raise ModelError(f"expected input [batch, <= {self.cfg.window}, {self.cfg.n_features}], "
                             f"got {list(x.shape)}")
        n = x.shape[1]
        h = self.drop(self.proj(x) + self.pos[-n:])
        attentions: list[Tensor] = []
        for layer in self.layers:
            h, a = layer(h)
            attentions.append(a)
        return self.norm(h), attentions

    def forward_explained(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(logits [b, classes], one attention map [b, heads, n, n] per layer, first layer first)."""
        h, attentions = self.hidden(x)
        z = h[:, -1] if self.cfg.pool == "last" else h.mean(dim=1)
        return self.head(z), attentions

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_explained(x)[0]
