"""A trained ``dsc`` checkpoint ready to run, torch or ONNX Runtime: the class probabilities
alone (the decision's graph), or the probabilities + input x gradient of p(up) - p(down) (the
explanation's graph).

Both backends run :class:`models.attribution.ExplainedConv` (the probabilities are its forward
ops, the attribution its hand-written backward), so they agree to ~1e-7; the ONNX files are
exported beside the checkpoint at train time, or on first use if missing or of another model.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch

from bot.errors import ModelError
from models.attribution import ConvProbs, ExplainedConv
from models.checkpoint import Checkpoint, load_checkpoint, onnx_path
from models.dsc import build
from models.features import FEATURE_NAMES, N_FEATURES
from models.normalize import load_normalizer
from models.onnx_backend import OnnxRunner, ensure_export, export_onnx

Backend = Literal["torch", "onnx"]
KIND = "dsc"
T = TypeVar("T")


#: The exported graphs: name -> its outputs. ``probs`` decides; ``explain`` also attributes.
GRAPHS: dict[str, list[str]] = {"probs": ["probs"], "explain": ["probs", "attribution"]}


def explain_onnx_path(ckpt_path: str | Path, graph: str = "explain") -> Path:
    return onnx_path(ckpt_path, graph)


def export_explain(net: ExplainedConv, path: Path, window: int, model_id: str, graph: str = "explain") -> Path:
    """Export one of :data:`GRAPHS` of ``net``, tagged with the model id and the attributed quantity
    (a file exported for another target is exported again)."""
    module = net if graph == "explain" else ConvProbs(net)
    return export_onnx(module, torch.zeros(1, N_FEATURES, window), path, GRAPHS[graph], _tag(model_id, net))


def _tag(model_id: str, net: ExplainedConv) -> str:
    return f"{model_id}:{net.target}"


class DSCRuntime:
    """Loads and checks a checkpoint; ``probs(x)`` -> probs [B, 3]; ``explain(x)`` -> (probs,
    attribution [B, F, W])."""

    def __init__(self, path: str | Path, backend: Backend = "torch", window: int | None = None,
                 threads: int = 1) -> None:
        self.ckpt: Checkpoint = load_checkpoint(path, kind=KIND, feature_names=FEATURE_NAMES, window=window)
        meta = self.ckpt.meta
        self.meta = meta
        self._model_id = meta.model_id  # a hash of the metadata: computed once
        self.window = int(meta.window)
        self.horizon = int(meta.horizon)
        self.normalizer = load_normalizer(meta.normalizer)  # fitted or rolling (models.normalize)
        arch = str(meta.extra.get("arch", "dsc"))
        try:
            model = build(arch, dict(meta.hparams))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"checkpoint {path} has unusable hyper-parameters: {exc}") from None
        self.model = self.ckpt.load_into("model", model)
        self.net = ExplainedConv(self.model).eval()
        self.backend = backend
        self._ort: OnnxRunner | None = None
        self._ort_probs: OnnxRunner | None = None
        if backend == "onnx":
            self._ort = OnnxRunner(self._ensure_onnx(Path(path), "explain"), threads=threads)
            self._ort_probs = OnnxRunner(self._ensure_onnx(Path(path), "probs"), threads=threads)
        elif backend != "torch":
            raise ModelError(f"unknown backend {backend!r}: expected torch or onnx")

    @property
    def model_id(self) -> str:
        return self._model_id

    def _ensure_onnx(self, ckpt_path: Path, graph: str) -> Path:
        module = self.net if graph == "explain" else ConvProbs(self.net)
        return ensure_export(module, torch.zeros(1, N_FEATURES, self.window), explain_onnx_path(ckpt_path, graph),
                             GRAPHS[graph], _tag(self.model_id, self.net))

    def probs(self, x: np.ndarray) -> np.ndarray:
        """x: float32 [B, F, W] (normalised) -> probs float64 [B, 3]: the decision, no attribution."""
        if self._ort_probs is not None:
            return self._ort_probs.run(x)[0].astype(np.float64)
        with torch.inference_mode():
            p = self.net.probs(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return p.numpy().astype(np.float64)

    def explain(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x: float32 [B, F, W] (normalised) -> (probs float64 [B, 3], attribution float64 [B, F, W]),
        on the runtime's own threads (one window for a decision, or one chunk of :meth:`explain_map`).
        The batched backtest path decides as the bar-by-bar one (tests/test_dsc_strategy.py)."""
        if self._ort is not None:
            probs, attr = self._ort.run(x)
            return probs.astype(np.float64), attr.astype(np.float64)
        with torch.inference_mode():
            p, a = self.net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return p.numpy().astype(np.float64), a.numpy().astype(np.float64)

    def explain_map(self, chunks: Iterable[np.ndarray], then: Callable[[np.ndarray, np.ndarray], T]) -> list[T]:
        """``then(*explain(chunk))`` of every chunk, in order (backtests, evaluation).

        Under ONNX Runtime the chunks run side by side, one per core, on the runtime's
        one-thread session (a session runs concurrent calls): the explain graph's transposed
        convolutions gain nothing from a second intra-op thread, a second chunk on the other core
        halves the pass. ``then`` runs in the same worker, so its numpy work overlaps too. At most
        two chunks per worker are in flight, so the windows are never all in memory at once.
        Torch runs the chunks one after another on its own intra-op threads."""
        workers = os.cpu_count() or 1
        if self._ort is None or workers == 1:
            return [then(*self.explain(x)) for x in chunks]
        out: list[T] = []
        with ThreadPoolExecutor(workers, thread_name_prefix="dsc-explain") as pool:
            flight: deque[Future[T]] = deque()
            for x in chunks:
                flight.append(pool.submit(lambda x=x: then(*self.explain(x))))
                if len(flight) >= 2 * workers:
                    out.append(flight.popleft().result())
            out.extend(f.result() for f in flight)
        return out

    def explain_batched(self, x: np.ndarray, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`explain` over many windows: (probs [N, 3], attribution [N, F, W])."""
        parts = self.explain_map((x[s:s + batch] for s in range(0, x.shape[0], batch)), lambda p, a: (p, a))
        if not parts:
            return np.zeros((0, 3)), np.zeros((0, N_FEATURES, self.window))
        return np.concatenate([p for p, _ in parts]), np.concatenate([a for _, a in parts])
