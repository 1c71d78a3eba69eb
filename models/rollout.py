"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

Pure tensor functions, vectorised over the batch (the only loop is over layers):

1. fuse the heads of each layer (mean, max or min) -> ``A_l [b, n, n]``;
2. optionally zero the lowest ``discard_ratio`` share of each fused map, never a diagonal entry;
3. account for the residual stream: ``A_l = w * I + (1 - w) * A_l``, rows re-normalised;
4. multiply from ``start_layer`` upwards, ``R = A_l @ R`` (R starts as I), rows normalised.

``R[b, i, j]`` is how much input step ``j`` flows into output position ``i``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

HEAD_FUSIONS = ("mean", "max", "min")
#: Regime codes returned by :func:`regime_codes`, index -> label.
REGIMES = ("mean_reversion", "mixed", "momentum")


def fuse_heads(attn: Tensor, head_fusion: str = "mean") -> Tensor:
    """``[b, heads, n, n]`` -> ``[b, n, n]`` by mean, max or min over the heads."""
    if head_fusion == "mean":
        return attn.mean(dim=1)
    if head_fusion == "max":
        return attn.amax(dim=1)
    if head_fusion == "min":
        return attn.amin(dim=1)
    raise ValueError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}, not {head_fusion!r}")


def discard_lowest(a: Tensor, ratio: float) -> Tensor:
    """Zero the ``floor(ratio * n * n)`` smallest entries of each ``[n, n]`` map (diagonal kept).

    The diagonal is never a candidate, so at most the ``n * (n - 1)`` off-diagonal entries go.
    """
    b, n, _ = a.shape
    k = min(int(ratio * n * n), n * (n - 1))
    if k <= 0:
        return a
    eye = torch.eye(n, dtype=torch.bool, device=a.device)
    ranked = a.masked_fill(eye, float("inf")).reshape(b, n * n)
    idx = ranked.topk(k, dim=-1, largest=False).indices
    return a.reshape(b, n * n).scatter(-1, idx, 0.0).reshape(b, n, n)


def _normalise_rows(a: Tensor) -> Tensor:
    """Rows divided by their sum; a row with nothing left keeps only itself (identity row)."""
    s = a.sum(dim=-1, keepdim=True)
    if bool((s > 0).all()):  # the usual case; skips building an identity per call
        return a / s
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
    return torch.where(s > 0, a / s.clamp_min(torch.finfo(a.dtype).tiny), eye)


def attention_rollout(attentions: Sequence[Tensor] | Tensor, head_fusion: str = "mean",
                      discard_ratio: float = 0.0, residual_weight: float = 0.5,
                      start_layer: int = 0) -> Tensor:
    """Roll attention out through the layers: ``[b, n, n]``, every row sums to 1.

    ``attentions``: one ``[b, heads, n, n]`` map per layer, first layer first (a list, or a
    tensor stacked on dim 0).
    """
    layers = list(attentions)
    if not layers:
        raise ValueError("attention_rollout needs at least one layer")
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}, not {head_fusion!r}")
    if not 0.0 <= discard_ratio <= 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1], not {discard_ratio}")
    if not 0.0 <= residual_weight <= 1.0:
        raise ValueError(f"residual_weight must be in [0, 1], not {residual_weight}")
    if not 0 <= start_layer < len(layers):
        raise ValueError(f"start_layer {start_layer} out of range for {len(layers)} layers")
    first = layers[0]
    if first.dim() != 4 or first.shape[-1] != first.shape[-2]:
        raise ValueError(f"expected attention maps [batch, heads, n, n], got {list(first.shape)}")
    b, _, n, _ = first.shape
    eye = torch.eye(n, dtype=first.dtype, device=first.device)
    rollout = eye.expand(b, n, n)
    for attn in layers[start_layer:]:
        a = fuse_heads(attn, head_fusion)
        if discard_ratio > 0:
            a = discard_lowest(a, discard_ratio)
        a = _normalise_rows(residual_weight * eye + (1.0 - residual_weight) * a)
        rollout = a @ rollout
    return _normalise_rows(rollout)


def input_attribution(rollout: Tensor, position: int | None = -1) -> Tensor:
    """Attribution over the input steps for one output position: ``[b, n]``, sums to 1.

    ``position`` is the row the classifier head reads (-1: the newest step); None averages all
    rows (for a mean-pooled head).
    """
    row = rollout.mean(dim=1) if position is None else rollout[:, position, :]
    return row / row.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(row.dtype).tiny)


def recent_steps(n: int, recent_fraction: float = 0.25) -> int:
    """How many of the newest steps of an ``n``-step window count as "recent" (at least 1)."""
    return max(1, int(round(n * recent_fraction)))


def recent_share(attribution: Tensor, recent_fraction: float = 0.25) -> Tensor:
    """Share of the attribution on the most recent ``recent_fraction`` of the window: ``[b]``."""
    n = attribution.shape[-1]
    return attribution[..., n - recent_steps(n, recent_fraction):].sum(dim=-1)


def regime_codes(share: Tensor, momentum_above: float = 0.6, reversion_below: float = 0.4) -> Tensor:
    """Index into :data:`REGIMES` per sample: recent share above ``momentum_above`` -> momentum,
    below ``reversion_below`` -> mean reversion, else mixed."""
    if reversion_below > momentum_above:
        raise ValueError("reversion_below must not exceed momentum_above")
    codes = torch.ones_like(share, dtype=torch.long)
    codes = torch.where(share > momentum_above, torch.full_like(codes, 2), codes)
    return torch.where(share < reversion_below, torch.zeros_like(codes), codes)


def regime_labels(attribution: Tensor, recent_fraction: float = 0.25, momentum_above: float = 0.6,
                  reversion_below: float = 0.4) -> tuple[list[str], Tensor]:
    """(label per sample, recent share per sample) from an attribution ``[b, n]``."""
    share = recent_share(attribution, recent_fraction)
    codes = regime_codes(share, momentum_above, reversion_below)
    return [REGIMES[c] for c in codes.tolist()], share
