"""No lookahead, for every strategy: decisions up to bar t are identical whether or not bars after
t exist (bar-by-bar and, where a strategy has one, the batched precompute path).

To add a strategy, add a builder to CASES: ``name -> fn(data, tmp_dir) -> factory`` where
``factory()`` returns a fresh strategy ready for ``on_start`` (train a tiny model or use a seeded
random checkpoint so the test stays fast).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from bot.bars import Bars
from bot.candles import CandleData
from bot.feeds.replay import load_candles
from strategies.base import Strategy, StrategyContext

torch.set_num_threads(1)

Factory = Callable[[], Strategy]
CTX = StrategyContext("BTCUSDT", "1h", False, 0.001, None)


def _sma(data: CandleData, tmp: Path) -> Factory:
    from strategies.sma import SMACrossover

    return lambda: SMACrossover.from_config({"fast": 5, "slow": 20, "allow_short": True}, CTX)


ROLLING = {"features": {"norm": "rolling", "norm_window": 48}}


def _dsc(data: CandleData, tmp: Path, **extra: object) -> Factory:
    from models.dsc_train import DSCConfig, train_dsc
    from strategies.dsc import DSCStrategy

    params = {"window": 16, "horizon": 2, "channels": 8, "blocks": 2, "prob_threshold": 0.4,
              "train": {"epochs": 1, "batch_size": 256, "threads": 1, "seed": 2}, **extra}
    path = train_dsc(data.slice(0, 900), DSCConfig.model_validate(params), fee_rate=0.001, long_only=False,
                     symbol="BTCUSDT", timeframe="1h", out=tmp / "dsc.pt", progress=False)
    ctx = StrategyContext("BTCUSDT", "1h", False, 0.001, str(path))
    return lambda: DSCStrategy.from_config(params, ctx)


def _rollout(data: CandleData, tmp: Path, **extra: object) -> Factory:
    from models.rollout_runtime import parse_config
    from models.rollout_train import train_rollout
    from strategies.rollout import RolloutStrategy

    params = {"window": 16, "horizon": 2, "d_model": 8, "n_heads": 2, "d_ff": 16, "prob_threshold": 0.4,
              "train": {"epochs": 1, "batch_size": 256, "threads": 1, "seed": 2}, **extra}
    path = train_rollout(data, parse_config(params), fee_rate=0.001, long_only=False, symbol="BTCUSDT",
                         timeframe="1h", out=tmp / "rollout.pt", progress=False)
    ctx = StrategyContext("BTCUSDT", "1h", False, 0.001, str(path))
    return lambda: RolloutStrategy.from_config(params, ctx)


def _gru_sizer(data: CandleData, tmp: Path) -> Factory:
    from models.gru_training import train
    from models.training import TrainRequest
    from strategies.gru_sizer import GRUSizerStrategy

    params = {"window": 16, "horizon": 3, "regime_window": 24, "sizer": {"hidden": 8, "steps": 6},
              "encoder": {"d_model": 8, "n_layers": 1, "n_heads": 2, "kv_lora_rank": 4, "qk_nope_dim": 4,
                          "qk_rope_dim": 4, "v_head_dim": 4, "ffn_hidden": 8, "feature_dim": 4},
              "train": {"epochs": 1, "batch_size": 256, "threads": 1}, "train2": {"epochs": 1, "threads": 1}}
    path = train(TrainRequest(data=data, params=params, symbol="BTCUSDT", timeframe="1h", fee_rate=0.001,
                              long_only=False, out=tmp / "gru_sizer.pt", progress=False))
    ctx = StrategyContext("BTCUSDT", "1h", False, 0.001, str(path))
    return lambda: GRUSizerStrategy.from_config(params, ctx)

CASES: dict[str, Callable[[CandleData, Path], Factory]] = {
    "sma": _sma,
    "dsc": _dsc,
    "rollout": _rollout,
    "gru_sizer": _gru_sizer,
    # The per-asset rolling normalisation (models/normalize.py): a trailing window, causal too.
    "dsc_rolling": lambda data, tmp: _dsc(data, tmp, **ROLLING),
    "rollout_rolling": lambda data, tmp: _rollout(data, tmp, **ROLLING),
}


def decisions(strategy: Strategy, data: CandleData, precompute: bool) -> dict[int, tuple]:
    if precompute:
        strategy.precompute(data)
    bars = Bars.preloaded("BTCUSDT", "1h", data.time, data.open, data.high, data.low, data.close, data.volume)
    strategy.on_start(bars)
    made = []
    while bars.advance():
        d = strategy.on_bar(bars)
        if d is not None:
            made.append(d)
    # Deferred explanation parts run only now, after every later bar has been seen: a part that
    # read anything newer than its own bar would differ from the truncated run's.
    return {d.bar_time: (d.target, d.confidence, d.completed().explanation) for d in made}


def _same(a: tuple, b: tuple, exact: bool) -> bool:
    if exact:
        return a == b
    return a[0] == b[0] and abs(a[1] - b[1]) <= 1e-6


@pytest.fixture(scope="module")
def data(data_dir: Path) -> CandleData:
    full = load_candles(data_dir / "bybit_BTCUSDT_1h.csv.gz", symbol="BTCUSDT", timeframe="1h", bar_ms=3_600_000)
    return full.slice(5000, 5500)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("precompute", [False, True], ids=["bar_by_bar", "precompute"])
def test_past_decisions_ignore_future_bars(name: str, precompute: bool, data: CandleData,
                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    factory = CASES[name](data, tmp_path_factory.mktemp(f"lookahead_{name}"))
    full = decisions(factory(), data, precompute)
    assert full, f"{name} made no decision on {len(data)} bars"
    for cut in (len(data) - 150, len(data) - 37, len(data) - 1):
        part = decisions(factory(), data.slice(0, cut), precompute)
        cut_time = int(data.time[cut - 1])
        expected = {t: v for t, v in full.items() if t <= cut_time}
        assert part.keys() == expected.keys()
        bad = [t for t in expected if not _same(part[t], expected[t], exact=not precompute)]
        assert not bad, f"{name}: decisions at {bad[:3]} changed when bars after {cut_time} were removed"
    # Changing only the future must not change the past either.
    rng = np.random.default_rng(0)
    k = len(data) - 100
    noisy = CandleData(data.symbol, data.timeframe, data.time, data.open.copy(), data.high.copy(),
                       data.low.copy(), data.close.copy(), data.volume.copy(), data.source, data.gaps)
    f = 1 + rng.normal(0, 0.02, size=len(data) - k)
    for arr in (noisy.open, noisy.high, noisy.low, noisy.close):
        arr[k:] *= f
    changed = decisions(factory(), noisy, precompute)
    t_k = int(data.time[k - 1])
    assert all(_same(changed[t], v, exact=not precompute) for t, v in full.items() if t <= t_k)
