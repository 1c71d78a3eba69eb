"""Per-candle inference graphs as frozen TorchScript traces: the same kernels and numbers as
eager PyTorch at about half the Python overhead (a single window through a small model is mostly
overhead). Used where the decision path runs one window at a time (rollout, gru_sizer)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn


def traced(graph: nn.Module, example: torch.Tensor, exact: bool = True) -> Any:
    """A frozen trace of ``graph`` (eval mode) for inputs shaped like ``example``, where a trace
    is ``exact`` (no data-dependent branch the trace would freeze); else ``graph`` itself."""
    if not exact:
        return graph
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.freeze(torch.jit.trace(graph.eval(), example, check_trace=False))
    except Exception:  # noqa: BLE001 - an optimisation only: eager gives the same numbers
        return graph
