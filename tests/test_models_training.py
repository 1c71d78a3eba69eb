"""The generic training loop: chronological split with embargo, determinism, regression head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bot.errors import ModelError
from models.training import (
    TrainConfig,
    chronological_split,
    fit,
    predict,
    state_fingerprint,
    walk_forward_splits,
)

torch.set_num_threads(1)


def _data(n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3, 6)).astype(np.float32)
    y = np.where(x[:, 0, -1] > 0.3, 2, np.where(x[:, 0, -1] < -0.3, 0, 1)).astype(np.int64)
    return x, y


def _factory() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(18, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))


def test_split_is_chronological_with_embargo() -> None:
    bars = np.arange(100, 1100)
    sp = chronological_split(bars, 0.15, 0.15, embargo=40)
    assert bars[sp.val[0]] - bars[sp.train[-1]] >= 40
    assert bars[sp.test[0]] - bars[sp.val[-1]] >= 40
    assert sp.train[-1] < sp.val[0] < sp.val[-1] < sp.test[0]
    with pytest.raises(ModelError, match="too little data"):
        chronological_split(np.arange(20), 0.15, 0.15, embargo=40)


def test_same_data_and_seed_give_identical_weights() -> None:
    x, y = _data()
    cfg = TrainConfig(epochs=3, batch_size=32, threads=1, seed=3)
    a = fit(_factory, (x[:400], y[:400]), (x[400:], y[400:]), cfg, progress=False)
    b = fit(_factory, (x[:400], y[:400]), (x[400:], y[400:]), cfg, progress=False)
    assert state_fingerprint(a.model) == state_fingerprint(b.model)
    c = fit(_factory, (x[:400], y[:400]), (x[400:], y[400:]), cfg.model_copy(update={"seed": 4}), progress=False)
    assert state_fingerprint(c.model) != state_fingerprint(a.model)


def test_learns_and_early_stops_on_validation_loss() -> None:
    x, y = _data()
    cfg = TrainConfig(epochs=40, batch_size=32, threads=1, patience=2, lr=1e-2)
    res = fit(_factory, (x[:400], y[:400]), (x[400:], y[400:]), cfg, progress=False)
    acc = (predict(res.model, x[400:]).argmax(1) == y[400:]).mean()
    assert acc > 0.8
    assert res.best_epoch >= 1 and len(res.history) <= 40
    if res.stopped_early:
        assert len(res.history) == res.best_epoch + 2
    assert min(h["val_loss"] for h in res.history) == pytest.approx(res.best_val_loss)


def test_regression_head_with_custom_loss() -> None:
    x, _ = _data()
    target = np.stack([x[:, 0, -1], x[:, 1, -1]], axis=1).astype(np.float32)
    net = nn.Sequential(nn.Flatten(), nn.Linear(18, 2))
    cfg = TrainConfig(epochs=30, batch_size=32, lr=2e-2, threads=1)
    res = fit(net, (x[:400], target[:400]), (x[400:], target[400:]), cfg,
              task="regression", loss_fn=nn.SmoothL1Loss(), progress=False)
    pred = predict(res.model, x[400:])
    assert pred.shape == (100, 2)
    assert np.mean((pred - target[400:]) ** 2) < 0.05


def test_walk_forward_splits() -> None:
    folds = walk_forward_splits(np.arange(1000), folds=3, embargo=20)
    assert len(folds) == 3
    for f in folds:
        assert f.train[-1] < f.val[0] and f.val[-1] + 20 <= f.test[0]
    assert folds[1].train.size > folds[0].train.size
