"""``bot walkforward`` (bot/walkforward.py, bot/wf_stats.py): folds never let a model see its test
block, every block is a journaled run of the real runner, the stitched curve compounds the blocks
exactly, the baselines trade the same blocks, seeds train different models, the bootstrap is
seeded, and bad input is one line."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.bars import Bars
from bot.candles import CandleData
from bot.config import load_config
from bot.errors import ConfigError
from bot.feeds.replay import load_candles
from bot.walkforward import make_folds, run_walkforward
from bot.wf_stats import block_resamples, stitch
from models.checkpoint import read_meta
from models.vol_regime import realised_vol
from storage import queries as q
from storage.db import open_database
from strategies.base import StrategyContext
from strategies.vol_only import VolOnly, fit_max_vol
from tests.test_cli import bot
from tests.test_dsc_strategy import TINY


@pytest.fixture(scope="module")
def btc(data_dir: Path) -> CandleData:
    full = load_candles(data_dir / "bybit_BTCUSDT_1h.csv.gz", symbol="BTCUSDT", timeframe="1h", bar_ms=3_600_000)
    return full.slice(len(full) - 3000, len(full))


@pytest.mark.parametrize("window", ["expanding", "rolling"])
def test_folds_train_before_their_block_and_the_blocks_tile_the_rest(window: str) -> None:
    folds = make_folds(1000, 4, 0.4, window)
    assert [f.test for f in folds] == [(400, 550), (550, 700), (700, 850), (850, 1000)]
    for f in folds:
        assert f.train[1] == f.test[0]  # trained on bars strictly before the block
        assert f.train[0] == (0 if window == "expanding" else f.test[0] - 400)


@pytest.mark.parametrize(("args", "message"), [((100, 4, 0.5, "expanding"), "too few"),
                                               ((1000, 0, 0.5, "expanding"), "--folds must be at least 1"),
                                               ((1000, 2, 1.5, "expanding"), "--train-fraction"),
                                               ((1000, 2, 0.5, "sliding"), "unknown --window 'sliding'")])
def test_bad_fold_plans_are_refused(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_folds(*args)


def test_sma_walkforward_blocks_are_journaled_runs_and_stitch_exactly(btc: CandleData, sqlite_url: str,
                                                                      tmp_path: Path) -> None:
    cfg = load_config(None, [], {"strategy.name": "sma", "storage.url": sqlite_url})
    db = open_database(sqlite_url)
    wf = run_walkforward(cfg, btc, db, folds=3, seeds=1, window="expanding", train_fraction=0.4,
                         out_dir=tmp_path / "wf")
    assert [(b.fold, b.strategy) for b in wf.blocks] == [(i, s) for i in range(3)
                                                         for s in ("sma", "buy_hold", "vol_only")]
    for b in wf.blocks:
        f = wf.folds[b.fold]
        run = q.resolve_run(db, b.run_id)
        assert run["strategy"] == b.strategy and run["status"] == "completed"
        decided = [d["bar_time"] for d in q.decisions(db, b.run_id)]
        equity = q.equity(db, b.run_id)
        # Only the block's bars are traded and marked; the warm-up bars before it are history.
        assert decided and min(decided) >= int(btc.time[f.test[0]])
        assert len(equity) == f.test[1] - f.test[0] == b.summary["bars"]
    for s in wf.stitched:
        mine = [b for b in wf.blocks if b.strategy == s.strategy]
        compounded = math.prod(1.0 + b.summary["total_return"] for b in mine) - 1.0
        assert s.total_return.value == pytest.approx(compounded, rel=1e-9, abs=1e-12)
        assert s.bars == sum(b.summary["bars"] for b in mine)
        assert s.total_return.low <= s.total_return.value <= s.total_return.high
    hold = [b for b in wf.blocks if b.strategy == "buy_hold"]
    assert all(b.summary["orders"] == 1 for b in hold)  # one buy per block, then held


def test_each_seed_trains_its_own_model_on_bars_before_the_block(btc: CandleData, sqlite_url: str,
                                                                  tmp_path: Path) -> None:
    data = btc.slice(0, 1400)
    cfg = load_config(None, [], {"strategy.name": "dsc", "strategy.params": TINY, "storage.url": sqlite_url})
    db = open_database(sqlite_url)
    wf = run_walkforward(cfg, data, db, folds=1, seeds=2, window="rolling", train_fraction=0.7,
                         out_dir=tmp_path / "wf")
    mine = [b for b in wf.blocks if b.strategy == "dsc"]
    assert [b.seed for b in mine] == [1, 2]  # TINY's train.seed, then moved on by one
    assert len({b.model_id for b in mine}) == 2
    block_start = int(data.time[wf.folds[0].test[0]])
    for b in mine:
        meta = read_meta(b.checkpoint)
        assert meta.train_config["seed"] == b.seed
        assert meta.train_range["end"] < block_start  # the model never saw a bar of its block
        assert json.loads(json.dumps(q.resolve_run(db, b.run_id)["config"]))["markets"][0]["strategy"]["checkpoint"] \
            == b.checkpoint
    assert {s.strategy for s in wf.stitched} == {"dsc", "buy_hold", "sma", "vol_only"}


def test_block_bootstrap_is_seeded_and_keeps_runs_of_bars() -> None:
    rng = np.random.default_rng(0)
    idx = block_resamples(100, 10, rng, count=50)
    assert idx.shape == (50, 100)
    assert np.all(np.diff(idx[:, :10], axis=1) == 1)  # the first block is 10 consecutive bars
    r = np.random.default_rng(1).normal(0.0005, 0.01, 24 * 100)
    a = stitch("x", None, [r[:700], r[700:]], initial=1000.0, bar_ms=3_600_000)
    b = stitch("x", None, [r], initial=1000.0, bar_ms=3_600_000)
    assert a == b  # stitching is concatenation; same seed, same intervals
    assert a.total_return.value == pytest.approx(float(np.prod(1 + r) - 1))
    assert a.block_bars == 168 and a.sharpe.low < a.sharpe.value < a.sharpe.high
    short = stitch("x", None, [r[:200]], initial=1000.0, bar_ms=3_600_000)  # 8 days: not annualised
    assert short.sharpe.value is None and short.total_return.value is not None


def test_vol_only_reads_only_past_closes_and_needs_a_fitted_level(btc: CandleData) -> None:
    ctx = StrategyContext("BTCUSDT", "1h", long_only=True)
    level = fit_max_vol(btc.close[:1000], 24, 0.5)
    assert level == pytest.approx(float(np.nanquantile(realised_vol(btc.close[:1000], 24), 0.5)))
    s = VolOnly(VolOnly.parse_params({"max_vol": level}), ctx)
    bars = Bars.preloaded("BTCUSDT", "1h", btc.time, btc.open, btc.high, btc.low, btc.close, btc.volume)
    vol = realised_vol(btc.close, 24)
    targets = {}
    for t in range(30, 400):
        bars.n = t + 1
        d = s.on_bar(bars)
        if d is not None:
            targets[t] = d.target
            assert d.target == (1.0 if vol[t] <= level else 0.0)  # bar t's own feature, closes <= t
    assert set(targets.values()) == {0.0, 1.0}
    with pytest.raises(ConfigError, match="strategy.params.max_vol: required outside a backtest"):
        VolOnly.from_config({}, ctx)
    strategy, first, note = VolOnly.for_backtest({"train_fraction": 0.25}, ctx, btc)
    assert first == 750 and "fitted on the first 750 bars" in (note or "")


@pytest.mark.parametrize(("args", "line"), [(["--folds", "0"], "error: --folds must be at least 1, got 0"),
                                            (["--window", "sliding"],
                                             "error: unknown --window 'sliding': expected expanding or rolling"),
                                            (["--seeds", "2", "--strategy", "vol_only"], None)])
def test_cli_bad_input_is_one_line(btc_1h: Path, tmp_path: Path, args: list[str], line: str | None) -> None:
    res = bot("walkforward", "--data", str(btc_1h), "--db", f"sqlite:///{tmp_path / 'j.db'}",
              "--from", "2025-06-01", "--to", "2025-09-01", *args, cwd=tmp_path)
    if line is None:  # a strategy without a model: one run per fold whatever --seeds says
        assert res.returncode == 0, res.stderr
        assert "vol_only: out of sample" in res.stdout and "checkpoints" not in res.stdout
        assert [f"fold {i} vol_only:" in res.stdout for i in range(5)] == [True] * 4 + [False]  # no seeds
        return
    assert res.returncode == 2 and res.stderr.strip() == line, res.stderr


def test_a_win_on_return_that_the_sharpe_intervals_do_not_show_is_said_to_be_none() -> None:
    """Research that cannot fool its user: a higher return whose Sharpe interval overlaps the
    baseline's is "no demonstrated edge", one whose interval lies above it is not qualified."""
    from bot.cli.walkforward import verdict
    from bot.walkforward import WalkForward
    from bot.wf_stats import Interval, Stitched

    def curve(name: str, seed: int | None, ret: float, sharpe: tuple[float, float, float]) -> Stitched:
        return Stitched(name, seed, 100, Interval(ret, ret - 0.1, ret + 0.1), Interval(*sharpe), 0.1, 24)

    def said(model: tuple[float, float, float]) -> str:
        wf = WalkForward("dsc", "BTCUSDT", "1h", "expanding", [])
        wf.stitched = [curve("dsc", 7, 0.05, model), curve("buy_hold", None, -0.30, (-0.5, -2.2, 1.2))]
        return verdict(wf)

    vague = said((-0.3, -2.0, 1.0))
    assert "beats every baseline on return" in vague
    assert "overlaps buy_hold's: no demonstrated edge over it" in vague
    clear = said((2.5, 1.5, 3.5))
    assert "beats every baseline on return" in clear and "no demonstrated edge" not in clear
