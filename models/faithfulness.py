"""Does an attribution point at the inputs the model actually uses? A masking test.

For each window, the k steps with the highest attribution are replaced by the window's mean
(per feature) and the drop of the originally predicted class's probability is measured; the
same is done for k random steps (several draws) and for the k most recent steps. A faithful
attribution moves the prediction more than random masking. Abnar & Zuidema (2020) do not run
this check; we report it either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def mask_steps(x: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Copy of ``x`` [B, W, F] with the given steps [B, k] replaced by each window's mean."""
    out = x.copy()
    mean = x.mean(axis=1, keepdims=True)  # [B, 1, F]
    mask = np.zeros(x.shape[:2], dtype=bool)
    np.put_along_axis(mask, steps, True, axis=1)
    return np.where(mask[..., None], mean, out)


def masking_faithfulness(predict_probs: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                         attribution: np.ndarray, ks: Sequence[int] = (1, 3, 5), n_random: int = 5,
                         seed: int = 0) -> dict[str, Any]:
    """Average probability drop of the predicted class for top-k, random-k and most-recent-k masking.

    ``x`` [B, W, F] model inputs, ``attribution`` [B, W]. Returns one dict per k with the mean
    drops, the share of windows where top-k beat the mean random drop, the same top-k / random-k
    pair restricted to the older steps (newest step excluded), and the sample count.
    """
    rng = np.random.default_rng(seed)
    b, w, _ = x.shape
    p0 = predict_probs(x)
    cls = p0.argmax(axis=1)
    rows = np.arange(b)
    base = p0[rows, cls]

    def drop(steps: np.ndarray) -> np.ndarray:
        return base - predict_probs(mask_steps(x, steps))[rows, cls]

    order = np.argsort(-attribution, axis=1, kind="stable")
    # The same test without the newest step (which rollout favours by construction through the
    # residual term): does the attribution still find what matters among the older steps?
    older = np.argsort(-attribution[:, :-1], axis=1, kind="stable")
    out: dict[str, Any] = {"samples": int(b), "random_draws": n_random}
    for k in ks:
        k = min(k, w - 1)
        top = drop(order[:, :k])
        rand = np.mean([drop(rng.random((b, w)).argsort(axis=1)[:, :k]) for _ in range(n_random)], axis=0)
        recent = drop(np.tile(np.arange(w - k, w), (b, 1)))
        top_old = drop(older[:, :k])
        rand_old = np.mean([drop(rng.random((b, w - 1)).argsort(axis=1)[:, :k]) for _ in range(n_random)],
                           axis=0)
        out[f"k{k}"] = {
            "top_k_drop": float(top.mean()),
            "random_k_drop": float(rand.mean()),
            "recent_k_drop": float(recent.mean()),
            "top_beats_random_share": float((top > rand).mean()),
            "older_top_k_drop": float(top_old.mean()),
            "older_random_k_drop": float(rand_old.mean()),
        }
    return out
