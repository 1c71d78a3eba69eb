"""The transformer classifier returns its attention maps from the forward pass itself."""

from __future__ import annotations

import pytest
import torch

from bot.errors import ModelError
from models.rollout import attention_rollout, input_attribution
from models.transformer import TransformerClassifier, TransformerConfig

torch.set_num_threads(1)


def model(**kw: object) -> TransformerClassifier:
    torch.manual_seed(0)
    cfg = TransformerConfig(n_features=5, window=16, d_model=16, n_heads=4, n_layers=3, d_ff=32, **kw)
    return TransformerClassifier(cfg).eval()


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
@pytest.mark.parametrize("pool", ["last", "mean"])
def test_shapes_and_attention_rows(positions: str, pool: str) -> None:
    m = model(positions=positions, pool=pool)
    x = torch.randn(7, 16, 5)
    logits, attns = m.forward_explained(x)
    assert logits.shape == (7, 3)
    assert len(attns) == 3
    for a in attns:
        assert a.shape == (7, 4, 16, 16)
        torch.testing.assert_close(a.sum(-1), torch.ones(7, 4, 16))
    torch.testing.assert_close(m(x), logits)
    r = attention_rollout(attns)
    attr = input_attribution(r, -1 if pool == "last" else None)
    assert attr.shape == (7, 16)
    torch.testing.assert_close(attr.sum(-1), torch.ones(7))


def test_returned_weights_are_the_ones_the_layer_used() -> None:
    m = model()
    x = torch.randn(2, 16, 5)
    layer = m.layers[0].attn
    h = m.proj(x) + m.pos
    out, a = layer(h)
    _, _, v = layer.qkv(h).view(2, 16, 3, 4, 4).permute(2, 0, 3, 1, 4)
    manual = (a @ v).transpose(1, 2).reshape(2, 16, 16)
    torch.testing.assert_close(out, layer.out(manual))
    torch.testing.assert_close(a, m.forward_explained(x)[1][0])


def test_batch_equals_one_by_one_and_shorter_windows_work() -> None:
    m = model()
    x = torch.randn(4, 16, 5)
    logits, attns = m.forward_explained(x)
    for i in range(4):
        li, ai = m.forward_explained(x[i: i + 1])
        torch.testing.assert_close(li, logits[i: i + 1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ai[-1], attns[-1][i: i + 1], atol=1e-5, rtol=1e-5)
    assert m(x[:, -8:]).shape == (4, 3)


def test_bad_config_and_input_raise_model_error() -> None:
    with pytest.raises(ModelError, match="divisible"):
        TransformerConfig(n_features=3, d_model=10, n_heads=4)
    with pytest.raises(ModelError, match="expected input"):
        model()(torch.randn(2, 16, 4))
