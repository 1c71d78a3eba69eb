"""Walk-forward evaluation: train on the past, trade the next block out of sample, stitch the blocks.

The file's bars are cut into an initial training window (``train_fraction`` of them) and ``folds``
equal test blocks after it. Fold i trains the strategy's model (one checkpoint per seed) on the
bars before its block (all of them: ``expanding``; the last ``train_fraction`` x n: ``rolling``)
and backtests the block through the same runner as ``bot backtest``: the block's first bars are
preceded by the strategy's warm-up bars (history only, never traded), and every block is a run in
the journal. The baselines trade the same blocks: buy and hold, SMA(10/30) and ``vol_only``
(fitted on the same training bars). A block's model never saw a bar of the block. A linear
market's funding file is settled in every block (bot/funding.py).

Every block (a fold x seed of the strategy, a fold of a baseline) is an independent job: serially
here, or on a process pool or Ray (bot/jobs.py, ``--workers`` / ``--ray``); each opens the journal
by URL in its own process, and the blocks come back in plan order.

The per-bar returns of the blocks are stitched (compounded) into one out-of-sample curve per
strategy and seed; :mod:`bot.wf_stats` puts block-bootstrap intervals on its return and Sharpe.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel
from sqlalchemy import Engine as DBEngine

from bot.app.files import backtest
from bot.app.parts import build_strategy
from bot.candles import CandleData
from bot.config import Config
from bot.domain import timeframe_ms
from bot.errors import ConfigError
from bot.funding import FundingRates
from bot.jobs import Jobs
from bot.timeutil import ms_to_iso
from bot.wf_stats import Stitched, stitch
from storage import queries as q
from storage.db import database_for
from strategies import get_spec
from strategies.vol_only import VolOnlyParams, fit_max_vol

WINDOWS = ("expanding", "rolling")
#: A test block shorter than this says nothing (and cannot be annualised).
MIN_TEST_BARS = 50
BASELINES: dict[str, dict[str, Any]] = {"buy_hold": {}, "sma": {}, "vol_only": {}}


@dataclass(frozen=True, slots=True)
class Fold:
    index: int
    train: tuple[int, int]  # bar indices [start, stop)
    test: tuple[int, int]


@dataclass(slots=True)
class Block:
    """One strategy (and seed) traded on one fold's test block."""

    fold: int
    strategy: str
    seed: int | None
    run_id: str
    model_id: str | None
    checkpoint: str | None
    start: str
    end: str
    summary: dict[str, Any]
    returns: np.ndarray


@dataclass(slots=True)
class WalkForward:
    strategy: str
    symbol: str
    timeframe: str
    window: str
    folds: list[Fold]
    blocks: list[Block] = field(default_factory=list)
    stitched: list[Stitched] = field(default_factory=list)


def make_folds(n: int, folds: int, train_fraction: float, window: str) -> list[Fold]:
    """The initial training window, then ``folds`` test blocks (the last takes the remainder)."""
    if window not in WINDOWS:
        raise ConfigError(f"unknown --window {window!r}: expected {' or '.join(WINDOWS)}")
    if folds < 1:
        raise ConfigError(f"--folds must be at least 1, got {folds}")
    if not 0 < train_fraction < 1:
        raise ConfigError(f"--train-fraction must be between 0 and 1, got {train_fraction}")
    first = int(n * train_fraction)
    size = (n - first) // folds
    if size < MIN_TEST_BARS:
        raise ConfigError(f"{n} bars leave {n - first} after the first training window: too few for {folds} "
                          f"test blocks of at least {MIN_TEST_BARS} bars")
    out = []
    for i in range(folds):
        t0 = first + i * size
        t1 = n if i == folds - 1 else t0 + size
        out.append(Fold(i, (0 if window == "expanding" else t0 - first, t0), (t0, t1)))
    return out


def seeded(cfg: Config, params: dict[str, Any], k: int) -> tuple[dict[str, Any], int]:
    """``params`` with every training section's seed (a params field whose model has ``seed``)
    moved on by ``k``; (params, the first section's seed)."""
    model = get_spec(cfg.market.strategy.name).params
    out = copy.deepcopy(params)
    first: int | None = None
    for name, info in model.model_fields.items():
        section = info.annotation
        if isinstance(section, type) and issubclass(section, BaseModel) and "seed" in section.model_fields:
            default = info.get_default(call_default_factory=True)
            base = (out.get(name) or {}).get("seed", getattr(default, "seed", 0))
            out[name] = {**(out.get(name) or {}), "seed": int(base) + k}
            first = int(base) + k if first is None else first
    if first is None:
        raise ConfigError(f"strategy {cfg.market.strategy.name!r} has no training seed: use --seeds 1")
    return out, first


def _with_strategy(cfg: Config, name: str, params: dict[str, Any], checkpoint: str | None) -> Config:
    m = cfg.market
    s = m.strategy.model_copy(update={"name": name, "params": params, "checkpoint": checkpoint})
    return cfg.with_market(m.model_copy(update={"strategy": s}))


