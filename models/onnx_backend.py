"""ONNX export and an ONNX Runtime runner (1 thread, CPU) for fast single-sample inference.

Used by any model kind: export a module whose ``forward`` takes one float32 tensor with a
dynamic batch axis, then run it with :class:`OnnxRunner`. Export uses the TorchScript-based
exporter (``dynamo=False``): deterministic, no extra dependencies, fine for these small graphs.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bot.errors import ModelError

OPSET = 17


def export_onnx(module: nn.Module, example: torch.Tensor, path: str | Path, output_names: list[str]) -> Path:
    """Export ``module`` (eval mode) with a dynamic batch axis; written atomically."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    module = module.eval()
    axes: dict[str, dict[int, str]] = {"x": {0: "batch"}}
    axes.update({n: {0: "batch"} for n in output_names})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(tmp), input_names=["x"], output_names=output_names,
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        os.replace(tmp, p)
    except Exception as exc:  # noqa: BLE001 - exporter errors are many and varied
        tmp.unlink(missing_ok=True)
        raise ModelError(f"ONNX export to {p} failed: {type(exc).__name__}: {str(exc)[:200]}") from None
    return p


class OnnxRunner:
    """An ONNX Runtime session pinned to ``threads`` CPU threads (default 1: latency, not throughput)."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        p = Path(path)
        if not p.exists():
            raise ModelError(f"ONNX model not found: {p}")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"ONNX model {p} cannot be loaded: {type(exc).__name__}") from None
        self.path = p
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """All outputs for a float32 batch."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})

    def __call__(self, x: np.ndarray) -> Any:
        return self.run(x)
