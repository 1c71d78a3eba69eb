"""The attribution methods of the classifiers and the explanation contract's ``attribution`` block.

Every method attributes ``p(up) - p(down)`` (a positive value pushes toward up) except the
attention rollout, whose weights are unsigned shares. Layouts here are ``[B, W, F]`` (oldest step
first, the newest bar last); ``dsc`` windows are ``[B, F, W]`` and are transposed by the caller.

- ``signed_grad_x_input``: ``x * d target / d x`` summed over features (per step) and over steps
  (per feature), signs kept;
- ``abs_grad_x_input``: the same with ``|x * d target / d x|`` (magnitude only, unsigned);
- ``rollout``: attention rollout (Abnar & Zuidema 2020, :mod:`models.rollout`, unchanged);
- ``grad_rollout``: gradient-weighted rollout in the spirit of Chefer et al. 2021: per layer
  ``mean_heads((A * dA/d target)^+)``, rolled out with the identity residual ``R = (I + A') R``,
  the row the head reads. Its target is ``|p(up) - p(down)|``: the gradient is taken toward the side
  the model leans to (Chefer et al. take the predicted class's), since the positive part of an
  unsigned map can only say "pushes toward", and toward up is wrong half the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.labels import DOWN, UP

TARGET = "p(up) - p(down)"
GRAD_METHODS = ("signed_grad_x_input", "abs_grad_x_input")
TRANSFORMER_METHODS = (*GRAD_METHODS, "rollout", "grad_rollout")
DEFAULT_METHOD = "signed_grad_x_input"  # old checkpoints without a stored ranking
SIGNED = frozenset({"signed_grad_x_input"})
TARGETS = {"rollout": "attention flow", "grad_rollout": "|p(up) - p(down)|"}  # the others: TARGET


@dataclass(frozen=True, slots=True)
class Attribution:
    """One method's scores for a batch: steps [B, W] (oldest first), features [B, F] or None."""

    method: str
    steps: np.ndarray
    features: np.ndarray | None

    @property
    def signed(self) -> bool:
        return self.method in SIGNED


def from_grad_x_input(gxi: np.ndarray, method: str) -> Attribution:
    """[B, W, F] ``x * grad`` -> the signed or absolute method's per-step and per-feature scores."""
    a = np.abs(gxi) if method == "abs_grad_x_input" else gxi
    return Attribution(method, a.sum(axis=2), a.sum(axis=1))


def margin(probs: np.ndarray) -> np.ndarray:
    """The attributed quantity p(up) - p(down), [B]."""
    return probs[:, UP] - probs[:, DOWN]


