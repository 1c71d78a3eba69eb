"""The ``rollout`` model at run time: settings, checkpoint loading, and one batched explain call.

:class:`RolloutConfig` is ``strategy.params`` of the ``rollout`` strategy (model size, labels,
rollout and regime settings, decision rule, training). :class:`RolloutExplainer` turns windows
``[B, W, F]`` into class probabilities, the rollout attribution over the window, the recent
share and the regime code in one forward pass, in float64: the explanation of both the
strategy's bar-by-bar path and its batched backtest path. :class:`DecisionGraph` gives both paths
the decision's probabilities (ONNX Runtime by default), a window the same bits alone as in a batch,
so they make the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from bot.errors import ConfigError, ModelError
from models.checkpoint import ModelMeta, load_checkpoint
from models.explain import TRANSFORMER_METHODS, Attribution, from_grad_x_input, transformer_gradients
from models.features import FEATURE_NAMES
from models.labels import LabelRule
from models.normalize import AnyNormalizer, FeatureNorm, load_normalizer
from models.onnx_backend import OnnxRunner, exported_runner, linear_f64
from models.rollout import attention_rollout, input_attribution, recent_steps
from models.trace import traced
from models.training import TrainConfig
from models.transformer import TransformerClassifier, TransformerConfig

KIND = "rollout"
Backend = Literal["torch", "onnx"]


class RolloutConfig(BaseModel):
    """Model, label, rollout, decision and training settings of ``rollout`` (``strategy.params``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(48, ge=4, le=512)
    horizon: int = Field(4, ge=1, le=500)
    #: Flat band half-width for labels; raised to the round-trip fee (2 x broker.fee_rate).
    threshold: float = Field(0.0, ge=0, lt=1)
    #: The label rule: band (default, the threshold above) or vol (k x trailing sigma).
    label: LabelRule = LabelRule()
    d_model: int = Field(32, ge=4, le=512)
    n_heads: int = Field(4, ge=1, le=32)
    n_layers: int = Field(2, ge=1, le=12)
    d_ff: int = Field(64, ge=4, le=2048)
    dropout: float = Field(0.1, ge=0, lt=1)
    positions: Literal["sinusoidal", "learned"] = "sinusoidal"
    pool: Literal["last", "mean"] = "last"
    # -- attention rollout (explanation only; the model does not depend on these) --
    #: The stored attribution: auto = the checkpoint's most faithful method on validation data.
    explain: Literal["auto", "signed_grad_x_input", "abs_grad_x_input", "rollout", "grad_rollout"] = "auto"
    head_fusion: Literal["mean", "max", "min"] = "mean"
    discard_ratio: float = Field(0.0, ge=0, lt=1)
    residual_weight: float = Field(0.5, ge=0, le=1)
    start_layer: int = Field(0, ge=0)
    #: Regime: share of the attribution on the newest ``recent_fraction`` of the window.
    recent_fraction: float = Field(0.25, gt=0, le=1)
    momentum_above: float = Field(0.6, ge=0, le=1)
    reversion_below: float = Field(0.4, ge=0, le=1)
    # -- decision rule --
    #: Trade only when the top class's probability reaches this; otherwise flat.
    prob_threshold: float = Field(0.5, ge=0, le=1)
    allow_short: bool = True
    #: Backtests: compute every bar's output in batches first (proved equal to bar by bar).
    batch_precompute: bool = True
    #: The decision's runtime: ONNX Runtime in float32 (default) or a float64 torch trace
    #: (:class:`DecisionGraph`); the explanation runs in float64 torch either way.
    backend: Backend = "onnx"
    #: Backtests without a checkpoint train on this leading fraction of the data first.
    #: Feature normalisation: fitted z-score (default) or per-asset rolling (``features.norm: rolling``).
    features: FeatureNorm = FeatureNorm()
    train_fraction: float = Field(0.6, gt=0.1, lt=0.95)
    #: Defaults keep `bot train` to a few minutes on a shared 2-core machine (1 torch thread).
    train: TrainConfig = TrainConfig(epochs=8, batch_size=256, lr=2e-3, patience=3, threads=1,
                                     max_train_samples=8000)

    def model_config_for(self, n_features: int) -> TransformerConfig:
        return TransformerConfig(n_features=n_features, window=self.window, d_model=self.d_model,
                                 n_heads=self.n_heads, n_layers=self.n_layers, d_ff=self.d_ff,
                                 dropout=self.dropout, positions=self.positions, pool=self.pool)


def parse_config(params: dict[str, Any]) -> RolloutConfig:
    """Validate ``strategy.params``; a bad key or value is one ConfigError line."""
    try:
        cfg = RolloutConfig.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = "unknown parameter" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"strategy.params.{loc}: {msg} (strategy rollout)") from None
    if cfg.d_model % cfg.n_heads:
        raise ConfigError(f"strategy.params.d_model: {cfg.d_model} is not divisible by n_heads {cfg.n_heads}")
    if cfg.start_layer >= cfg.n_layers:
        raise ConfigError(f"strategy.params.start_layer: {cfg.start_layer} must be below n_layers {cfg.n_layers}")
    if cfg.reversion_below > cfg.momentum_above:
        raise ConfigError("strategy.params.reversion_below must not exceed momentum_above")
    return cfg


