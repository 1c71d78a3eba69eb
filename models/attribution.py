"""Input x gradient attribution for the conv classifiers, as one exportable forward pass.

:class:`ExplainedConv` computes, in a single ``forward``, the class probabilities and
``x * d target / d x`` (the gradient of the attributed quantity with respect to the input
window, times the input). The target is ``p(up) - p(down)`` (the explanation contract's
quantity, ``target="margin"``, the default: a positive value pushes toward up) or the top
class's probability (``target="top"``); each is only a different seed of the same backward.
The backward pass is written out by hand for the eval-mode network
(BatchNorm folded to a per-channel affine map, ReLU masks, transposed convolutions), so the
whole explanation exports to ONNX and runs in ONNX Runtime at model speed; autograd would cost
several eager passes per candle. ``tests/test_dsc_model.py`` and ``tests/test_faith_methods.py``
prove it equals autograd.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.dsc import DepthwiseSeparableConv1d, StandardConv1dBlock, _ConvClassifier


def _affine(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as y = a * x + b, shaped [1, C, 1]."""
    a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    b = bn.bias - bn.running_mean * a
    return a.detach().view(1, -1, 1), b.detach().view(1, -1, 1)


class _Frozen1x1(nn.Module):
    def __init__(self, conv: nn.Conv1d, bn: nn.BatchNorm1d) -> None:
        super().__init__()
        a, b = _affine(bn)
        self.register_buffer("w", conv.weight.detach().clone())       # [out, in, 1]
        self.register_buffer("wt", conv.weight.detach().transpose(0, 1).clone())  # [in, out, 1]
        self.register_buffer("a", a.clone())
        self.register_buffer("b", b.clone())

    def fwd(self, x: torch.Tensor) -> torch.Tensor:
        return self.a * F.conv1d(x, self.w) + self.b

    def bwd(self, g: torch.Tensor) -> torch.Tensor:
        return F.conv1d(g * self.a, self.wt)


