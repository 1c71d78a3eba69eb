"""Backtests and paper replays of candle files: the runner over preloaded or paced files."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Engine as DBEngine

from bot.app.parts import MarketData, run_observers, simulated_brokers
from bot.bars import Bars
from bot.candles import CandleData, merge_order
from bot.config import Config
from bot.domain import timeframe_ms
from bot.engine import wall_clock_ms
from bot.feeds.replay import replay_candles
from bot.funding import FundingRates
from bot.observe import RunObserver
from bot.runner import MarketSession, Runner, RunPlan, run_to_end
from bot.sources import PreloadedSource, StreamSource
from broker.simulated import SimulatedBroker
from strategies.base import Strategy


def backtest(cfg: Config, data: CandleData, strategy: Strategy, db: DBEngine, *, mode: str = "backtest",
             show_progress: bool = True, history: int = 0, stop_after: int | None = None,
             funding: FundingRates | None = None, intrabar: CandleData | None = None) -> dict[str, Any]:
    """A one-market backtest (see :func:`backtest_markets`)."""
    return backtest_markets(cfg, [MarketData(data, strategy, history, funding=funding, intrabar=intrabar)], db,
                            mode=mode,
                            show_progress=show_progress, stop_after=stop_after)


def _settle_funding(broker: SimulatedBroker, md: MarketData, symbol: str, events: list[Any]) -> None:
    """The market's funding settlements after its first traded bar (bot/funding.py), and an event
    saying where they come from."""
    f, d = md.funding, md.data
    if f is None or md.history >= len(d):
        return
    first = int(d.time[md.history])
    broker.set_funding(f.times.tolist(), f.rates.tolist(), after_ms=first)
    due = int(((f.times > first) & (f.times <= int(d.time[-1]))).sum())
    events.append((first, "funding_rates", {"symbol": symbol, "source": f.source, "settlements": due}))


def _finer_bars(broker: SimulatedBroker, md: MarketData, bar_ms: int) -> None:
    if md.intrabar is not None:
        broker.set_intrabar(md.intrabar.time, md.intrabar.high, md.intrabar.low, bar_ms)


def backtest_markets(cfg: Config, markets: list[MarketData], db: DBEngine, *, mode: str = "backtest",
                     show_progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Replay every market's file through the live code path with simulated brokers over one
    wallet; journal and summarise.

    Each market's first ``history`` bars are shown to its strategy as history but never traded
    (and are not in the equity curve). Bars play in (close time, config order) order.
    ``stop_after`` stops after that many traded bars (over all markets), leaving the run marked
    interrupted (tests use it).
    """
    brokers = simulated_brokers(cfg, [md.rules for md in markets])
    sessions, events, closes = [], [], []
    for m, md, broker in zip(cfg.markets, markets, brokers, strict=True):
        d = md.data
        bars = Bars.preloaded(m.symbol, m.timeframe, d.time, d.open, d.high, d.low, d.close, d.volume)
        sessions.append(MarketSession(m, md.strategy, bars, broker, market=broker, history=md.history,
                                      precompute=d, in_sample=md.in_sample))
        closes.append(np.asarray(d.time[md.history:], dtype=np.int64) + timeframe_ms(m.timeframe))
        events.extend(_guard_events(md))
        if d.gaps.found:
            events.append((int(d.time[0]), "data_gaps", {"symbol": m.symbol, **d.gaps.payload()}))
        if md.rules is not None:
            events.append((int(d.time[0]), "instrument_rules", md.rules.payload()))
        _settle_funding(broker, md, m.symbol, events)
        _finer_bars(broker, md, timeframe_ms(m.timeframe))
    tradable = sum(len(c) for c in closes)
    total = tradable if stop_after is None else min(stop_after, tradable)
    source = PreloadedSource(merge_order(closes), np.sort(np.concatenate(closes), kind="stable"), total)
    plan = RunPlan(mode=mode, data_source=";".join(md.data.source for md in markets), events=events,
                   show_progress=show_progress, writer_process=tradable >= 50_000)
    return run_to_end(Runner(cfg, sessions, db, source=source, plan=plan).run())


async def paper_replay(cfg: Config, markets: list[MarketData], db: DBEngine, speed: float = 0.0,
                       observers: list[RunObserver] | None = None) -> dict[str, Any]:
    """Paper trading on replayed files: the wall clock, paced at ``speed`` x real time (0 = flat out).

    ``observers`` watch the run (bot/observe.py); by default those the config asks for."""
    brokers = simulated_brokers(cfg, [md.rules for md in markets])
    sessions = []
    events: list[Any] = [e for md in markets for e in _guard_events(md)]
    for m, md, broker in zip(cfg.markets, markets, brokers, strict=True):
        bars = Bars(m.symbol, m.timeframe)
        for i in range(md.history):  # untraded history (in-sample bars): the strategy's warm-up
            bars.append(md.data.candle(i))
        sessions.append(MarketSession(m, md.strategy, bars, broker, market=broker, in_sample=md.in_sample))
        _settle_funding(broker, md, m.symbol, events)
        _finer_bars(broker, md, timeframe_ms(m.timeframe))
    source = StreamSource(replay_candles([(md.data.slice(md.history, len(md.data)), timeframe_ms(m.timeframe))
                                          for m, md in zip(cfg.markets, markets, strict=True)], speed))
    plan = RunPlan(mode="paper", data_source=";".join(md.data.source for md in markets), durable=True,
                   events=events, observers=run_observers(cfg) if observers is None else observers)
    return await Runner(cfg, sessions, db, source=source, plan=plan, clock=wall_clock_ms).run()


def _guard_events(md: MarketData) -> list[tuple[int, str, dict[str, Any]]]:
    """The checkpoint guards' events (bot/app/guards.py), journaled before the first bar."""
    return [(int(md.data.time[0]), kind, payload) for kind, payload in md.events]
