"""Issue 14, items 1-2: the attribution methods (equal to autograd where they claim to), the
gradient-weighted rollout against a direct computation, and the deletion test on a model whose
truth is known (it reads only step 10 and feature 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.attribution import ExplainedConv, autograd_margin_x_input
from models.dsc import DSCClassifier, StandardConvClassifier
from models.explain import (
    DEFAULT_METHOD,
    TRANSFORMER_METHODS,
    Attribution,
    attribution_block,
    choose,
    faithfulness_block,
    from_grad_x_input,
    grad_rollout,
    rule_block,
    transformer_gradients,
)
from models.faithfulness import deletion_test, mask_features, rank_methods, selection
from models.onnx_backend import OnnxRunner, export_onnx
from models.rollout import attention_rollout, input_attribution
from models.rollout_runtime import RolloutConfig, RolloutExplainer
from models.transformer import TransformerClassifier, TransformerConfig

torch.set_num_threads(1)


def _randomise_bn(net: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(7)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net.eval()


@pytest.mark.parametrize("cls", [DSCClassifier, StandardConvClassifier])
def test_conv_margin_backward_equals_autograd_and_onnx(cls: type, tmp_path: Path) -> None:
    torch.manual_seed(2)
    net = _randomise_bn(cls(n_features=6, channels=8, blocks=3, kernel_size=3))
    x = torch.randn(5, 6, 20)
    p_ref, a_ref = autograd_margin_x_input(net, x)
    explained = ExplainedConv(net)  # the default target is p(up) - p(down)
    assert explained.target == "margin"
    with torch.inference_mode():
        p, a = explained(x)
    torch.testing.assert_close(p, p_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(a, a_ref, atol=1e-7, rtol=1e-4)
    assert (a < 0).any() and (a > 0).any()  # signed
    runner = OnnxRunner(export_onnx(explained, x[:1], tmp_path / "m.onnx", ["probs", "attribution"]))
    po, ao = runner.run(x.numpy())
    assert np.abs(ao - a.numpy()).max() <= 1e-6 + 1e-4 * np.abs(a.numpy()).max()
    with pytest.raises(ValueError, match="target"):
        ExplainedConv(net, target="loss")


def _tiny_transformer(pool: str = "last") -> TransformerClassifier:
    torch.manual_seed(3)
    cfg = TransformerConfig(n_features=4, window=10, d_model=8, n_heads=2, n_layers=2, d_ff=16, pool=pool)
    return TransformerClassifier(cfg).double().eval()


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_transformer_gradients_equal_autograd_and_direct_grad_rollout(pool: str) -> None:
    net = _tiny_transformer(pool)
    x = torch.randn(3, 10, 4, dtype=torch.float64)
    position = -1 if pool == "last" else None
    probs, gxi, row, _ = transformer_gradients(net, x, position)
    # signed grad x input: autograd of p(up) - p(down), one sample at a time
    for i in range(3):
        xi = x[i:i + 1].clone().requires_grad_(True)
        p = net(xi).softmax(-1)
        (g,) = torch.autograd.grad(p[0, 2] - p[0, 0], xi)
        torch.testing.assert_close(gxi[i], (xi * g)[0].detach(), atol=1e-12, rtol=1e-9)
        torch.testing.assert_close(probs[i], p[0].detach())
    # grad rollout, written out directly per sample: per layer A * dA (of |p(up) - p(down)|), positive
    # part, mean over heads, R <- R + cam @ R starting from I; the head's row
    for i in range(3):
        xi = x[i:i + 1].clone().requires_grad_(True)
        logits, atts = net.forward_explained(xi)
        p = logits.softmax(-1)
        side = 1.0 if p[0, 2] >= p[0, 0] else -1.0
        grads = torch.autograd.grad(side * (p[0, 2] - p[0, 0]), atts)
        r = np.eye(10)
        for a, g in zip(atts, grads, strict=True):
            cam = np.maximum(a[0].detach().numpy() * g[0].numpy(), 0.0).mean(axis=0)
            r = r + cam @ r
        expect = r[-1] if pool == "last" else r.mean(axis=0)
        np.testing.assert_allclose(row[i].numpy(), expect, atol=1e-12, rtol=1e-9)
    assert (row.numpy() >= 0).all()


def test_grad_rollout_with_uniform_positive_relevance_is_the_residual_rollout_product() -> None:
    # With A * dA equal to the attention itself (dA = 1), the rule is R = prod (I + A) R.
    torch.manual_seed(0)
    atts = [torch.rand(2, 3, 5, 5).softmax(-1) for _ in range(2)]
    ones = [torch.ones_like(a) for a in atts]
    got = grad_rollout(atts, ones, -1)
    a1, a2 = (a.mean(dim=1) for a in atts)
    eye = torch.eye(5)
    expect = ((eye + a2) @ (eye + a1))[:, -1, :]
    torch.testing.assert_close(got, expect)
    # the plain rollout (unchanged formula) is the same product with 0.5 weights, rows normalised
    ref = attention_rollout(atts, residual_weight=0.5)
    half = ((0.5 * eye + 0.5 * a2) @ (0.5 * eye + 0.5 * a1))
    torch.testing.assert_close(input_attribution(ref)[:, :], (half / half.sum(-1, keepdim=True))[:, -1, :])


def test_explainer_gives_every_method() -> None:
    net = _tiny_transformer().float()
    cfg = RolloutConfig(window=10, d_model=8, n_heads=2, n_layers=2, d_ff=16)
    ex = RolloutExplainer(net, cfg)
    x = np.random.default_rng(0).normal(size=(7, 10, 4))
    out, methods = ex.attributions(x)
    assert list(methods) == list(TRANSFORMER_METHODS)
    np.testing.assert_array_equal(methods["rollout"].steps, out.attribution)
    signed, absolute = methods["signed_grad_x_input"], methods["abs_grad_x_input"]
    assert signed.features is not None and signed.features.shape == (7, 4) and signed.steps.shape == (7, 10)
    assert (absolute.steps >= np.abs(signed.steps) - 1e-12).all()
    np.testing.assert_allclose(signed.steps.sum(axis=1), signed.features.sum(axis=1))
    assert methods["grad_rollout"].features is None and methods["grad_rollout"].steps.shape == (7, 10)


# -- the deletion test on a model whose truth is known --------------------------------------------

W, F, STEP, FEAT = 16, 5, 10, 3


def reads_step10_feature3(x: np.ndarray) -> np.ndarray:
    """p(up) = sigmoid(3 * x[:, 10, 3]); p(down) = 1 - p(up): only step 10, feature 3 matter."""
    up = 1 / (1 + np.exp(-3.0 * x[:, STEP, FEAT]))
    return np.stack([1 - up, np.zeros_like(up), up], axis=1)


def test_deletion_test_finds_the_truth_and_random_does_not() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, W, F))
    # the exact gradient x input of p(up) - p(down) = 2 * sigmoid(3 v) - 1 at step 10, feature 3
    v = x[:, STEP, FEAT]
    s = 1 / (1 + np.exp(-3 * v))
    gxi = np.zeros_like(x)
    gxi[:, STEP, FEAT] = v * 6 * s * (1 - s)
    faithful = from_grad_x_input(gxi, "signed_grad_x_input")
    random_attr = Attribution("abs_grad_x_input", rng.random((300, W)), rng.random((300, F)))
    newest_only = Attribution("rollout", np.eye(W)[np.full(300, W - 1)], None)
    table = deletion_test(reads_step10_feature3, x, {"faithful": faithful, "random": random_attr,
                                                     "newest": newest_only}, k=3, feature_k=1, n_random=4)
    fa, ra, ne = table["faithful"], table["random"], table["newest"]
    assert fa["older_top_k_drop"] > 0.3 and fa["older_top_k_drop"] > 3 * fa["older_random_k_drop"]
    assert fa["ratio"] > 3
    assert ra["older_top_k_drop"] < 2 * ra["older_random_k_drop"]  # a random ranking is no better
    assert fa["newest_drop"] == 0.0  # the model does not read the newest bar, and it is shown apart
    assert fa["features_top_k_drop"] > 0.3 and fa["features_top_k_drop"] > 3 * fa["features_random_k_drop"]
    assert "features_top_k_drop" not in ne  # a method without per-feature scores
    assert fa["older_random_k_drop"] == ra["older_random_k_drop"]  # one random baseline for all
    assert fa["k"] == 3 and fa["windows"] == 300 and fa["older_top_k_prob_drop"] > 0.1
    assert rank_methods(table)[0] == "faithful"
    chosen = selection(table, "validation")
    assert chosen["winner"] == "faithful" and chosen["split"] == "validation"


def test_mask_features_holds_a_feature_at_its_window_mean() -> None:
    x = np.arange(2 * 3 * 2, dtype=float).reshape(2, 3, 2)
    out = mask_features(x, np.array([[1], [0]]))
    np.testing.assert_array_equal(out[0, :, 1], np.full(3, x[0, :, 1].mean()))
    np.testing.assert_array_equal(out[0, :, 0], x[0, :, 0])
    np.testing.assert_array_equal(out[1, :, 0], np.full(3, x[1, :, 0].mean()))


# -- the contract block and the choice of method --------------------------------------------------

def test_attribution_block_and_choice() -> None:
    stored = {"winner": "grad_rollout", "ranking": ["grad_rollout", "rollout"], "split": "validation",
              "table": {"rollout": {"k": 5, "windows": 9, "older_top_k_drop": 0.0123456,
                                    "older_random_k_drop": 0.001, "newest_drop": 0.2}}}
    assert choose("auto", stored, TRANSFORMER_METHODS) == "grad_rollout"
    assert choose("auto", None, TRANSFORMER_METHODS) == DEFAULT_METHOD == "signed_grad_x_input"
    assert choose("rollout", stored, TRANSFORMER_METHODS) == "rollout"
    with pytest.raises(ValueError):
        choose("rollout", stored, ("signed_grad_x_input",))
    faith = faithfulness_block(stored, "rollout")
    assert faith == {"k": 5, "windows": 9, "older_top_k_drop": 0.01235, "older_random_k_drop": 0.001,
                     "newest_drop": 0.2, "rank": 2}
    assert faithfulness_block(None, "rollout") is None and faithfulness_block(stored, "abs_grad_x_input") is None
    b = attribution_block("signed_grad_x_input", np.array([0.123456, -2.0]), np.array([1e-7, 3.14159]),
                          ["a", "b"], 3_600_000, None)
    assert b == {"method": "signed_grad_x_input", "toward": "up", "target": "p(up) - p(down)",
                 "steps": [0.1235, -2.0], "bar_ms": 3_600_000, "features": {"a": 1e-7, "b": 3.142},
                 "faithfulness": None}
    assert attribution_block("rollout", np.array([1.0]), None, ["a"], 60_000, None)["toward"] is None
    assert rule_block(np.array([0.2, 0.24, 0.56]), 0.5, "long")["text"] == "p(up) = 0.56 >= 0.50 -> long"
    assert rule_block(np.array([0.45, 0.1, 0.45]), 0.5, "flat")["text"] == "p(down) = 0.45 < 0.50 -> flat"
