"""Training progress moves once per batch and shows an ETA; an early stop ends the bar full."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console
from torch import nn

from models.progress import TrainingBar
from models.training import TrainConfig, fit


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=160, color_system=None), buf


def test_the_bar_counts_batches_within_an_epoch() -> None:
    console, buf = _console()
    with TrainingBar("train", epochs=3, batches_per_epoch=40, enabled=True, console=console) as bar:
        for _ in range(7):
            bar.batch()
        assert bar.done == 7 and bar.total == 120  # 7 of 120 batches: inside the first epoch
        bar.epoch(1, "val 0.5")
    out = buf.getvalue()
    assert "7/120 batches" in out and "epoch 1/3" in out and "eta" in out


def test_fit_advances_per_batch_and_an_early_stop_fills_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    at_stop: list[int] = []
    real_stop = TrainingBar.stop
    monkeypatch.setattr(TrainingBar, "stop", lambda self: (at_stop.append(self.done), real_stop(self)))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=200)
    cfg = TrainConfig(epochs=50, batch_size=32, patience=1, seed=1, min_delta=10.0)  # no epoch improves by 10
    console, buf = _console()
    res = fit(lambda: nn.Linear(4, 3), (x, y), (x[:50], y[:50]), cfg, description="tiny", console=console)
    assert res.stopped_early and len(res.history) == 2
    batches = 50 * 7  # ceil(200 / 32) = 7 per epoch
    assert f"{batches}/{batches} batches" in buf.getvalue()
    assert at_stop == [2 * 7]  # two epochs of batches counted one by one, then the stop fills the bar