@dataclass(frozen=True, slots=True)
class Explained:
    """Batched outputs: probs [B, 3], attribution [B, W] (rows sum to 1), share [B], regime [B]."""

    probs: np.ndarray
    attribution: np.ndarray
    share: np.ndarray
    regime: np.ndarray


class ExplainGraph(nn.Module):
    """windows [B, W, F] -> (probs [B, 3], attribution [B, W]): the model and the rollout in one graph."""

    def __init__(self, net: TransformerClassifier, cfg: RolloutConfig, position: int | None) -> None:
        super().__init__()
        self.net = net
        self.head_fusion, self.discard_ratio = cfg.head_fusion, cfg.discard_ratio
        self.residual_weight, self.start_layer = cfg.residual_weight, cfg.start_layer
        self.position = position

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, attentions = self.net.forward_explained(x)
        r = attention_rollout(attentions, self.head_fusion, self.discard_ratio, self.residual_weight,
                              self.start_layer)
        return logits.softmax(dim=-1), input_attribution(r, self.position)


class RolloutExplainer:
    """Probabilities + attention-rollout attribution for windows [B, W, F], in float64."""

    def __init__(self, model: TransformerClassifier, cfg: RolloutConfig,
                 dtype: torch.dtype = torch.float64) -> None:
        # A private copy in ``dtype`` (float64 by default: batch and bar-by-bar agree far below
        # any decision boundary); the caller's model is left untouched.
        self.net = _copy(model, dtype)
        self.cfg = cfg
        self.dtype = dtype
        self.position: int | None = -1 if model.cfg.pool == "last" else None
        if cfg.start_layer >= model.cfg.n_layers:
            raise ModelError(f"start_layer {cfg.start_layer} is not below the model's {model.cfg.n_layers} layers")
        self.graph = ExplainGraph(self.net, cfg, self.position).eval()
        self._one: Any = None  # the per-candle graph, traced on first use

    def _finish(self, p: torch.Tensor, a: torch.Tensor) -> Explained:
        # The regime rule of models.rollout (recent_share + regime_codes), in NumPy: for one
        # sample a handful of torch ops cost more than the rest of the decision.
        c = self.cfg
        attr = a.numpy()
        n = attr.shape[-1]
        share = attr[:, n - recent_steps(n, c.recent_fraction):].sum(axis=-1)
        codes = np.where(share > c.momentum_above, 2, np.where(share < c.reversion_below, 0, 1))
        return Explained(p.numpy(), attr, share, codes)

    def explain(self, x: np.ndarray | torch.Tensor, chunk: int = 1024) -> Explained:
        """Batched (eager) path for backtests, training cards and evaluation."""
        xt = torch.as_tensor(x).to(self.dtype)
        with torch.inference_mode():
            parts = [self.graph(xt[s:s + chunk]) for s in range(0, xt.shape[0], chunk)]
            if not parts:
                return self._finish(torch.zeros(0, 3, dtype=self.dtype), torch.zeros(0, xt.shape[1], dtype=self.dtype))
            p = torch.cat([q for q, _ in parts]) if len(parts) > 1 else parts[0][0]
            a = torch.cat([w for _, w in parts]) if len(parts) > 1 else parts[0][1]
            return self._finish(p, a)

    def explain_one(self, window: np.ndarray) -> Explained:
        """One window [W, F] (the per-candle path). Runs a TorchScript trace of the same graph:
        the same kernels and numbers at about half the Python overhead (``bench/rollout_latency.py``);
        falls back to eager where a trace would not be exact."""
        xt = torch.from_numpy(np.ascontiguousarray(window)).to(self.dtype).unsqueeze(0)
        with torch.inference_mode():
            if self._one is None:
                self._one = self._trace(xt)
            return self._finish(*self._one(xt))

    def _trace(self, example: torch.Tensor) -> Any:
        # The trace freezes data-dependent branches at their traced value. The only one is the
        # zero-row guard of the rollout's row normalisation, which cannot fire when the residual
        # term adds a positive identity; without it (residual_weight 0) stay eager.
        return traced(self.graph, example, self.cfg.residual_weight > 0 and example.shape[1] == self.net.cfg.window)

    def attributions(self, x: np.ndarray, methods: tuple[str, ...] = TRANSFORMER_METHODS,
                     chunk: int = 1024) -> tuple[Explained, dict[str, Attribution]]:
        """The rollout outputs plus each requested method's attribution (``models.explain``), for
        windows [B, W, F]. With a gradient method, one forward + one backward of p(up) - p(down)
        gives all of them (the rollout is rolled out from the same forward pass's maps)."""
        if all(m == "rollout" for m in methods):
            ex = self.explain(x, chunk)
            return ex, {m: Attribution("rollout", ex.attribution, None) for m in methods}
        c = self.cfg
        xt = torch.as_tensor(x).to(self.dtype)
        probs, gxi, rows, rolled = [], [], [], []
        for s in range(0, xt.shape[0], chunk):
            p, g, r, maps = transformer_gradients(self.net, xt[s:s + chunk], self.position)
            with torch.inference_mode():
                roll = attention_rollout(maps, c.head_fusion, c.discard_ratio, c.residual_weight, c.start_layer)
                rolled.append(input_attribution(roll, self.position))
            probs.append(p)
            gxi.append(g.numpy())
            rows.append(r.numpy())
        if not probs:
            return self.explain(x, chunk), {}
        ex = self._finish(torch.cat(probs), torch.cat(rolled))
        gx = np.concatenate(gxi)
        out: dict[str, Attribution] = {}
        for m in methods:
            if m == "rollout":
                out[m] = Attribution(m, ex.attribution, None)
            elif m == "grad_rollout":
                out[m] = Attribution(m, np.concatenate(rows), None)
            else:
                out[m] = from_grad_x_input(gx, m)
        return ex, out

    def predict_probs(self, x: np.ndarray) -> np.ndarray:
        """Probabilities only (used by the faithfulness test)."""
        xt = torch.as_tensor(x).to(self.dtype)
        with torch.inference_mode():
            return torch.cat([self.net(xt[s:s + 2048]).softmax(-1) for s in range(0, xt.shape[0], 2048)]).numpy()