def _trade(cfg: Config, data: CandleData, fold: Fold, db: DBEngine, seed: int | None,
           funding: FundingRates | None) -> Block:
    """Backtest ``cfg``'s strategy on the fold's test block, after its warm-up bars."""
    strategy = build_strategy(cfg)
    t0, t1 = fold.test
    warm = min(strategy.warmup, t0 - fold.train[0])
    summary = backtest(cfg, data.slice(t0 - warm, t1), strategy, db, show_progress=False, history=warm,
                       funding=funding)
    eq = np.array([r["equity"] for r in q.equity(db, summary["run_id"])], dtype=np.float64)
    curve = np.concatenate(([cfg.broker.initial_cash], eq))
    return Block(fold.index, cfg.market.strategy.name, seed, summary["run_id"], strategy.model_id,
                 cfg.market.strategy.checkpoint, ms_to_iso(int(data.time[t0])), ms_to_iso(int(data.time[t1 - 1])),
                 summary, curve[1:] / curve[:-1] - 1.0)


def _train(cfg: Config, data: CandleData, fold: Fold, params: dict[str, Any], out: Path) -> str:
    from models.training import TrainRequest  # noqa: PLC0415 - torch only for model strategies

    m = cfg.market
    req = TrainRequest(data=data.slice(*fold.train), params=params, symbol=m.symbol, timeframe=m.timeframe,
                       fee_rate=cfg.broker.fee_rate, long_only=m.category == "spot", out=out, progress=False)
    return str(get_spec(m.strategy.name).resolve("trainer")(req).resolve())


def run_walkforward(cfg: Config, data: CandleData, db: DBEngine, *, folds: int, seeds: int, window: str,
                    train_fraction: float, out_dir: Path, block_bars: int | None = None,
                    on_block: Callable[[Block], None] | None = None,
                    funding: FundingRates | None = None, baselines: bool = True,
                    jobs: Jobs | None = None) -> WalkForward:
    """Every fold x seed of the strategy and every fold of each baseline (``baselines``); stitched
    and bootstrapped. Each block is an independent job on ``jobs`` (default: serial, here); the
    blocks come back in plan order, so every engine gives the serial run's blocks."""
    m = cfg.market
    spec = get_spec(m.strategy.name)
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    trainable = spec.trainer is not None
    plan = make_folds(len(data), folds, train_fraction, window)
    wf = WalkForward(m.strategy.name, m.symbol, m.timeframe, window, plan)
    url = db.url.render_as_string(hide_password=False)
    database_for(url, db)
    work: list[tuple[Any, ...]] = []
    names: list[str] = []
    for fold in plan:
        for k in range(seeds if trainable else 1):
            p, seed = seeded(cfg, dict(m.strategy.params), k) if trainable else (dict(m.strategy.params), None)
            ckpt = out_dir / f"fold{fold.index}_seed{seed}.pt" if trainable else None
            work.append((cfg, data, fold, url, m.strategy.name, p, seed, ckpt, funding))
            names.append(f"fold {fold.index}{f' seed {seed}' if seed is not None else ''} {m.strategy.name}")
        for name, base in (BASELINES.items() if baselines else ()):
            if name != m.strategy.name:
                work.append((cfg, data, fold, url, name, dict(base), None, None, funding))
                names.append(f"fold {fold.index} {name}")
    wf.blocks = (jobs or Jobs()).map(block_job, work, names, on_result=on_block)
    bar_ms = timeframe_ms(m.timeframe)
    keys = dict.fromkeys((b.strategy, b.seed) for b in wf.blocks)
    wf.stitched = [stitch(name, seed, [b.returns for b in wf.blocks if (b.strategy, b.seed) == (name, seed)],
                          initial=cfg.broker.initial_cash, bar_ms=bar_ms, block_bars=block_bars)
                   for name, seed in keys]
    return wf


def block_job(cfg: Config, data: CandleData, fold: Fold, url: str, name: str, params: dict[str, Any],
              seed: int | None, ckpt: Path | None, funding: FundingRates | None) -> Block:
    """One block: train (a model strategy, on the fold's training bars), fit, trade the test block."""
    db = database_for(url)
    checkpoint = _train(cfg, data, fold, params, ckpt) if ckpt is not None else None
    p = _fitted(name, params, data, fold)
    return _trade(_with_strategy(cfg, name, p, checkpoint), data, fold, db, seed, funding)


def _fitted(name: str, params: dict[str, Any], data: CandleData, fold: Fold) -> dict[str, Any]:
    """``vol_only`` without a ``max_vol``: the level fitted on the fold's training bars."""
    if name != "vol_only" or params.get("max_vol") is not None:
        return params
    p = VolOnlyParams.model_validate(params)
    return {**params, "max_vol": fit_max_vol(data.close[fold.train[0]:fold.train[1]], p.lookback, p.quantile)}
