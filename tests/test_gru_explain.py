"""gru_sizer explanations: the gradient is right, and the deletion test ranks methods by the truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.gru_explain import (
    METHODS,
    FixedState,
    by_method,
    deletion_test,
    expected_level,
    explanation_meta,
    grad_x_input,
    stored_choice,
)
from models.price_encoder import EncoderConfig, PriceEncoder
from models.sizer import N_LEVELS, PositionSizer, SizerConfig

torch.set_num_threads(1)
TINY = EncoderConfig(n_features=4, window=8, d_model=8, n_layers=1, n_heads=2, kv_lora_rank=4, qk_nope_dim=2,
                     qk_rope_dim=2, v_head_dim=2, ffn_hidden=8, feature_dim=3, horizon=2, dropout=0.0)


def _tiny() -> tuple[PriceEncoder, PositionSizer]:
    torch.manual_seed(3)
    enc = PriceEncoder(TINY).double().eval().requires_grad_(False)
    siz = PositionSizer(SizerConfig(feature_dim=3, hidden=5, steps=4)).double().eval()
    with torch.no_grad():  # a head that actually spreads the levels
        siz.head.weight.mul_(8.0)
    return enc, siz


def test_gradient_equals_finite_differences_at_the_gru_state() -> None:
    enc, siz = _tiny()
    x = torch.randn(2, 8, 4, dtype=torch.float64)
    h = torch.randn(2, 5, dtype=torch.float64) * 0.5
    prev = torch.tensor([0.3, 0.8], dtype=torch.float64)
    signed, probs = grad_x_input(enc, siz, x, h, prev)
    assert signed.shape == (2, 8, 4) and probs.shape == (2, N_LEVELS)

    @torch.no_grad()
    def level(xx: torch.Tensor) -> torch.Tensor:
        feat, _ = enc(xx)
        return expected_level(siz.step(feat, h, prev, None)[1])

    eps = 1e-6
    fd = np.zeros((2, 8, 4))
    for s in range(8):
        for f in range(4):
            d = torch.zeros_like(x)
            d[:, s, f] = eps
            fd[:, s, f] = ((level(x + d) - level(x - d)) / (2 * eps)).numpy()
    np.testing.assert_allclose(signed, x.numpy() * fd, rtol=1e-5, atol=1e-9)
    assert np.abs(signed).max() > 1e-4  # not a trivially zero gradient
    # the state matters: the same window at another GRU state gets another attribution
    other, _ = grad_x_input(enc, siz, x, torch.zeros_like(h), torch.zeros_like(prev))
    assert np.abs(other - signed).max() > 1e-6
    np.testing.assert_allclose(by_method(signed, "abs_grad_x_input"), np.abs(signed))
    # FixedState batches the same computation
    fs = FixedState(enc, siz, h.numpy(), prev.numpy(), batch=1)
    np.testing.assert_allclose(fs.signed(x.numpy()), signed, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(fs.level(x.numpy()), level(x).numpy(), rtol=1e-12)


class LinearSizer:
    """A synthetic sizer whose truth is known: expected level = 5 + sum(w * x) (levels spread by a
    narrow softmax around it), so ``w * x`` is the exact signed contribution of every input."""

    def __init__(self, w: np.ndarray) -> None:
        self.w = w

    def probs(self, x: np.ndarray) -> np.ndarray:
        e = 5.0 + (x * self.w).sum(axis=(1, 2))
        lg = -((np.arange(N_LEVELS)[None, :] - e[:, None]) ** 2) / 0.5
        p = np.exp(lg - lg.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)

    def level(self, x: np.ndarray) -> np.ndarray:
        return self.probs(x) @ np.arange(N_LEVELS, dtype=np.float64)


def test_deletion_test_ranks_the_true_signed_attribution_first() -> None:
    rng = np.random.default_rng(0)
    b, w, f = 400, 16, 6
    weights = np.zeros((w, f))
    weights[[2, 5, 9], 1] = 0.8     # three older steps push toward a larger position ...
    weights[[3, 7, 11], 4] = -0.8   # ... three push toward a smaller one
    weights[-1, 0] = 0.5            # and the newest bar matters too
    model = LinearSizer(weights)
    x = rng.normal(size=(b, w, f)) * 0.5
    truth = x * weights
    attributions = {m: by_method(truth, m) for m in METHODS}
    attributions["decoy"] = rng.normal(size=(b, w, f))
    table = deletion_test(model.level, model.probs, x, attributions, k=3, k_features=1)
    assert list(table)[0] == "signed_grad_x_input" and table["signed_grad_x_input"]["rank"] == 1
    s, a, d = table["signed_grad_x_input"], table["abs_grad_x_input"], table["decoy"]
    assert sorted([s["rank"], a["rank"], d["rank"]]) == [1, 2, 3]
    # |.| picks the largest contributions of both signs: masking them barely moves the mean level
    assert s["older_top_k_drop"] > 3 * abs(a["older_top_k_drop"])
    assert s["older_top_k_drop"] > 0.5 and s["older_top_k_drop"] > 10 * abs(s["older_random_k_drop"])
    assert abs(d["older_top_k_drop"] - d["older_random_k_drop"]) < 0.1  # a random method ~ random masking
    assert s["newest_drop"] == a["newest_drop"] and abs(s["newest_drop"]) > 0  # reported apart, method-free
    assert s["features_top_k_drop"] > s["features_random_k_drop"]
    assert s["level_prob_older_top_k_drop"] != 0.0  # the chosen level's probability is measured too
    assert s["windows"] == b and s["k"] == 3


def test_checkpoint_choice_and_old_checkpoints() -> None:
    table = {"abs_grad_x_input": {"k": 5, "windows": 10, "older_top_k_drop": 0.2, "older_random_k_drop": 0.01,
                                  "newest_drop": 0.05, "rank": 1},
             "signed_grad_x_input": {"k": 5, "windows": 10, "older_top_k_drop": 0.1,
                                     "older_random_k_drop": 0.01, "newest_drop": 0.05, "rank": 2}}
    meta = explanation_meta(table)
    assert meta["method"] == "abs_grad_x_input" and meta["ranking"] == ["abs_grad_x_input", "signed_grad_x_input"]
    method, faith = stored_choice({"explanation": meta})
    assert method == "abs_grad_x_input" and faith["signed_grad_x_input"]["rank"] == 2
    assert set(faith["abs_grad_x_input"]) == {"k", "windows", "older_top_k_drop", "older_random_k_drop",
                                              "newest_drop", "rank"}
    assert stored_choice({"stage1": {}}) == ("signed_grad_x_input", {m: None for m in METHODS})
    with pytest.raises(ValueError, match="unknown attribution method"):
        by_method(np.zeros(1), "rollout")