class ProbsGraph(nn.Module):
    """windows [B, W, F] -> probs [B, 3]: what the decision needs, and nothing else."""

    def __init__(self, net: TransformerClassifier) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).softmax(dim=-1)


def _copy(model: TransformerClassifier, dtype: torch.dtype) -> TransformerClassifier:
    """A private, frozen copy of ``model`` in ``dtype``: the caller's model is left untouched."""
    net = TransformerClassifier(model.cfg).to(dtype)
    net.load_state_dict(model.state_dict())
    return net.eval().requires_grad_(False)


class Body(nn.Module):
    """windows [B, W, F] -> the final norm's output [B, W, d_model]: the model before its pooling."""

    def __init__(self, net: TransformerClassifier) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.hidden(x)[0]


class DecisionGraph:
    """The decision's forward pass alone: windows [B, W, F] -> probs [B, 3] (float64).

    ``onnx`` (default): the model's :class:`Body` under ONNX Runtime in float32 on one thread,
    exported beside the checkpoint (``<stem>.probs.onnx``, tagged with the model id; exported
    again for another model), then its pooling, head and softmax in float64 NumPy. The body
    gives a window the same bits alone as inside a batch; ONNX Runtime's mean over the window
    axis (``pool: mean``) does not, hence the pooling outside. So a batched backtest decides as
    bar by bar, and one window takes about half the float64 trace's time
    (``bench/model_latency.py``; ``tests/test_rollout_strategy.py``).
    ``torch``: float64, a frozen trace for one window and eager for a batch.
    """

    def __init__(self, model: TransformerClassifier, backend: Backend = "onnx", onnx_file: Path | None = None,
                 tag: str = "") -> None:
        self.backend = backend
        self.window = model.cfg.window
        self._ort: OnnxRunner | None = None
        self._one: Any = None
        if backend == "onnx":
            net = _copy(model, torch.float32)
            example = torch.zeros(1, model.cfg.window, model.cfg.n_features)
            self._ort = exported_runner(Body(net), example, onnx_file, ["h"], f"{tag}:body", "rollout.probs.onnx")
            self._mean = model.cfg.pool == "mean"
            self._w, self._b = linear_f64(net.head)
        elif backend == "torch":
            self._net = _copy(model, torch.float64)
        else:
            raise ModelError(f"unknown backend {backend!r}: expected torch or onnx")

    def probs(self, x: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """x: windows [B, W, F] (normalised) -> probs float64 [B, 3]."""
        if self._ort is not None:
            parts = []
            for s in range(0, x.shape[0], chunk):
                h = self._ort.run(x[s:s + chunk])[0].astype(np.float64)
                # einsum's own loop, row by row: a window's logits are the same bits alone as in a batch
                logits = np.einsum("bd,dc->bc", h.mean(axis=1) if self._mean else h[:, -1], self._w) + self._b
                e = np.exp(logits - logits.max(axis=1, keepdims=True))
                parts.append(e / e.sum(axis=1, keepdims=True))
            return np.concatenate(parts) if parts else np.zeros((0, 3))
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float64)
        with torch.inference_mode():
            if xt.shape[0] == 1 and xt.shape[1] == self.window:  # one window: the trace
                if self._one is None:
                    self._one = traced(ProbsGraph(self._net).eval(), xt)
                return self._one(xt).numpy()
            parts = [ProbsGraph(self._net)(xt[s:s + chunk]) for s in range(0, xt.shape[0], chunk)]
            return torch.cat(parts).numpy() if parts else np.zeros((0, 3))


def load_rollout(path: str | Path, window: int | None = None) -> tuple[TransformerClassifier, ModelMeta, AnyNormalizer]:
    """Load and check a ``rollout`` checkpoint: (model in eval mode, metadata, normaliser)."""
    ck = load_checkpoint(path, kind=KIND, feature_names=FEATURE_NAMES, window=window)
    try:
        tcfg = TransformerConfig(**ck.meta.hparams)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"checkpoint {path} has unusable hyper-parameters: {exc}") from None
    model = ck.load_into("model", TransformerClassifier(tcfg))
    return model, ck.meta, load_normalizer(ck.meta.normalizer)
