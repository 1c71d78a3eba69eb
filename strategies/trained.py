"""Models a backtest trains for itself, kept and reused.

A model strategy backtested without a checkpoint trains one on the leading part of the data. That
model is saved under ``checkpoints/backtest/`` with a key over everything the training saw (the
strategy, the market, the fee, long-only, every strategy parameter and every training bar), so the
next identical backtest loads it instead of training again, and a backtest that differs in any of
them trains its own. ``bot train``'s checkpoints (``checkpoints/<strategy>_<symbol>_<tf>.pt``) are
never written by a backtest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from bot.candles import CandleData
from bot.timeutil import ms_to_iso
from models.checkpoint import default_checkpoint_path
from strategies.base import StrategyContext

BACKTEST_DIR = Path("checkpoints") / "backtest"
KEY_VERSION = 1  # bump when what a trained model depends on changes in a way the key cannot see


def training_key(strategy: str, ctx: StrategyContext, params: dict[str, Any], data: CandleData) -> str:
    """16 hex digits of sha256 over the training inputs (parameters canonicalised, bars as bytes)."""
    h = hashlib.sha256()
    head = {"v": KEY_VERSION, "strategy": strategy, "symbol": ctx.symbol, "timeframe": ctx.timeframe,
            "fee_rate": ctx.fee_rate, "long_only": ctx.long_only, "params": params}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for col in (data.time, data.open, data.high, data.low, data.close, data.volume):
        h.update(col.tobytes())
    return h.hexdigest()[:16]


def backtest_model_path(strategy: str, ctx: StrategyContext, params: dict[str, Any], data: CandleData) -> Path:
    """Where the model a backtest trains on ``data`` (its training bars) is kept."""
    key = training_key(strategy, ctx, params, data)
    return BACKTEST_DIR / f"{strategy}_{ctx.symbol}_{ctx.timeframe}_{key}.pt"


def chosen_checkpoint(strategy: str, ctx: StrategyContext) -> Path | None:
    """The checkpoint a backtest trades without training: the one named by ``--checkpoint`` (which
    must exist; the strategy says so), else ``bot train``'s default for the market if it exists."""
    if ctx.checkpoint:
        return Path(ctx.checkpoint)
    path = default_checkpoint_path(strategy, ctx.symbol, ctx.timeframe)
    return path if path.exists() else None


def train_or_reuse(strategy: str, ctx: StrategyContext, params: dict[str, Any], train: CandleData,
                   fit: Callable[[Path], object]) -> tuple[Path, str]:
    """The kept model of an identical earlier backtest, or ``fit(path)`` writes a new one there;
    returns (path, the note the backtest prints). ``fit`` saves atomically (models.checkpoint), so a
    training that dies leaves no file to reuse."""
    path = backtest_model_path(strategy, ctx, params, train)
    span = f"{ms_to_iso(int(train.time[0]))} .. {ms_to_iso(int(train.time[-1]))}"
    if path.exists():
        return path, f"reusing {path}, trained by an identical backtest on {len(train)} bars ({span})"
    Console(stderr=True).print(f"no {strategy} checkpoint: training one on {len(train)} bars ({span})")
    fit(path)
    return path, f"trained {path} on {len(train)} bars ({span}); an identical backtest reuses it"
