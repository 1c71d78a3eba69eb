"""Checkpoints: safe load, metadata, model card, clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from bot.errors import ModelError
from models.card import render_card
from models.checkpoint import ModelMeta, card_path, load_checkpoint, save_checkpoint


def _meta() -> ModelMeta:
    return ModelMeta(kind="demo", hparams={"hidden": 4}, feature_names=["a", "b"], window=8, horizon=2,
                     normalizer={"mean": [0.0, 0.0], "std": [1.0, 1.0], "clip": 10.0},
                     train_range={"symbol": "BTCUSDT", "timeframe": "1h", "start": 0, "end": 3_600_000, "bars": 2},
                     data_hash="abc", metrics={"test": {"accuracy": 0.5, "confusion": [[1, 0], [0, 1]]}})


def test_round_trip_several_modules(tmp_path: Path) -> None:
    torch.manual_seed(0)
    s1, s2 = nn.Linear(2, 4), nn.GRU(4, 3)
    path = save_checkpoint(tmp_path / "x.pt", {"stage1": s1, "stage2": s2}, _meta())
    ck = load_checkpoint(path, kind="demo", feature_names=["a", "b"], window=8, horizon=2)
    assert ck.meta.modules == ["stage1", "stage2"] and ck.meta.window == 8
    fresh = nn.GRU(4, 3)
    ck.load_into("stage2", fresh)
    for a, b in zip(fresh.parameters(), s2.parameters(), strict=True):
        assert torch.equal(a, b)
    card = json.loads(card_path(path).read_text())
    assert card["kind"] == "demo" and card["model_id"] == ck.meta.model_id
    assert card["metrics"]["test"]["accuracy"] == 0.5
    render_card(ck.meta)  # renders without error


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "dsc"}, "holds a 'demo' model, not 'dsc'"),
    ({"window": 9}, "window of 8 bars"),
    ({"feature_names": ["a", "c"]}, "other features"),
    ({"horizon": 4}, "predicts 2 bars ahead"),
])
def test_mismatch_refused(tmp_path: Path, kwargs: dict, match: str) -> None:
    path = save_checkpoint(tmp_path / "x.pt", nn.Linear(2, 2), _meta())
    with pytest.raises(ModelError, match=match):
        load_checkpoint(path, **kwargs)


def test_missing_corrupted_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ModelError, match="corrupted"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ModelError, match="not a bot checkpoint"):
        load_checkpoint(foreign)
    path = save_checkpoint(tmp_path / "ok.pt", nn.Linear(2, 2), _meta())
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ModelError, match="corrupted"):
        load_checkpoint(truncated)


def test_wrong_architecture_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "x.pt", nn.Linear(2, 2), _meta())
    with pytest.raises(ModelError, match="does not fit"):
        load_checkpoint(path).load_into("model", nn.Linear(3, 2))
