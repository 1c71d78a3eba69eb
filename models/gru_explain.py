"""Why did ``gru_sizer`` pick this level? Gradient x input of the expected level, and a deletion test.

The quantity attributed is the sizer's **expected level** ``sum_l l * p(l)`` (stage 2 on top of
stage 1), differentiated with respect to the stage-1 input window ``[window, features]`` with the
GRU state of that bar (hidden state and previous position) held fixed: what the model would have
done at this state with a different window. Two methods:

- ``signed_grad_x_input``: ``x * dE/dx``; a positive value pushes toward a larger position.
- ``abs_grad_x_input``: ``|x * dE/dx|``; unsigned magnitude.

Deletion test (held-back windows, same states): mask the top-k attributed *older* steps (the
newest bar is excluded; masked steps take the window's mean per feature, as in
:mod:`models.faithfulness`) against k random older steps, report the newest bar's own effect
separately, and mask the top-k features (set to 0, the normaliser's training mean) against k
random features. The measured drop is the expected level's; the chosen level's probability is
measured too, with :func:`models.faithfulness.masking_faithfulness` unchanged. Methods are ranked
by ``older_top_k_drop - older_random_k_drop`` of the expected level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models.explain import sig4, sig4_all
from models.faithfulness import mask_steps, masking_faithfulness
from models.price_encoder import PriceEncoder
from models.sizer import N_LEVELS, PositionSizer, SizerRunner, restarts

METHODS = ("signed_grad_x_input", "abs_grad_x_input")
DEFAULT_METHOD = "signed_grad_x_input"
TARGET = "expected level"
TOWARD = {"signed_grad_x_input": "larger position", "abs_grad_x_input": None}
K_STEPS, K_FEATURES, MAX_WINDOWS = 5, 3, 600



def expected_level(logits: Tensor) -> Tensor:
    """[B, 11] logits -> [B] expected level 0..10."""
    levels = torch.arange(N_LEVELS, dtype=logits.dtype, device=logits.device)
    return (logits.softmax(-1) * levels).sum(-1)


def level_logits(encoder: PriceEncoder, sizer: PositionSizer, x: Tensor, h: Tensor, prev: Tensor) -> Tensor:
    """Logits of one GRU step for windows ``x`` [B, W, F] at states (``h`` [B, H], ``prev`` [B])."""
    feat, _ = encoder(x)
    _h, logits, _w, _p = sizer.step(feat, h, prev, None)
    return logits


def grad_x_input(encoder: PriceEncoder, sizer: PositionSizer, x: Tensor, h: Tensor,
                 prev: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(signed ``x * dE/dx`` [B, W, F], level probabilities [B, 11]) at fixed GRU states."""
    with torch.enable_grad():
        xx = x.detach().clone().requires_grad_(True)
        logits = level_logits(encoder, sizer, xx, h.detach(), prev.detach())
        (g,) = torch.autograd.grad(expected_level(logits).sum(), xx)
    return (xx * g).detach().numpy(), logits.detach().softmax(-1).numpy()


def by_method(signed: np.ndarray, method: str) -> np.ndarray:
    """The attribution of ``method`` from the signed gradient x input (same shape)."""
    if method == "signed_grad_x_input":
        return signed
    if method == "abs_grad_x_input":
        return np.abs(signed)
    raise ValueError(f"unknown attribution method {method!r}; known: {', '.join(METHODS)}")


def attribution_block(steps: np.ndarray, features: np.ndarray, method: str, feature_names: Sequence[str],
                      bar_ms: int, faithfulness: dict[str, Any] | None) -> dict[str, Any]:
    """One window's attribution of ``method`` in the explanation contract's shape.

    ``steps`` [W] (oldest first) and ``features`` [F] are the [W, F] attribution summed over
    features and over steps (see :func:`reduce`).
    """
    return {"method": method, "toward": TOWARD[method], "target": TARGET,
            "steps": sig4_all(steps), "bar_ms": int(bar_ms),
            "features": dict(zip(feature_names, sig4_all(features), strict=True)),
            "faithfulness": faithfulness}