class _FrozenConv(nn.Module):
    """A (possibly grouped, dilated) conv + folded BN with its transposed conv for the backward."""

    def __init__(self, conv: nn.Conv1d, bn: nn.BatchNorm1d) -> None:
        super().__init__()
        a, b = _affine(bn)
        self.register_buffer("w", conv.weight.detach().clone())
        self.register_buffer("a", a.clone())
        self.register_buffer("b", b.clone())
        self.pad = int(conv.padding[0])
        self.dil = int(conv.dilation[0])
        self.groups = int(conv.groups)

    def fwd(self, x: torch.Tensor) -> torch.Tensor:
        return self.a * F.conv1d(x, self.w, padding=self.pad, dilation=self.dil, groups=self.groups) + self.b

    def bwd(self, g: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(g * self.a, self.w, padding=self.pad, dilation=self.dil, groups=self.groups)


class _Block(nn.Module):
    """One block as a list of conv+BN+ReLU stages (1 for standard, 2 for separable)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        if isinstance(block, DepthwiseSeparableConv1d):
            stages = [_FrozenConv(block.depthwise, block.bn1), _Frozen1x1(block.pointwise, block.bn2)]
        elif isinstance(block, StandardConv1dBlock):
            stages = [_FrozenConv(block.conv, block.bn)]
        else:
            raise TypeError(f"unsupported block {type(block).__name__}")
        self.stages = nn.ModuleList(stages)


TARGETS = ("margin", "top")
DOWN_CLASS, UP_CLASS = 0, 2  # models.labels: {down, flat, up}


def seed_of(probs: torch.Tensor, target: str) -> torch.Tensor:
    """d target / d logits [B, K] from the softmax probabilities (dp_k/dz = p_k * (onehot_k - p))."""
    if target == "margin":  # p(up) - p(down); down is the first class, up the last
        up, down = probs[:, UP_CLASS:UP_CLASS + 1], probs[:, DOWN_CLASS:DOWN_CLASS + 1]
        direct = torch.cat([-down, torch.zeros_like(probs[:, 1:-1]), up], dim=1)
        return direct - (up - down) * probs
    top = torch.argmax(probs, dim=1, keepdim=True)
    onehot = torch.zeros_like(probs).scatter(1, top, 1.0)
    return torch.gather(probs, 1, top) * (onehot - probs)


class ExplainedConv(nn.Module):
    """forward(x [B, F, W]) -> (probs [B, 3], attribution [B, F, W]) for a trained classifier."""

    def __init__(self, model: _ConvClassifier, target: str = "margin") -> None:
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
        self.target = target
        model = model.eval()
        self.stem = _Frozen1x1(model.stem[0], model.stem[1])
        self.blocks = nn.ModuleList(_Block(b) for b in model.blocks)
        self.merge = _Frozen1x1(model.merge[0], model.merge[1])
        self.register_buffer("head_w", model.head.weight.detach().clone())  # [K, C]
        self.register_buffer("head_b", model.head.bias.detach().clone())
        self.n_blocks = len(model.blocks)
        self.channels = int(model.hparams["channels"])

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[list[torch.Tensor]],
                                                 torch.Tensor, torch.Tensor]:
        """(probs, stem pre-activation, block pre-activations, merge pre-activation, merged output)."""
        pre_stem = self.stem.fwd(x)
        h = torch.relu(pre_stem)
        pres: list[list[torch.Tensor]] = []
        outs: list[torch.Tensor] = []
        for blk in self.blocks:
            ps = []
            for st in blk.stages:
                p = st.fwd(h)
                ps.append(p)
                h = torch.relu(p)
            pres.append(ps)
            outs.append(h)
        pre_merge = self.merge.fwd(torch.cat(outs, dim=1))
        g = torch.relu(pre_merge)
        pooled = g.mean(dim=2)
        logits = pooled @ self.head_w.t() + self.head_b
        return torch.softmax(logits, dim=1), pre_stem, pres, pre_merge, g

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """The class probabilities alone: the same forward ops as :meth:`forward`, no backward."""
        return self._forward(x)[0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # ---- forward, keeping every pre-activation for the ReLU masks
        probs, pre_stem, pres, pre_merge, g = self._forward(x)
        # ---- backward of the target, seeded at the logits
        seed = seed_of(probs, self.target)                       # [B, K]
        d_pooled = seed @ self.head_w                             # [B, C]
        w = g.shape[2]
        d_g = d_pooled.unsqueeze(2).expand(-1, -1, w) / w
        d_cat = self.merge.bwd(d_g * (pre_merge > 0).to(d_g.dtype))
        direct = torch.split(d_cat, self.channels, dim=1)
        dh = direct[-1]
        for i in range(self.n_blocks - 1, -1, -1):
            blk = self.blocks[i]
            for j in range(len(blk.stages) - 1, -1, -1):
                dh = blk.stages[j].bwd(dh * (pres[i][j] > 0).to(dh.dtype))
            if i > 0:
                dh = dh + direct[i - 1]
        dx = self.stem.bwd(dh * (pre_stem > 0).to(dh.dtype))
        return probs, x * dx


class ConvProbs(nn.Module):
    """forward(x [B, F, W]) -> probs [B, 3]: the decision's graph (ONNX export of the probs alone)."""

    def __init__(self, net: ExplainedConv) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.probs(x)


def autograd_input_x_gradient(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference implementation with autograd: (probs, x * d p_top / d x)."""
    model.eval()
    xx = x.detach().clone().requires_grad_(True)
    probs = torch.softmax(model(xx), dim=1)
    top = probs.argmax(dim=1, keepdim=True)
    torch.gather(probs, 1, top).sum().backward()
    return probs.detach(), (xx * xx.grad).detach()


def autograd_margin_x_input(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference implementation with autograd: (probs, x * d (p_up - p_down) / d x)."""
    model.eval()
    xx = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        probs = torch.softmax(model(xx), dim=1)
        (probs[:, UP_CLASS] - probs[:, DOWN_CLASS]).sum().backward()
    return probs.detach(), (xx * xx.grad).detach()


def summarise(attr: np.ndarray, times: np.ndarray, feature_names: list[str] | tuple[str, ...],
              k: int = 3) -> dict[str, Any]:
    """[F, W] attribution -> per-feature and per-step signed shares of total |attribution|, top k each.

    A score of +0.2 means that feature (or time step) carried 20% of the total attribution mass
    and pushed the top class's probability up; negative scores pushed it down.
    """
    a = np.asarray(attr, dtype=np.float64)
    total = float(np.abs(a).sum())
    scale = 1.0 / total if total > 0 else 0.0
    feat = a.sum(axis=1) * scale
    step = a.sum(axis=0) * scale
    top_f = np.argsort(-np.abs(feat), kind="stable")[:k]
    top_s = np.argsort(-np.abs(step), kind="stable")[:k]
    return {
        "top_features": [{"feature": feature_names[i], "score": round(float(feat[i]), 6)} for i in top_f],
        "top_steps": [{"time": int(times[i]), "score": round(float(step[i]), 6)} for i in top_s],
        "feature_scores": {feature_names[i]: round(float(feat[i]), 6) for i in range(len(feature_names))},
        "method": "input_x_gradient",
    }
