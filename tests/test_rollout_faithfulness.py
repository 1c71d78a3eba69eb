"""The masking faithfulness test: a faithful attribution moves the prediction more than random
masking, an unfaithful one does not (the trained model's numbers: test_rollout_strategy.py)."""

from __future__ import annotations

import numpy as np
import torch

from models.faithfulness import mask_steps, masking_faithfulness

torch.set_num_threads(1)
W, F = 12, 3


def model_reading_step(j: int):  # noqa: ANN201 - a tiny "model" that only looks at step j
    def predict(x: np.ndarray) -> np.ndarray:
        logit = 3.0 * x[:, j, 0]
        p_up = 1 / (1 + np.exp(-logit))
        return np.stack([1 - p_up, np.zeros_like(p_up), p_up], axis=1)
    return predict


def windows(n: int = 400) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, W, F))


def test_mask_steps_replaces_with_window_mean() -> None:
    x = np.arange(2 * 4 * 1, dtype=float).reshape(2, 4, 1)
    out = mask_steps(x, np.array([[0], [3]]))
    assert out[0, 0, 0] == x[0].mean() and out[1, 3, 0] == x[1].mean()
    np.testing.assert_array_equal(out[0, 1:], x[0, 1:])
    np.testing.assert_array_equal(x, np.arange(8, dtype=float).reshape(2, 4, 1))  # input untouched


def test_faithful_attribution_beats_random_masking() -> None:
    x = windows()
    attr = np.full((len(x), W), 0.01)
    attr[:, 5] = 1.0  # points at the step the model reads
    res = masking_faithfulness(model_reading_step(5), x, attr, ks=(1, 3), n_random=3)
    for k in ("k1", "k3"):
        assert res[k]["top_k_drop"] > 0.1
        assert res[k]["top_k_drop"] > 2 * res[k]["random_k_drop"]
        assert res[k]["top_beats_random_share"] > 0.5
    assert res["k1"]["recent_k_drop"] == 0.0  # the newest step is not the one the model reads
    assert res["k1"]["older_top_k_drop"] == res["k1"]["top_k_drop"]  # step 5 is an older step
    assert res["k1"]["older_top_k_drop"] > 2 * res["k1"]["older_random_k_drop"]
    assert res["samples"] == len(x)


def test_unfaithful_attribution_does_not() -> None:
    x = windows()
    attr = np.full((len(x), W), 0.01)
    attr[:, 0] = 1.0  # points away from the step the model reads
    res = masking_faithfulness(model_reading_step(W - 1), x, attr, ks=(1,), n_random=3)
    assert res["k1"]["top_k_drop"] == 0.0
    assert res["k1"]["random_k_drop"] > 0.0
    assert res["k1"]["recent_k_drop"] > res["k1"]["random_k_drop"]
