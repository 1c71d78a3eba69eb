"""Scheduled retraining in paper and live runs: train on the closed bars, swap between two bars.

One APScheduler job per market with ``market.retrain`` (bot/scheduler.py). The job takes the
market's closed bars up to the last bar its engine processed (never a later one: the new model
knows nothing the run had not seen when the job began), trains a checkpoint with the strategy's
own trainer and loads it, both in a worker thread, so the bar loop keeps trading meanwhile. The
result waits until the runner's ``between_bars`` hook: the model is swapped in after one bar's
transaction and before the next bar is played, so no decision ever straddles two models. The swap
is journaled (``model_swap``) in that next bar's transaction, with its first decision, which
carries the new model id. A training that fails (too few bars, a trainer error) is journaled as
``model_swap_failed`` and logged; the old model keeps trading. A resumed run trades the
checkpoint of its last journaled swap (:func:`swapped_checkpoints`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog
from sqlalchemy import Engine as DBEngine

from bot.candles import CandleData, filler_mask, find_gaps
from bot.config import Config, MarketConfig
from bot.domain import Candle, timeframe_ms
from bot.errors import ConfigError, DataError, ModelError
from bot.timeutil import ms_to_iso
from storage import queries as q
from strategies import get_spec
from strategies.base import Strategy
from strategies.spec import one_line

if TYPE_CHECKING:
    from bot.runner import MarketSession, Runner

log = structlog.get_logger("bot.retrain")

#: ``(symbol, first open time, last open time) -> closed candles`` (the feed's ``history``).
FetchBars = Callable[[str, int, int], Awaitable[list[Candle]]]
#: ``(market, checkpoint path) -> strategy`` (bot/app/parts.py's ``build_strategy``).
BuildStrategy = Callable[[MarketConfig, str], Strategy]


def check_retrain(cfg: Config) -> None:
    """``market.retrain`` only on a model strategy (one whose spec has a trainer): one clear line."""
    for m in cfg.markets:
        if m.retrain is not None and get_spec(m.strategy.name).trainer is None:
            raise ConfigError(f"{m.symbol}: market.retrain needs a model strategy with a trainer (dsc, rollout, "
                              f"gru_sizer); strategy {m.strategy.name!r} has none")


def swapped_checkpoints(db: DBEngine, run_id: str) -> dict[str, str]:
    """Per symbol, the checkpoint of the run's last journaled ``model_swap`` (what a resume trades)."""
    out: dict[str, str] = {}
    for e in q.events(db, run_id, "model_swap"):  # in journal order: the last one wins
        out[str(e["payload"]["symbol"])] = str(e["payload"]["checkpoint"])
    return out


def candle_data(symbol: str, timeframe: str, candles: list[Candle], source: str) -> CandleData:
    """Closed candles as the column arrays a trainer takes; zero-volume filler candles are dropped
    (they read as the gaps they are) and the gaps are reported, as a candle file's are."""
    t = np.array([c.open_time for c in candles], dtype=np.int64)
    cols = [np.array([getattr(c, k) for c in candles], dtype=np.float64)
            for k in ("open", "high", "low", "close", "volume")]
    keep = ~filler_mask(*cols) if len(t) else np.zeros(0, dtype=bool)
    t, cols = t[keep], [c[keep] for c in cols]
    return CandleData(symbol, timeframe, t, *cols, source, find_gaps(t, timeframe_ms(timeframe),
                                                                      filler=int((~keep).sum())))


