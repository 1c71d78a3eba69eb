"""Training never fits anything on bars past its training range (issue 13, item 7).

Mutation-style: the bars after a range are replaced by garbage (huge random, finite candles) and
everything fitted on that range must come out identical to training on the clean file:

- past the training part (the last training window's label bar): the normaliser statistics, the
  labels of the training windows, class weights, the volatility-only baseline, the target scale;
- past everything the fitting saw (the last validation label, which early stopping reads): the
  trained weights (same seed, one thread) and every number of the card's validation part.

``tests/test_lookahead.py`` covers trading; this covers training. A normaliser or label fitted
on the whole file (or on train + validation) makes these tests fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bot.candles import CandleData
from bot.feeds.replay import load_candles
from models.checkpoint import load_checkpoint
from models.classifier import prepare
from models.dsc_train import DSCConfig, train_dsc
from models.gru_config import parse_config as parse_gru
from models.gru_data import prepare as prepare_gru
from models.gru_training import sigma_ref, train_family
from models.labels import Labeling, LabelRule, class_weights
from models.rollout_runtime import parse_config as parse_rollout
from models.rollout_train import train_rollout
from models.training import TrainRequest
from tests.test_dsc_strategy import TINY as DSC_TINY
from tests.test_gru_strategy import PARAMS as GRU_TINY
from tests.test_rollout_strategy import PARAMS as ROLLOUT_TINY

torch.set_num_threads(1)
FEE = 0.001
HOUR = 3_600_000
N_BARS = 1400
GRU = {**GRU_TINY, "train": {**GRU_TINY["train"], "threads": 1}, "train2": {**GRU_TINY["train2"], "threads": 1}}
LABELS = [pytest.param(None, id="band"), pytest.param({"mode": "vol", "k": 0.5, "window": 24}, id="vol")]


@pytest.fixture(scope="module")
def clean(data_dir: Path) -> CandleData:
    full = load_candles(data_dir / "bybit_BTCUSDT_1h.csv.gz", symbol="BTCUSDT", timeframe="1h", bar_ms=HOUR)
    return full.slice(2000, 2000 + N_BARS)


def garbage_after(data: CandleData, start: int, seed: int = 0) -> CandleData:
    """``data`` with every bar from index ``start`` on replaced by wild but valid candles: prices
    from 0.01 to 10 million, ranges up to 6x, volumes up to 1e12 (finite, so training runs)."""
    rng = np.random.default_rng(seed)
    k = len(data) - start
    open_ = np.exp(rng.uniform(np.log(1e-2), np.log(1e7), k))
    close = np.exp(rng.uniform(np.log(1e-2), np.log(1e7), k))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 5, k))
    low = np.minimum(open_, close) / (1 + rng.uniform(0, 5, k))
    volume = rng.uniform(1.0, 1e12, k)
    cols = [np.concatenate((a[:start], b)) for a, b in
            ((data.open, open_), (data.high, high), (data.low, low), (data.close, close), (data.volume, volume))]
    return CandleData(data.symbol, data.timeframe, data.time.copy(), *cols, data.source, data.gaps)


def _labeling(params: dict[str, Any], label: dict[str, Any] | None) -> tuple[Labeling, int, Any]:
    rule = LabelRule.model_validate(label or {})
    if "channels" in params:
        cfg = DSCConfig.model_validate(params)
    else:
        cfg = parse_rollout(params)
    return Labeling(rule, cfg.threshold, FEE, cfg.horizon), cfg.window, cfg.train


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("params", [DSC_TINY, ROLLOUT_TINY], ids=["dsc", "rollout"])
def test_classifier_fits_nothing_past_the_training_part(clean: CandleData, params: dict[str, Any],
                                                        label: dict[str, Any] | None) -> None:
    labeling, window, tc = _labeling(params, label)
    a = prepare(clean, labeling, window, tc, "1h", "leak")
    last_label_bar = int(a.ends[a.train_pos[-1]]) + labeling.horizon
    b = prepare(garbage_after(clean, last_label_bar + 1), labeling, window, tc, "1h", "leak")
    assert np.array_equal(a.ends, b.ends) and np.array_equal(a.train_pos, b.train_pos)
    np.testing.assert_array_equal(a.normalizer.mean, b.normalizer.mean)
    np.testing.assert_array_equal(a.normalizer.std, b.normalizer.std)
    train = a.ends[a.train_pos]
    np.testing.assert_array_equal(a.labels[train], b.labels[train])
    np.testing.assert_array_equal(class_weights(a.labels[train]), class_weights(b.labels[train]))
    assert a.vol_baseline == b.vol_baseline and a.majority == b.majority
    # the garbage is really there: the first bar after the range changed, the labels after it too
    assert not np.array_equal(a.labels[a.ends[a.split.test]], b.labels[b.ends[b.split.test]])


def _same_training(ca: Any, cb: Any) -> None:
    """Two checkpoints whose weights, normaliser, labels and validation numbers are identical."""
    assert ca.states.keys() == cb.states.keys()
    for module, state in ca.states.items():
        for name, t in state.items():
            assert torch.equal(t, cb.states[module][name]), f"{module}.{name} differs"
    assert ca.meta.normalizer == cb.meta.normalizer


def _drop(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


CLASSIFIERS = [
    pytest.param(train_dsc, lambda: DSCConfig.model_validate(DSC_TINY), ("history", "explain"), id="dsc-band"),
    pytest.param(train_rollout, lambda: parse_rollout({**ROLLOUT_TINY, "label": {"mode": "vol", "k": 0.4}}),
                 ("history", "explain", "vol_regime"), id="rollout-vol"),
]


@pytest.mark.parametrize(("trainer", "make_cfg", "extra_keys"), CLASSIFIERS)
def test_classifier_weights_ignore_bars_after_the_fitted_range(clean: CandleData, tmp_path: Path, trainer: Any,
                                                               make_cfg: Any, extra_keys: tuple[str, ...]) -> None:
    cfg = make_cfg()
    prep = prepare(clean, Labeling(cfg.label, cfg.threshold, FEE, cfg.horizon), cfg.window, cfg.train, "1h", "leak")
    mutated = garbage_after(clean, prep.fit_end + 1)
    kw = {"fee_rate": FEE, "long_only": False, "symbol": "BTCUSDT", "timeframe": "1h", "progress": False}
    ca = load_checkpoint(trainer(clean, cfg, out=tmp_path / "a.pt", **kw))
    cb = load_checkpoint(trainer(mutated, cfg, out=tmp_path / "b.pt", **kw))
    _same_training(ca, cb)
    assert ca.meta.labels["mode"] == cfg.label.mode
    assert _drop(ca.meta.labels, "test_balance") == _drop(cb.meta.labels, "test_balance")
    assert ca.meta.metrics["validation"] == cb.meta.metrics["validation"]
    for key in extra_keys:  # learning curve, explanation chosen on validation windows, regime edges
        assert ca.meta.extra[key] == cb.meta.extra[key], key
    assert ca.meta.metrics["test"] != cb.meta.metrics["test"]  # the garbage was scored there


def test_gru_sizer_fits_nothing_past_the_training_part(clean: CandleData) -> None:
    cfg = parse_gru(GRU)
    a = prepare_gru(clean, cfg, HOUR)
    b = prepare_gru(garbage_after(clean, a.bars("train")[1] + cfg.horizon + 1), cfg, HOUR)
    np.testing.assert_array_equal(a.normalizer.mean, b.normalizer.mean)
    np.testing.assert_array_equal(a.normalizer.std, b.normalizer.std)
    np.testing.assert_array_equal(a.target_scale, b.target_scale)
    assert sigma_ref(a) == sigma_ref(b)
    lo, hi = a.bars("train")
    np.testing.assert_array_equal(a.regime[lo: hi + 1], b.regime[lo: hi + 1])


def test_gru_sizer_weights_ignore_bars_after_the_fitted_range(clean: CandleData, tmp_path: Path) -> None:
    cfg = parse_gru(GRU)
    prep = prepare_gru(clean, cfg, HOUR)
    # stage 1 reads validation targets up to the last validation bar + horizon, stage 2 one bar ahead
    fit_end = prep.bars("val")[1] + cfg.horizon
    req = TrainRequest(data=clean, params=GRU, symbol="BTCUSDT", timeframe="1h", fee_rate=FEE, long_only=False,
                       out=tmp_path / "unused.pt", progress=False)
    enc_a, siz_a, _, meta_a = train_family(clean, cfg, req)
    enc_b, siz_b, _, meta_b = train_family(garbage_after(clean, fit_end + 1), cfg, req)
    for x, y in ((enc_a, enc_b), (siz_a, siz_b)):
        sx, sy = x.state_dict(), y.state_dict()
        assert all(torch.equal(sx[k], sy[k]) for k in sx)
    assert meta_a.normalizer == meta_b.normalizer
    assert meta_a.labels == meta_b.labels  # target scale and the volatility-only sizer's sigma
    assert meta_a.extra["stage1"]["history"] == meta_b.extra["stage1"]["history"]
    assert meta_a.extra["stage2"]["history"] == meta_b.extra["stage2"]["history"]
    assert meta_a.extra["vol_regime"] == meta_b.extra["vol_regime"]
    assert meta_a.metrics["sizer_test"] != meta_b.metrics["sizer_test"]
