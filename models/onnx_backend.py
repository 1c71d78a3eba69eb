"""ONNX export and an ONNX Runtime runner (1 thread, CPU) for fast single-sample inference.

Used by any model kind: export a module whose ``forward`` takes one float32 tensor with a
dynamic batch axis, then run it with :class:`OnnxRunner`. Export uses the TorchScript-based
exporter (``dynamo=False``): deterministic, no extra dependencies, fine for these small graphs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bot.errors import ModelError

OPSET = 17


def export_onnx(module: nn.Module, example: torch.Tensor, path: str | Path, output_names: list[str],
                tag: str | None = None) -> Path:
    """Export ``module`` (eval mode) with a dynamic batch axis, tagged with ``tag`` (the model it
    was exported from, see :func:`export_tag`); written atomically."""
    p = Path(path)
    # Its own temporary name: processes exporting the same checkpoint at once never share a file.
    tmp = p.with_name(f"{p.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    module = module.eval()
    axes: dict[str, dict[int, str]] = {"x": {0: "batch"}}
    axes.update({n: {0: "batch"} for n in output_names})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(tmp), input_names=["x"], output_names=output_names,
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        if tag is not None:
            import onnx

            proto = onnx.load(str(tmp))
            proto.metadata_props.add(key=TAG, value=tag)
            onnx.save(proto, str(tmp))
        os.replace(tmp, p)
    except Exception as exc:  # noqa: BLE001 - exporter errors are many and varied
        with contextlib.suppress(OSError):  # never written, or its folder is not one
            tmp.unlink()
        raise ModelError(f"ONNX export to {p} failed: {type(exc).__name__}: {str(exc)[:200]}") from None
    return p


#: The metadata key an export's tag is stored under.
TAG = "model_id"


def export_tag(path: str | Path) -> str | None:
    """The tag :func:`export_onnx` stored in ``path``; None if absent or unreadable."""
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - unreadable means "export again"
        return None
    return next((p.value for p in proto.metadata_props if p.key == TAG), None)


def ensure_export(module: nn.Module, example: torch.Tensor, path: str | Path, output_names: list[str],
                  tag: str) -> Path:
    """``path`` if it holds an export tagged ``tag``; else ``module`` exported there now, or into a
    temporary folder where the checkpoint's folder cannot be written."""
    p = Path(path)
    if p.exists() and export_tag(p) == tag:
        return p
    try:
        return export_onnx(module, example, p, output_names, tag)
    except ModelError:
        tmp = Path(tempfile.mkdtemp(prefix="onnx_")) / p.name
        return export_onnx(module, example, tmp, output_names, tag)


def exported_runner(module: nn.Module, example: torch.Tensor, path: Path | None, output_names: list[str],
                    tag: str, name: str) -> OnnxRunner:
    """A one-thread session of :func:`ensure_export` at ``path`` (beside a checkpoint), or of a
    fresh export named ``name`` in a temporary folder when there is no checkpoint file."""
    target = path if path is not None else Path(tempfile.mkdtemp(prefix="onnx_")) / name
    return OnnxRunner(ensure_export(module, example, target, output_names, tag))


def linear_f64(layer: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    """A linear layer as float64 NumPy: (weight transposed [in, out], bias [out]), for heads run
    outside an exported graph."""
    return layer.weight.detach().double().numpy().T.copy(), layer.bias.detach().double().numpy()


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