@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished retraining of one market, waiting for the gap between two bars."""

    symbol: str
    #: The bar the job started at (the last closed bar the run had processed).
    asked_at: int
    strategy: Strategy | None = None
    checkpoint: str = ""
    first_bar: int = 0
    last_bar: int = 0
    bars: int = 0
    reason: str = ""


class Retrainer:
    """The retraining jobs of one run and the swaps they leave for the runner's ``between_bars``."""

    def __init__(self, runner: Runner, fetch: FetchBars, build: BuildStrategy) -> None:
        self.runner, self.fetch, self.build = runner, fetch, build
        self.pending: dict[str, Outcome] = {}
        self.swaps = 0
        self.failures = 0

    def jobs(self) -> dict[str, tuple[float, Callable[[], Awaitable[None]]]]:
        """``retrain:<symbol>`` -> (interval in seconds, job) for every market that retrains."""
        return {f"retrain:{m.symbol}": (m.cfg.retrain.every_s, partial(self.retrain, m))
                for m in self.runner.sessions if m.cfg.retrain is not None}

    async def retrain(self, m: MarketSession) -> None:
        """Train on the closed bars up to the engine's last one, off the event loop; leave the result."""
        assert m.engine is not None and m.cfg.retrain is not None
        last = m.engine.last_bar
        if last is None:
            return  # nothing processed yet: the next interval tries again
        try:
            data = await self._bars(m, last)
            rc = m.cfg.retrain
            if len(data) < rc.min_bars:
                raise DataError(f"too few bars to retrain: {len(data)} closed bars up to {ms_to_iso(last)}, "
                                f"min_bars is {rc.min_bars}")
            assert self.runner.journal is not None
            out = (Path(rc.out_dir) / self.runner.journal.run_id
                   / f"{m.cfg.strategy.name}_{m.symbol}_{m.cfg.timeframe}_{last}.pt")
            strategy, path = await asyncio.to_thread(self._train, m.cfg, data, out, last)
        except Exception as exc:  # noqa: BLE001 - a failed retraining never stops the run
            self.pending[m.symbol] = Outcome(m.symbol, last, reason=one_line(exc)[:1000])
            return
        self.pending[m.symbol] = Outcome(m.symbol, last, strategy, str(path), int(data.time[0]),
                                         int(data.time[-1]), len(data))

    async def _bars(self, m: MarketSession, last: int) -> CandleData:
        """The training bars: the window ending at ``last`` (from the run's buffer when it holds
        them all, else from the venue), or ``expanding``: the whole buffer up to ``last``."""
        rc = m.cfg.retrain
        assert rc is not None
        tf = timeframe_ms(m.cfg.timeframe)
        bars = m.bars
        upto = int(np.searchsorted(bars.time, last, side="right"))
        start = int(bars.time[0]) if rc.window_bars == "expanding" else last - (rc.window_bars - 1) * tf
        if int(bars.time[0]) <= start:
            lo = int(np.searchsorted(bars.time, start))
            candles = [bars.candle(i) for i in range(lo, upto)]
            source = "the run's bars"
        else:
            candles = await self.fetch(m.symbol, start, last)
            candles = [c for c in candles if c.open_time <= last]  # never a bar the run had not processed
            source = "the venue's closed bars"
        return candle_data(m.symbol, m.cfg.timeframe, candles, source)

    def _train(self, market: MarketConfig, data: CandleData, out: Path, last: int) -> tuple[Strategy, Path]:
        """Worker thread: the strategy's trainer writes the checkpoint; it is loaded as a new strategy."""
        from models.training import TrainRequest  # noqa: PLC0415 - torch only for model strategies

        cfg = self.runner.cfg
        out.parent.mkdir(parents=True, exist_ok=True)
        req = TrainRequest(data=data, params=dict(market.strategy.params), symbol=market.symbol,
                           timeframe=market.timeframe, fee_rate=cfg.broker.fee_rate,
                           long_only=market.category == "spot", out=out, progress=False)
        path = Path(get_spec(market.strategy.name).resolve("trainer")(req))
        strategy = self.build(market, str(path))
        fitted = strategy.fitted
        if fitted is not None and fitted.end is not None and fitted.end > last:
            raise ModelError(f"the retrained checkpoint was fitted up to {ms_to_iso(fitted.end)}, after the "
                             f"last closed bar {ms_to_iso(last)}")
        return strategy, path

    def between_bars(self) -> None:
        """The runner's hook before each bar: swap in (or report) what the jobs have finished."""
        if not self.pending:
            return
        outcomes, self.pending = self.pending, {}
        for m in self.runner.sessions:
            o = outcomes.get(m.symbol)
            if o is not None:
                self._apply(m, o)

    def _apply(self, m: MarketSession, o: Outcome) -> None:
        eng, journal = m.engine, m.journal
        assert eng is not None and journal is not None
        now = eng.last_bar if eng.last_bar is not None else o.asked_at
        common: dict[str, Any] = {"symbol": m.symbol, "asked_at_bar": o.asked_at,
                                  "bars_during_training": max(0, (now - o.asked_at) // eng.bar_ms)}
        if o.strategy is None:
            self.failures += 1
            log.warning("model_swap_failed", symbol=m.symbol, reason=o.reason, model=m.strategy.model_id)
            journal.record_event(now, "model_swap_failed", {**common, "model_id": m.strategy.model_id,
                                                             "reason": o.reason})
            return
        old = m.strategy.model_id
        eng.swap_strategy(o.strategy)
        m.strategy = o.strategy
        self.swaps += 1
        payload = {**common, "old_model_id": old, "new_model_id": o.strategy.model_id, "checkpoint": o.checkpoint,
                   "first_bar": o.first_bar, "last_bar": o.last_bar, "bars": o.bars,
                   "range": f"{ms_to_iso(o.first_bar)} .. {ms_to_iso(o.last_bar)}"}
        log.info("model_swap", **payload)
        journal.record_event(now, "model_swap", payload)
