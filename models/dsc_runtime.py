"""A trained ``dsc`` checkpoint ready to run: probabilities + input x gradient of p(up) - p(down),
torch or ONNX Runtime.

Both backends run the same :class:`models.attribution.ExplainedConv` graph (one pass gives the
probabilities and the attribution), so they agree to ~1e-7; the ONNX file is exported beside
the checkpoint at train time, or on first use if it is missing or belongs to another model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from bot.errors import ModelError
from models.attribution import ExplainedConv
from models.checkpoint import Checkpoint, load_checkpoint, onnx_path
from models.dsc import build
from models.features import FEATURE_NAMES, N_FEATURES, Normalizer
from models.onnx_backend import OnnxRunner, export_onnx

Backend = Literal["torch", "onnx"]
KIND = "dsc"


def explain_onnx_path(ckpt_path: str | Path) -> Path:
    return onnx_path(ckpt_path, "explain")


def export_explain(net: ExplainedConv, path: Path, window: int, model_id: str) -> Path:
    """Export the probabilities + attribution graph and tag it with the model id."""
    import onnx

    export_onnx(net, torch.zeros(1, N_FEATURES, window), path, ["probs", "attribution"])
    proto = onnx.load(str(path))
    # Tagged with the attributed quantity too: a file exported for another target is exported again.
    proto.metadata_props.add(key="model_id", value=f"{model_id}:{net.target}")
    onnx.save(proto, str(path))
    return path


def _onnx_model_id(path: Path) -> str | None:
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - unreadable means "export again"
        return None
    return next((p.value for p in proto.metadata_props if p.key == "model_id"), None)


class DSCRuntime:
    """Loads and checks a checkpoint; ``explain(x)`` -> (probs [B, 3], attribution [B, F, W])."""

    def __init__(self, path: str | Path, backend: Backend = "torch", window: int | None = None,
                 threads: int = 1) -> None:
        self.ckpt: Checkpoint = load_checkpoint(path, kind=KIND, feature_names=FEATURE_NAMES, window=window)
        meta = self.ckpt.meta
        self.meta = meta
        self.window = int(meta.window)
        self.horizon = int(meta.horizon)
        self.normalizer = Normalizer.from_dict(meta.normalizer)
        arch = str(meta.extra.get("arch", "dsc"))
        try:
            model = build(arch, dict(meta.hparams))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"checkpoint {path} has unusable hyper-parameters: {exc}") from None
        self.model = self.ckpt.load_into("model", model)
        self.net = ExplainedConv(self.model).eval()
        self.backend = backend
        self._ort: OnnxRunner | None = None
        if backend == "onnx":
            self._ort = OnnxRunner(self._ensure_onnx(Path(path)), threads=threads)
        elif backend != "torch":
            raise ModelError(f"unknown backend {backend!r}: expected torch or onnx")

    @property
    def model_id(self) -> str:
        return self.meta.model_id

    def _ensure_onnx(self, ckpt_path: Path) -> Path:
        target = explain_onnx_path(ckpt_path)
        if target.exists() and _onnx_model_id(target) == f"{self.model_id}:{self.net.target}":
            return target
        try:
            return export_explain(self.net, target, self.window, self.model_id)
        except ModelError:
            # Read-only checkpoint folder: export into a temporary file instead.
            tmp = Path(tempfile.mkdtemp(prefix="dsc_onnx_")) / target.name
            return export_explain(self.net, tmp, self.window, self.model_id)

    def explain(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x: float32 [B, F, W] (normalised) -> (probs float64 [B, 3], attribution float64 [B, F, W])."""
        if self._ort is not None:
            probs, attr = self._ort.run(x)
            return probs.astype(np.float64), attr.astype(np.float64)
        with torch.inference_mode():
            p, a = self.net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return p.numpy().astype(np.float64), a.numpy().astype(np.float64)

    def explain_batched(self, x: np.ndarray, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`explain` over many windows in chunks (backtests, evaluation)."""
        ps, ats = [], []
        for s in range(0, x.shape[0], batch):
            p, a = self.explain(x[s:s + batch])
            ps.append(p)
            ats.append(a)
        if not ps:
            return np.zeros((0, 3)), np.zeros((0, N_FEATURES, self.window))
        return np.concatenate(ps), np.concatenate(ats)
