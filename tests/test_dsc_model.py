"""DSC / standard conv classifiers: topology as specified, cost counts, exact attribution, ONNX parity,
walk-forward evaluation in the trainer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bot.feeds.replay import load_candles
from models.attribution import ExplainedConv, autograd_input_x_gradient, summarise
from models.dsc import DepthwiseSeparableConv1d, DSCClassifier, StandardConvClassifier, count_macs, count_params
from models.dsc_train import DSCConfig, train_dsc
from models.onnx_backend import OnnxRunner, export_onnx

torch.set_num_threads(1)


def _randomise_bn(net: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return net.eval()


def test_topology() -> None:
    net = DSCClassifier(n_features=10, channels=16, blocks=3, kernel_size=5, dropout=0.1)
    assert net.stem[0].kernel_size == (1,) and net.stem[0].in_channels == 10
    for i, blk in enumerate(net.blocks):
        assert isinstance(blk, DepthwiseSeparableConv1d)
        assert blk.depthwise.groups == 16 and blk.depthwise.dilation == (2 ** i,)
        assert blk.pointwise.kernel_size == (1,)
        assert isinstance(blk.bn1, nn.BatchNorm1d) and isinstance(blk.bn2, nn.BatchNorm1d)
    assert net.merge[0].in_channels == 16 * 3 and net.merge[0].kernel_size == (1,)  # concatenated skips
    assert isinstance(net.dropout, nn.Dropout) and net.head.out_features == 3
    std = StandardConvClassifier(n_features=10, channels=16, blocks=3, kernel_size=5)
    assert all(b.conv.groups == 1 and b.conv.dilation == (2 ** i,) for i, b in enumerate(std.blocks))
    x = torch.randn(2, 10, 40)
    assert net.eval()(x).shape == (2, 3) and std.eval()(x).shape == (2, 3)


@pytest.mark.parametrize("k", [3, 9])
def test_separable_costs_less(k: int) -> None:
    c, blocks, w = 32, 4, 48
    dsc, std = DSCClassifier(15, c, blocks, k), StandardConvClassifier(15, c, blocks, k)
    # Per block: depthwise C*K*W + pointwise C*C*W vs full C*C*K*W; the shared stem/merge/head are equal.
    diff = count_macs(std, 15, w) - count_macs(dsc, 15, w)
    assert diff == blocks * (c * c * k * w - (c * k * w + c * c * w))
    assert count_params(dsc) < count_params(std)


@pytest.mark.parametrize("cls", [DSCClassifier, StandardConvClassifier])
def test_explained_graph_equals_autograd_and_onnx(cls: type, tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = _randomise_bn(cls(n_features=6, channels=8, blocks=3, kernel_size=3))
    x = torch.randn(5, 6, 20)
    p_ref, a_ref = autograd_input_x_gradient(net, x)
    explained = ExplainedConv(net, target="top")
    with torch.inference_mode():
        p, a = explained(x)
        logits = net(x)
    torch.testing.assert_close(p, torch.softmax(logits, 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(p, p_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(a, a_ref, atol=1e-7, rtol=1e-4)
    runner = OnnxRunner(export_onnx(explained, x[:1], tmp_path / "e.onnx", ["probs", "attribution"]))
    po, ao = runner.run(x.numpy())
    assert np.abs(po - p.numpy()).max() <= 1e-5
    assert np.abs(ao - a.numpy()).max() <= 1e-6 + 1e-4 * np.abs(a.numpy()).max()


def test_summary_top_k() -> None:
    attr = np.zeros((3, 4))
    attr[1, 2] = 3.0
    attr[0, 0] = -1.0
    s = summarise(attr, np.array([10, 20, 30, 40]), ["a", "b", "c"])
    assert s["top_features"][0] == {"feature": "b", "score": 0.75}
    assert s["top_steps"][0] == {"time": 30, "score": 0.75} and s["top_steps"][1] == {"time": 10, "score": -0.25}
    assert s["feature_scores"] == {"a": -0.25, "b": 0.75, "c": 0.0}


def test_trainer_is_deterministic_and_walk_forward(data_dir: Path, tmp_path: Path) -> None:
    data = load_candles(data_dir / "bybit_BTCUSDT_1h.csv.gz", symbol="BTCUSDT", timeframe="1h",
                        bar_ms=3_600_000).slice(0, 1400)
    cfg = DSCConfig.model_validate({"window": 16, "horizon": 2, "channels": 8, "blocks": 2,
                                    "train": {"epochs": 1, "threads": 1, "walk_forward_folds": 2}})
    kw = {"fee_rate": 0.001, "long_only": False, "symbol": "BTCUSDT", "timeframe": "1h", "progress": False}
    a = train_dsc(data, cfg, out=tmp_path / "a.pt", **kw)
    b = train_dsc(data, cfg, out=tmp_path / "b.pt", **kw)
    sa = torch.load(a, weights_only=True)["states"]["model"]
    sb = torch.load(b, weights_only=True)["states"]["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    from models.checkpoint import load_checkpoint

    wf = load_checkpoint(a).meta.metrics["walk_forward"]
    assert set(wf) == {"fold1", "fold2", "mean"} and wf["fold1"]["to"] < wf["fold2"]["from"]