def transformer_gradients(net: torch.nn.Module, x: torch.Tensor, position: int | None
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """One forward + one backward of ``p(up) - p(down)``: (probs [B, K], x * grad [B, W, F],
    gradient-weighted rollout row [B, W], the attention maps of the forward pass).
    ``net`` is a :class:`models.transformer.TransformerClassifier`."""
    with torch.enable_grad():
        xx = x.detach().clone().requires_grad_(True)
        logits, attentions = net.forward_explained(xx)
        probs = logits.softmax(dim=-1)
        target = (probs[:, UP] - probs[:, DOWN]).sum()
        grads = torch.autograd.grad(target, [xx, *attentions])
    gx, g_att = grads[0], grads[1:]
    # d|m|/dA = sign(m) * dm/dA per sample: the gradient toward the side the model leans to
    m = probs[:, UP] - probs[:, DOWN]
    side = torch.where(m >= 0, 1.0, -1.0).to(m.dtype).view(-1, 1, 1, 1).detach()
    toward = [side * g for g in g_att]
    maps = [a.detach() for a in attentions]
    return probs.detach(), (xx * gx).detach(), grad_rollout(maps, toward, position), maps


def grad_rollout(attentions: list[torch.Tensor], grads: list[torch.Tensor], position: int | None) -> torch.Tensor:
    """Chefer et al. 2021 rule: ``R = I``; per layer ``R = R + mean_h((A * dA)^+) @ R``; the head's row.

    ``attentions`` / ``grads``: one ``[B, heads, n, n]`` per layer, first layer first. ``position``
    -1 reads the newest step's row; None averages the rows (a mean-pooled head).
    """
    b, _, n, _ = attentions[0].shape
    r = torch.eye(n, dtype=attentions[0].dtype).expand(b, n, n)
    for a, g in zip(attentions, grads, strict=True):
        cam = (a * g).clamp(min=0).mean(dim=1)
        r = r + cam @ r
    return r.mean(dim=1) if position is None else r[:, position, :]


def sig4(v: float) -> float:
    """A float rounded to 4 significant digits (the contract's precision)."""
    return float(f"{float(v):.4g}")


def sig4_all(values: Any) -> list[float]:
    """:func:`sig4` of each value of an array-like (Python floats first: a numpy scalar per value
    costs as much as its rounding)."""
    return [float(f"{v:.4g}") for v in np.asarray(values, dtype=np.float64).ravel().tolist()]


#: Exact powers of ten as floats (10**22 is the last one a float64 holds exactly).
_P10 = np.array([float(10**i) for i in range(23)])


def sig4_array(values: Any) -> np.ndarray:
    """:func:`sig4` of every value of an array, vectorised (a backtest's precomputed attributions,
    every window at once), equal to it value for value.

    With ``d = 3 - floor(log10|v|)`` and ``p = 10**|d|`` (exact), ``k = rint(v * p)`` (or ``v / p``)
    is the 4-digit integer the text rounding picks unless ``v * p`` lies within rounding error of a
    half; then ``k / p`` (or ``k * p``), one correctly rounded operation on exact operands, is the
    float nearest ``k * 10**-d``: what parsing the text gives. Near-halves, a ``k`` outside
    [1000, 10000] (an exponent off by one), zeros, non-finite values and ``|d| > 22`` go through
    :func:`sig4` itself."""
    a = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = 3.0 - np.floor(np.log10(np.abs(a)))
        usable = np.isfinite(d) & (np.abs(d) <= 22)
        p = _P10[np.where(usable, np.abs(d), 0).astype(np.intp)]
        up = d >= 0
        y = np.where(up, a * p, a / p)
        k = np.rint(y)
        r = np.where(up, k / p, k * p)
        frac = np.abs(y - np.floor(y) - 0.5)
        ok = usable & (frac > 1e-6) & (np.abs(k) >= 1000) & (np.abs(k) <= 10000)
    out = np.where(ok, r, a)
    rest = np.flatnonzero(~ok.ravel())
    if rest.size:
        flat = out.reshape(-1)
        flat[rest] = [float(f"{v:.4g}") for v in a.reshape(-1)[rest].tolist()]
    return out


def faithfulness_block(stored: dict[str, Any] | None, method: str) -> dict[str, Any] | None:
    """The contract's ``faithfulness`` of ``method`` from a checkpoint's stored selection, or None."""
    if not stored:
        return None
    row = (stored.get("table") or {}).get(method)
    if not row:
        return None
    ranking = list(stored.get("ranking") or [])
    block = {"k": int(row["k"]), "windows": int(row["windows"])}
    for key in ("older_top_k_drop", "older_random_k_drop", "newest_drop"):
        block[key] = sig4(row[key])
    block["rank"] = ranking.index(method) + 1 if method in ranking else None
    return block


def attribution_block(method: str, steps: np.ndarray, features: np.ndarray | None,
                      feature_names: tuple[str, ...] | list[str], bar_ms: int,
                      faithfulness: dict[str, Any] | None, *, rounded: bool = False) -> dict[str, Any]:
    """One decision's ``attribution`` in the contract's shape (steps oldest first, 4 digits);
    ``rounded``: the scores are :func:`sig4_array`'s already."""
    signed = method in SIGNED
    four = _as_floats if rounded else sig4_all
    return {
        "method": method,
        "toward": "up" if signed else None,
        "target": TARGETS.get(method, TARGET),
        "steps": four(steps),
        "bar_ms": int(bar_ms),
        "features": None if features is None else dict(zip(feature_names, four(features), strict=True)),
        "faithfulness": faithfulness,
    }


def _as_floats(values: np.ndarray) -> list[float]:
    return np.asarray(values, dtype=np.float64).ravel().tolist()  # type: ignore[no-any-return]


def choose(requested: str, stored: dict[str, Any] | None, available: tuple[str, ...]) -> str:
    """The method to store: ``requested``, or for "auto" the checkpoint's winner (validation
    deletion test), or :data:`DEFAULT_METHOD` for a checkpoint trained before the selection."""
    if requested != "auto":
        method = requested
    else:
        method = str((stored or {}).get("winner") or DEFAULT_METHOD)
    if method not in available:
        raise ValueError(f"explain method {method!r} is not one of {', '.join(available)}")
    return method


_CLASS_WORDS = ("down", "flat", "up")


def rule_block(probs: np.ndarray, threshold: float, signal: str) -> dict[str, Any]:
    """The decision rule in words: the top class's probability against the threshold -> the signal."""
    top = int(np.asarray(probs).argmax())
    p = float(probs[top])
    op = ">=" if p >= threshold else "<"
    text = f"p({_CLASS_WORDS[top]}) = {p:.2f} {op} {threshold:.2f} -> {signal}"
    if top == 1 and p >= threshold:
        text = f"p(flat) = {p:.2f} is the top class -> flat"
    return {"threshold": float(threshold), "text": text}
