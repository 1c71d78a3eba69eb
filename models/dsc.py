"""Depthwise-separable 1-D conv classifier (MobileNet / Xception idea) and its standard-conv twin.

Input [batch, features, window] -> logits [batch, 3] ({down, flat, up}).

``DSCClassifier``: 1x1 stem -> N blocks of :class:`DepthwiseSeparableConv1d` with dilation 2^i ->
all block outputs concatenated -> 1x1 conv -> global average pool -> dropout -> linear.
``StandardConvClassifier``: the same topology with one full ``Conv1d`` (kernel K, same dilation)
in place of each depthwise + pointwise pair, for the cost/accuracy comparison in bench/.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class DepthwiseSeparableConv1d(nn.Module):
    """Depthwise conv (groups=in_channels) -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__()
        pad = dilation * (kernel_size - 1) // 2  # "same" length for odd kernels
        self.depthwise = nn.Conv1d(in_channels, in_channels, kernel_size, padding=pad, dilation=dilation,
                                   groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm1d(in_channels)
        self.pointwise = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.depthwise(x)))
        return self.act(self.bn2(self.pointwise(x)))


class StandardConv1dBlock(nn.Module):
    """Full conv (kernel K, dilation d) -> BN -> ReLU: what one separable block replaces."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__()
        pad = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=pad, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm1d(out_channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class _ConvClassifier(nn.Module):
    """Shared topology; ``block`` decides separable vs standard convolutions."""

    kind = "conv"

    def __init__(self, block: type[nn.Module], n_features: int, channels: int = 32, blocks: int = 5,
                 kernel_size: int = 3, dropout: float = 0.2, n_classes: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError("kernel_size must be odd (same-length padding)")
        self.hparams: dict[str, Any] = {"n_features": n_features, "channels": channels, "blocks": blocks,
                                        "kernel_size": kernel_size, "dropout": dropout, "n_classes": n_classes}
        self.stem = nn.Sequential(nn.Conv1d(n_features, channels, 1, bias=False), nn.BatchNorm1d(channels), nn.ReLU())
        self.blocks = nn.ModuleList(block(channels, channels, kernel_size, 2 ** i) for i in range(blocks))
        self.merge = nn.Sequential(nn.Conv1d(channels * blocks, channels, 1, bias=False),
                                   nn.BatchNorm1d(channels), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        outs = []
        for blk in self.blocks:
            h = blk(h)
            outs.append(h)
        h = self.merge(torch.cat(outs, dim=1))
        return self.head(self.dropout(h.mean(dim=2)))


class DSCClassifier(_ConvClassifier):
    """The ``dsc`` strategy's model (depthwise-separable blocks)."""

    kind = "dsc"

    def __init__(self, n_features: int, channels: int = 32, blocks: int = 5, kernel_size: int = 3,
                 dropout: float = 0.2, n_classes: int = 3) -> None:
        super().__init__(DepthwiseSeparableConv1d, n_features, channels, blocks, kernel_size, dropout, n_classes)


class StandardConvClassifier(_ConvClassifier):
    """Same topology with full convolutions (the comparison baseline)."""

    kind = "standard_conv"

    def __init__(self, n_features: int, channels: int = 32, blocks: int = 5, kernel_size: int = 3,
                 dropout: float = 0.2, n_classes: int = 3) -> None:
        super().__init__(StandardConv1dBlock, n_features, channels, blocks, kernel_size, dropout, n_classes)


ARCHITECTURES: dict[str, type[_ConvClassifier]] = {"dsc": DSCClassifier, "standard_conv": StandardConvClassifier}


def build(arch: str, hparams: dict[str, Any]) -> _ConvClassifier:
    """Rebuild a classifier from checkpoint hyper-parameters."""
    return ARCHITECTURES[arch](**hparams)


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def count_macs(net: nn.Module, n_features: int, window: int) -> int:
    """Multiply-accumulates of one forward pass on a [1, F, W] input (convs + linear layers)."""
    total = 0

    def conv_hook(m: nn.Conv1d, inp: tuple[torch.Tensor], out: torch.Tensor) -> None:
        nonlocal total
        total += out.shape[1] * out.shape[2] * (m.in_channels // m.groups) * m.kernel_size[0]

    def lin_hook(m: nn.Linear, inp: tuple[torch.Tensor], out: torch.Tensor) -> None:
        nonlocal total
        total += m.in_features * m.out_features

    hooks = []
    for m in net.modules():
        if isinstance(m, nn.Conv1d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    was_training = net.training
    net.eval()
    with torch.inference_mode():
        net(torch.zeros(1, n_features, window))
    net.train(was_training)
    for h in hooks:
        h.remove()
    return total
