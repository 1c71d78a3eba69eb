"""``gru_sizer``'s stage 1 at trading time: windows [B, W, F] -> (feature vectors [B, d], scaled
path [B, k]), float64, for the decision (the attribution's backward pass stays in torch).

``onnx`` (default): the encoder's body (embedding, blocks, final norm) under ONNX Runtime in
float32 on one thread, then its pooling and both heads in float64 NumPy. The body gives a window
the same bits alone as inside a batch: every matrix product there has ``B x W`` rows and every
reduction runs over the last axis. The pooling's mean over the window axis does not (ONNX
Runtime reduces a batch of one in another order), so it runs outside, in NumPy, as the heads do
(``einsum``, row by row): a window's stage 1 is the same bits in the batched backtest as bar by
bar (``tests/test_gru_strategy.py``). The body's export is kept beside the checkpoint
(``<stem>.encoder.onnx``, tagged with the model id).

``torch``: the whole encoder in float64, a frozen trace for one window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from bot.errors import ModelError
from models.onnx_backend import OnnxRunner, exported_runner, linear_f64
from models.price_encoder import PriceEncoder
from models.trace import traced

Backend = Literal["torch", "onnx"]


class EncoderBody(nn.Module):
    """windows [B, W, F] -> the final norm's output [B, W, d_model]: the encoder before pooling."""

    def __init__(self, encoder: PriceEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> Tensor:
        enc = self.encoder
        h = enc.embed(x)
        table = enc.rotary_for(x)
        for layer in enc.layers:
            h = layer(h, table)
        return enc.norm(h)


class EncoderRuntime:
    """Stage 1 for decisions: :meth:`encode` windows -> (features, path in the encoder's units)."""

    def __init__(self, encoder: PriceEncoder, backend: Backend = "onnx", onnx_file: Path | None = None,
                 tag: str = "") -> None:
        self.backend = backend
        self.window = encoder.cfg.window
        self._ort: OnnxRunner | None = None
        self._one: Any = None
        if backend == "onnx":
            body = PriceEncoder(encoder.cfg).float().eval()
            body.load_state_dict(encoder.state_dict())
            example = torch.zeros(1, encoder.cfg.window, encoder.cfg.n_features)
            self._ort = exported_runner(EncoderBody(body), example, onnx_file, ["h"], tag, "gru_sizer.encoder.onnx")
            self._w1, self._b1 = linear_f64(body.feature_head[0])
            self._w2, self._b2 = linear_f64(body.price_head)
        elif backend == "torch":
            self._enc = PriceEncoder(encoder.cfg).double().eval()
            self._enc.load_state_dict(encoder.state_dict())
            self._enc.requires_grad_(False)
        else:
            raise ModelError(f"unknown backend {backend!r}: expected torch or onnx")

    def encode(self, x: np.ndarray, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """x: windows [B, W, F] (normalised) -> (features [B, d], path [B, k]), float64."""
        if self._ort is not None:
            feats, paths = [], []
            for s in range(0, x.shape[0], chunk):
                h = self._ort.run(x[s:s + chunk])[0].astype(np.float64)
                pooled = np.concatenate([h[:, -1], h.mean(axis=1)], axis=1)
                # einsum's own loop, row by row: a window's outputs are the same bits alone as in a batch
                f = np.tanh(np.einsum("bk,kd->bd", pooled, self._w1) + self._b1)
                feats.append(f)
                paths.append(np.einsum("bd,dk->bk", f, self._w2) + self._b2)
            if not feats:
                return np.zeros((0, self._w1.shape[1])), np.zeros((0, self._w2.shape[1]))
            return np.concatenate(feats), np.concatenate(paths)
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float64)
        with torch.no_grad():
            if xt.shape[0] == 1 and xt.shape[1] == self.window:  # one window: the trace
                if self._one is None:
                    self._one = traced(self._enc, xt)
                f, p = self._one(xt)
                return f.numpy(), p.numpy()
            parts = [self._enc(xt[s:s + chunk]) for s in range(0, xt.shape[0], chunk)]
        if not parts:
            return np.zeros((0, self._enc.cfg.feature_dim)), np.zeros((0, self._enc.cfg.horizon))
        return np.concatenate([f.numpy() for f, _ in parts]), np.concatenate([p.numpy() for _, p in parts])
