"""Does an attribution point at the inputs the model actually uses? A masking test.

For each window, the k steps with the highest attribution are replaced by the window's mean
(per feature) and the drop of the originally predicted class's probability is measured; the
same is done for k random steps (several draws) and for the k most recent steps. A faithful
attribution moves the prediction more than random masking. Abnar & Zuidema (2020) do not run
this check; we report it either way.

:func:`deletion_test` is the one test every attribution method of ``dsc`` and ``rollout`` goes
through (issue 14): the drop of the attributed quantity p(up) - p(down) when the top-k older steps
(or top features) are masked, against random ones, the newest bar apart; :func:`selection` is what
a checkpoint stores (ranking + winner, from validation windows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from models.labels import DOWN, UP


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


# -- the deletion test of issue 14: every method, the same windows, the same random draws ------------

def mask_features(x: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """Copy of ``x`` [B, W, F] with the given features [B, k] held at each window's mean (every step)."""
    mean = np.broadcast_to(x.mean(axis=1, keepdims=True), x.shape)
    mask = np.zeros((x.shape[0], x.shape[2]), dtype=bool)
    np.put_along_axis(mask, feats, True, axis=1)
    return np.where(mask[:, None, :], mean, x)


def _random_choice(rng: np.random.Generator, b: int, n: int, k: int) -> np.ndarray:
    return rng.random((b, n)).argsort(axis=1)[:, :k]


def deletion_test(predict_probs: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                  methods: dict[str, Any], k: int = 5, feature_k: int = 3, n_random: int = 5,
                  seed: int = 0) -> dict[str, dict[str, Any]]:
    """The drop of p(up) - p(down) (and of the predicted class's probability) when masking what each
    method ranks highest, against random masking, on windows ``x`` [B, W, F].

    ``methods``: name -> :class:`models.explain.Attribution` (steps [B, W], features [B, F] or None).
    Masking: a step -> the window's mean (every feature), a feature -> its window mean (every step).
    The attributed quantity's drop is measured toward the other side, ``sign(m0) * (m0 - m)``, so a
    positive drop means the masked inputs carried the prediction; a signed method ranks by
    ``attribution * sign(m0)`` (inputs pushing toward the predicted side), an unsigned one by its
    weight. Steps: the k highest among the OLDER steps (newest bar excluded) vs k random older steps
    (``n_random`` draws, the same draws for every method); the newest bar masked alone is reported
    separately (``newest_drop``, the same for every method). Features: top ``feature_k`` vs random.
    """
    rng = np.random.default_rng(seed)
    b, w, f = x.shape
    k, fk = min(k, w - 1), min(feature_k, f - 1)
    rows = np.arange(b)
    p0 = predict_probs(x)
    cls = p0.argmax(axis=1)
    m0 = p0[:, UP] - p0[:, DOWN]
    side = np.where(m0 >= 0, 1.0, -1.0)

    def drops(masked: np.ndarray) -> tuple[float, float]:
        p = predict_probs(masked)
        return float((side * (m0 - (p[:, UP] - p[:, DOWN]))).mean()), float((p0[rows, cls] - p[rows, cls]).mean())

    rand_steps = np.mean([drops(mask_steps(x, _random_choice(rng, b, w - 1, k))) for _ in range(n_random)], axis=0)
    rand_feats = np.mean([drops(mask_features(x, _random_choice(rng, b, f, fk))) for _ in range(n_random)], axis=0)
    newest = drops(mask_steps(x, np.full((b, 1), w - 1)))
    out: dict[str, dict[str, Any]] = {}
    for name, attr in methods.items():
        score = attr.steps * side[:, None] if attr.signed else attr.steps
        top = drops(mask_steps(x, np.argsort(-score[:, :-1], axis=1, kind="stable")[:, :k]))
        row: dict[str, Any] = {
            "k": k, "windows": int(b), "random_draws": n_random,
            "older_top_k_drop": top[0], "older_random_k_drop": float(rand_steps[0]),
            "ratio": top[0] / float(rand_steps[0]) if rand_steps[0] > 0 else None,
            "newest_drop": newest[0],
            "older_top_k_prob_drop": top[1], "older_random_k_prob_drop": float(rand_steps[1]),
            "newest_prob_drop": newest[1],
        }
        if attr.features is not None:
            fscore = attr.features * side[:, None] if attr.signed else attr.features
            ftop = drops(mask_features(x, np.argsort(-fscore, axis=1, kind="stable")[:, :fk]))
            row.update({"feature_k": fk, "features_top_k_drop": ftop[0],
                        "features_random_k_drop": float(rand_feats[0]),
                        "features_top_k_prob_drop": ftop[1], "features_random_k_prob_drop": float(rand_feats[1])})
        out[name] = row
    return out


def rank_methods(table: dict[str, dict[str, Any]]) -> list[str]:
    """Most faithful first: the largest drop of the attributed quantity when the top-k OLDER steps
    are masked (every method shares the random baseline, so this is also the largest margin over it)."""
    return sorted(table, key=lambda m: -float(table[m]["older_top_k_drop"]))


def selection(table: dict[str, dict[str, Any]], split: str) -> dict[str, Any]:
    """What a checkpoint stores: the table, the ranking, the winner and where it was measured."""
    ranking = rank_methods(table)
    return {"split": split, "ranking": ranking, "winner": ranking[0], "table": table}