def reduce(attr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[..., W, F] attribution -> (per step [..., W], per feature [..., F])."""
    a = np.asarray(attr, dtype=np.float64)
    return a.sum(axis=-1), a.sum(axis=-2)


# -- states of held-back windows ---------------------------------------------------------------------
@torch.no_grad()
def states_before(sizer: PositionSizer, feats: np.ndarray, time: np.ndarray,
                  bar_ms: int, usable: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """GRU (hidden, previous position) just before each step of consecutive ``feats`` [N, d].

    Same recurrence as trading (:class:`~models.sizer.SizerRunner`): argmax levels fed back,
    restarts by :func:`~models.sizer.restarts`; no step on rows whose window spans a gap
    (``usable`` False).
    """
    runner = SizerRunner(sizer)
    hs = np.zeros((feats.shape[0], sizer.cfg.hidden))
    ps = np.zeros(feats.shape[0])
    ok = np.ones(feats.shape[0], dtype=bool) if usable is None else np.asarray(usable, dtype=bool)
    codes = restarts(time, bar_ms, sizer.cfg.steps, ok)
    for i in np.flatnonzero(ok):
        runner.before_step(int(codes[i]))
        hs[i], ps[i] = runner.h[0].numpy(), float(runner.prev[0])
        runner.step(torch.from_numpy(feats[i: i + 1]))
    return hs, ps


class FixedState:
    """The model as a function of the window only, each window at its own fixed GRU state."""

    def __init__(self, encoder: PriceEncoder, sizer: PositionSizer, h: np.ndarray, prev: np.ndarray,
                 batch: int = 256) -> None:
        self.encoder, self.sizer, self.batch = encoder, sizer, batch
        self.dtype = sizer.head.weight.dtype
        self.h = torch.as_tensor(h, dtype=self.dtype)
        self.prev = torch.as_tensor(prev, dtype=self.dtype)

    @torch.no_grad()
    def probs(self, x: np.ndarray) -> np.ndarray:
        out = []
        for s in range(0, x.shape[0], self.batch):
            xb = torch.as_tensor(x[s:s + self.batch], dtype=self.dtype)
            lg = level_logits(self.encoder, self.sizer, xb, self.h[s:s + self.batch], self.prev[s:s + self.batch])
            out.append(lg.softmax(-1).numpy())
        return np.concatenate(out)

    def level(self, x: np.ndarray) -> np.ndarray:
        return self.probs(x) @ np.arange(N_LEVELS, dtype=np.float64)

    def signed(self, x: np.ndarray) -> np.ndarray:
        out = []
        for s in range(0, x.shape[0], self.batch):
            xb = torch.as_tensor(x[s:s + self.batch], dtype=self.dtype)
            a, _ = grad_x_input(self.encoder, self.sizer, xb, self.h[s:s + self.batch], self.prev[s:s + self.batch])
            out.append(a)
        return np.concatenate(out)


# -- the deletion test -------------------------------------------------------------------------------
def mask_features(x: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """Copy of ``x`` [B, W, F] with the given features [B, k] set to 0 (the training mean) at every step."""
    mask = np.zeros((x.shape[0], x.shape[2]), dtype=bool)
    np.put_along_axis(mask, feats, True, axis=1)
    return np.where(mask[:, None, :], 0.0, x).astype(x.dtype)


def deletion_test(level: Callable[[np.ndarray], np.ndarray], probs: Callable[[np.ndarray], np.ndarray],
                  x: np.ndarray, attributions: dict[str, np.ndarray], k: int = K_STEPS,
                  k_features: int = K_FEATURES, n_random: int = 5, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Deletion table per method for windows ``x`` [B, W, F] and attributions {method: [B, W, F]}.

    ``level(x)`` -> [B] expected level, ``probs(x)`` -> [B, 11] level probabilities (both at the
    windows' fixed states). Drops are ``before - after`` (positive: masking lowered the level).
    Random draws are shared by all methods; ``rank`` 1 is the most faithful.
    """
    b, w, f = x.shape
    k, k_features = min(k, w - 1), min(k_features, f - 1)
    rng = np.random.default_rng(seed)
    base = level(x)

    def drop(masked: np.ndarray) -> float:
        return float((base - level(masked)).mean())

    rand_steps = np.mean([drop(mask_steps(x, rng.random((b, w - 1)).argsort(axis=1)[:, :k]))
                          for _ in range(n_random)])
    rand_feats = np.mean([drop(mask_features(x, rng.random((b, f)).argsort(axis=1)[:, :k_features]))
                          for _ in range(n_random)])
    newest = drop(mask_steps(x, np.full((b, 1), w - 1)))
    table: dict[str, dict[str, Any]] = {}
    for name, attr in attributions.items():
        steps = attr.sum(axis=2)
        top = drop(mask_steps(x, np.argsort(-steps[:, :-1], axis=1, kind="stable")[:, :k]))
        top_f = drop(mask_features(x, np.argsort(-attr.sum(axis=1), axis=1, kind="stable")[:, :k_features]))
        lp = masking_faithfulness(probs, x, steps, ks=(k,), n_random=n_random, seed=seed)[f"k{k}"]
        table[name] = {
            "k": k, "windows": int(b), "older_top_k_drop": top, "older_random_k_drop": float(rand_steps),
            "ratio": top / rand_steps if rand_steps > 1e-12 else None,  # only against a real random drop
            "newest_drop": newest,
            "k_features": k_features, "features_top_k_drop": top_f, "features_random_k_drop": float(rand_feats),
            "level_prob_older_top_k_drop": lp["older_top_k_drop"],
            "level_prob_older_random_k_drop": lp["older_random_k_drop"],
        }
    order = sorted(table, key=lambda m: -(table[m]["older_top_k_drop"] - table[m]["older_random_k_drop"]))
    for r, name in enumerate(order, 1):
        table[name]["rank"] = r
    return {m: table[m] for m in order}


def held_back_test(encoder: PriceEncoder, sizer: PositionSizer, z: np.ndarray, time: np.ndarray,
                   bars: np.ndarray, bar_ms: int, first_valid: int, usable: np.ndarray | None = None,
                   max_windows: int = MAX_WINDOWS) -> dict[str, dict[str, Any]]:
    """Deletion table on up to ``max_windows`` evenly spaced windows ending at consecutive ``bars``.

    The GRU states come from running the trading recurrence over ``bars`` (warmed up on the
    ``steps`` bars before, as :func:`models.gru_eval.sizer_levels` does).
    """
    from models.features import make_windows
    from models.gru_data import encode_bars

    b = np.asarray(bars, dtype=np.int64)
    lo = max(first_valid, int(b[0]) - sizer.cfg.steps)
    run = np.arange(lo, int(b[-1]) + 1)
    dtype = sizer.head.weight.dtype
    feats, _ = encode_bars(encoder, z, run, dtype=dtype)
    ok = None if usable is None else np.asarray(usable)[run]
    hs, ps = states_before(sizer, feats, time[run], bar_ms, ok)
    keep = np.flatnonzero((run >= b[0]) & (True if ok is None else ok))
    pick = keep[np.unique(np.linspace(0, keep.size - 1, min(max_windows, keep.size)).round().astype(int))]
    x = make_windows(z, run[pick], encoder.cfg.window, layout="seq")
    model = FixedState(encoder, sizer, hs[pick], ps[pick])
    signed = model.signed(x)
    return deletion_test(model.level, model.probs, x, {m: by_method(signed, m) for m in METHODS})


def deletion_sections(table: dict[str, dict[str, Any]], label: str) -> dict[str, dict[str, Any]]:
    """Metrics sections (one column per method in the card / ``bot evaluate``) of a deletion table."""
    return {f"{label}: {m}": dict(row) for m, row in table.items()}


def contract_faithfulness(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A deletion-table row in the contract's ``faithfulness`` shape (None stays None)."""
    if not row:
        return None
    return {"k": int(row["k"]), "windows": int(row["windows"]),
            "older_top_k_drop": sig4(row["older_top_k_drop"]),
            "older_random_k_drop": sig4(row["older_random_k_drop"]),
            "newest_drop": sig4(row["newest_drop"]), "rank": int(row["rank"])}


def explanation_meta(table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the checkpoint keeps: the winner, the ranking and each method's contract faithfulness."""
    ranking = list(table)
    return {"method": ranking[0], "ranking": ranking, "measured_on": "validation windows",
            "target": TARGET, "faithfulness": {m: contract_faithfulness(table[m]) for m in ranking}}


def stored_choice(extra: dict[str, Any] | None) -> tuple[str, dict[str, dict[str, Any] | None]]:
    """(winning method, {method: faithfulness or None}) from checkpoint ``meta.extra``.

    Checkpoints written before the deletion test: signed gradient x input, faithfulness null.
    """
    ex = (extra or {}).get("explanation") or {}
    method = ex.get("method") if ex.get("method") in METHODS else DEFAULT_METHOD
    faith = ex.get("faithfulness") or {}
    return method, {m: faith.get(m) for m in METHODS}
