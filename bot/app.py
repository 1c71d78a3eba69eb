"""Composition root: the only module that knows every part; it builds each mode's parts.

Every mode is the same :class:`~bot.runner.Runner` over a different triple:

| mode | bar source | broker | clock |
|---|---|---|---|
| backtest | the file, preloaded (``PreloadedSource``) | simulated | the data's |
| paper, replay | the file, paced (``StreamSource``) | simulated | wall |
| paper | Bybit's kline stream (REST warm-up/backfill) | simulated | wall |
| live | Bybit's kline stream | Bybit (pybit) | wall |
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog
from sqlalchemy import Engine as DBEngine

from bot import resume as resume_mod
from bot.bars import Bars
from bot.candles import CandleData, merge_order
from bot.config import Config, MarketConfig
from bot.domain import Category, Instrument, timeframe_ms
from bot.engine import wall_clock_ms
from bot.errors import ConfigError, ExchangeError
from bot.feeds.replay import load_candles, replay_candles
from bot.runner import EventBuffer, MarketSession, Runner, RunPlan, run_to_end
from bot.scheduler import RunScheduler
from bot.sources import MergedSource, PreloadedSource, StreamSource
from bot.timeutil import ms_to_iso, parse_date
from broker.base import Broker
from broker.simulated import SimulatedBroker, Wallet
from storage.db import open_database
from strategies import backtest_strategy, create_strategy
from strategies.base import Strategy, StrategyContext

if TYPE_CHECKING:
    from bot.live import RunOptions

log = structlog.get_logger("bot.app")


def instrument_from_config(m: MarketConfig) -> Instrument:
    return Instrument(
        symbol=m.symbol,
        category=Category(m.category),
        tick_size=Decimal(repr(m.tick_size)),
        qty_step=Decimal(repr(m.qty_step)),
        min_qty=Decimal(repr(m.min_qty)),
        min_notional=Decimal(repr(m.min_notional)),
    )


def strategy_context(cfg: Config, checkpoint: str | None = None, market: MarketConfig | None = None) -> StrategyContext:
    m = market or cfg.market
    return StrategyContext(
        symbol=m.symbol,
        timeframe=m.timeframe,
        long_only=m.category == "spot",
        fee_rate=cfg.broker.fee_rate,
        checkpoint=checkpoint or m.strategy.checkpoint,
    )


def build_strategy(cfg: Config, checkpoint: str | None = None, market: MarketConfig | None = None) -> Strategy:
    m = market or cfg.market
    return create_strategy(m.strategy.name, m.strategy.params, strategy_context(cfg, checkpoint, m))


def build_backtest_strategy(cfg: Config, data: CandleData, checkpoint: str | None = None,
                            market: MarketConfig | None = None) -> tuple[Strategy, int, str | None]:
    """(strategy, first traded bar, note): model strategies may train on early bars first."""
    m = market or cfg.market
    return backtest_strategy(m.strategy.name, m.strategy.params, strategy_context(cfg, checkpoint, m), data)


def load_data(cfg: Config, path: str, date_from: str | None = None, date_to: str | None = None,
              market: MarketConfig | None = None) -> CandleData:
    m = market or cfg.market
    return load_candles(
        path, symbol=m.symbol, timeframe=m.timeframe, bar_ms=timeframe_ms(m.timeframe),
        start_ms=parse_date(date_from) if date_from else None,
        end_ms=parse_date(date_to) if date_to else None,
    )


def simulated_brokers(cfg: Config) -> list[SimulatedBroker]:
    """One simulated broker per market, all over one wallet (the run's cash)."""
    wallet = Wallet(cfg.broker.initial_cash)
    return [SimulatedBroker(instrument_from_config(m), cfg.broker.initial_cash, cfg.broker.fee_rate,
                            cfg.broker.slippage_bps, wallet=wallet) for m in cfg.markets]


def simulated_broker(cfg: Config) -> SimulatedBroker:
    """The simulated broker of a one-market config."""
    return SimulatedBroker(instrument_from_config(cfg.market), cfg.broker.initial_cash, cfg.broker.fee_rate,
                           cfg.broker.slippage_bps)


def open_journal_db(url: str) -> DBEngine:
    return open_database(url)


@dataclass
class MarketData:
    """One market of a backtest or replay: its candles, strategy and untraded history bars."""

    data: CandleData
    strategy: Strategy
    history: int = 0


# -- backtest and paper on files ------------------------------------------------------------------------
def backtest(cfg: Config, data: CandleData, strategy: Strategy, db: DBEngine, *, mode: str = "backtest",
             show_progress: bool = True, history: int = 0, stop_after: int | None = None) -> dict[str, Any]:
    """A one-market backtest (see :func:`backtest_markets`)."""
    return backtest_markets(cfg, [MarketData(data, strategy, history)], db, mode=mode,
                            show_progress=show_progress, stop_after=stop_after)


def backtest_markets(cfg: Config, markets: list[MarketData], db: DBEngine, *, mode: str = "backtest",
                     show_progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Replay every market's file through the live code path with simulated brokers over one
    wallet; journal and summarise.

    Each market's first ``history`` bars are shown to its strategy as history but never traded
    (and are not in the equity curve). Bars play in (close time, config order) order.
    ``stop_after`` stops after that many traded bars (over all markets), leaving the run marked
    interrupted (tests use it).
    """
    brokers = simulated_brokers(cfg)
    sessions, events, closes = [], [], []
    for m, md, broker in zip(cfg.markets, markets, brokers, strict=True):
        d = md.data
        bars = Bars.preloaded(m.symbol, m.timeframe, d.time, d.open, d.high, d.low, d.close, d.volume)
        sessions.append(MarketSession(m, md.strategy, bars, broker, market=broker, history=md.history,
                                      precompute=d))
        closes.append(np.asarray(d.time[md.history:], dtype=np.int64) + timeframe_ms(m.timeframe))
        if d.gaps.count:
            g = d.gaps
            events.append((int(d.time[0]), "data_gaps", {"symbol": m.symbol, "count": g.count,
                                                         "missing_bars": g.missing_bars, "largest_ms": g.largest_ms,
                                                         "largest_at": g.largest_at}))
    tradable = sum(len(c) for c in closes)
    total = tradable if stop_after is None else min(stop_after, tradable)
    source: Any = (PreloadedSource(total, tradable) if len(sessions) == 1
                   else MergedSource(merge_order(closes), total))
    plan = RunPlan(mode=mode, data_source=";".join(md.data.source for md in markets), events=events,
                   show_progress=show_progress, equity_process=tradable >= 250_000)
    return run_to_end(Runner(cfg, sessions, db, source=source, plan=plan).run())


async def paper_replay(cfg: Config, markets: list[MarketData], db: DBEngine, speed: float = 0.0) -> dict[str, Any]:
    """Paper trading on replayed files: the wall clock, paced at ``speed`` x real time (0 = flat out)."""
    brokers = simulated_brokers(cfg)
    sessions = [MarketSession(m, md.strategy, Bars(m.symbol, m.timeframe), broker, market=broker)
                for m, md, broker in zip(cfg.markets, markets, brokers, strict=True)]
    source = StreamSource(replay_candles([(md.data, timeframe_ms(m.timeframe))
                                          for m, md in zip(cfg.markets, markets, strict=True)], speed))
    plan = RunPlan(mode="paper", data_source=";".join(md.data.source for md in markets), durable=True)
    return await Runner(cfg, sessions, db, source=source, plan=plan, clock=wall_clock_ms).run()


# -- paper and live on a venue's feed ---------------------------------------------------------------
async def paper(cfg: Config, checkpoint: str | None = None, *, resume: bool = False, run_id: str | None = None,
                date_from: str | None = None, date_to: str | None = None,
                options: RunOptions | None = None) -> dict[str, Any]:
    """Paper trading on Bybit's (or the simulator's) live candles with the simulated wallet."""
    return await _venue_run(cfg, "paper", checkpoint, resume=resume, run_id=run_id, date_from=date_from,
                            date_to=date_to, options=options)


async def live(cfg: Config, checkpoint: str | None = None, *, confirm_live: bool = False, resume: bool = False,
               run_id: str | None = None, date_from: str | None = None, date_to: str | None = None,
               options: RunOptions | None = None) -> dict[str, Any]:
    """Real orders on Bybit (testnet unless configured and confirmed otherwise)."""
    from bot import live as venue  # noqa: PLC0415 - pybit only when trading live

    key, secret = venue.credentials(cfg, confirm_live)
    return await _venue_run(cfg, "live", checkpoint, resume=resume, run_id=run_id, date_from=date_from,
                            date_to=date_to, options=options, keys=(key, secret))


async def _venue_run(cfg: Config, mode: str, checkpoint: str | None, *, resume: bool, run_id: str | None,
                     date_from: str | None, date_to: str | None, options: RunOptions | None,
                     keys: tuple[str, str] | None = None) -> dict[str, Any]:
    from bot import live as venue  # noqa: PLC0415 - the venue's clients only when a venue is used

    opts = options or venue.RunOptions()
    stop_at = parse_date(date_to) if date_to else None  # bad input fails before any network call
    first_from = parse_date(date_from) if date_from else None
    db = open_journal_db(cfg.storage.url)
    rp = resume_mod.plan(db, cfg, run_id, mode) if (resume or run_id) else None
    if rp is not None:
        cfg = rp.cfg
    strategy = build_strategy(cfg, checkpoint)
    tf = timeframe_ms(cfg.market.timeframe)
    events = EventBuffer()
    feed = venue.make_feed(cfg, opts, events)
    bybit = venue.make_broker(cfg, *keys, opts) if keys is not None else None
    try:
        if bybit is not None:
            await venue.connect(bybit, cfg)
        try:
            now = await feed.server_time()  # after the venue check: the first bar must still lie ahead
        except ExchangeError as exc:
            raise ExchangeError(f"cannot reach {venue.venue_name(cfg)}: {exc}") from None
        plan = RunPlan(mode=mode, data_source=f"bybit{'-live' if bybit else ''}:{cfg.exchange.rest_url or 'default'}",
                       durable=True, drain_s=opts.drain_s)
        if rp is not None:
            history, after, stop_at, start_qty = await _resume_start(rp, feed, bybit, plan, tf, stop_at)
        else:
            cfg, history, after, start_qty = await _fresh_start(cfg, strategy, feed, bybit, plan, now, first_from,
                                                                stop_at, date_to)
        broker: Broker = bybit if bybit is not None else simulated_broker(cfg)
        bars = Bars(cfg.market.symbol, cfg.market.timeframe)
        for c in history:
            bars.append(c)
        plan.services = _services(feed, opts, tf)
        session = MarketSession(cfg.market, strategy, bars, broker,
                                market=broker if isinstance(broker, SimulatedBroker) else None, start_qty=start_qty)
        runner = Runner(cfg, [session], db, source=StreamSource(feed.stream({cfg.market.symbol: after}), stop_at),
                        plan=plan, clock=wall_clock_ms, events=events)
        return await runner.run()
    finally:
        if bybit is not None:
            await bybit.close()
        await feed.close()


async def _resume_start(rp: resume_mod.ResumePlan, feed: Any, bybit: Any, plan: RunPlan, tf: int,
                        stop_at: int | None) -> tuple[list[Any], int, int | None, Decimal]:
    """The buffer of a resumed run rebuilt from the venue: (history, last bar, stop time)."""
    last = resume_mod.last_processed(rp, tf)
    history = await feed.history(rp.cfg.market.symbol, rp.warmup_start, last)
    resume_mod.check_bars(rp, history, tf)
    plan.resume = rp.resume
    plan.run_start_ms = rp.resume.first_open
    if bybit is not None:
        bybit.since_floor = int(rp.start.get("venue_start_ms", plan.run_start_ms))
    return history, last, stop_at if stop_at is not None else rp.stop_at_ms, Decimal(str(rp.start.get("start_qty", "0")))


async def _fresh_start(cfg: Config, strategy: Strategy, feed: Any, bybit: Any, plan: RunPlan, now: int,
                       first_from: int | None, stop_at: int | None,
                       date_to: str | None) -> tuple[Config, list[Any], int, Decimal]:
    """A new run starts with the bar forming at start-up (or at --from): (config, warm-up, bar before)."""
    from bot import live as venue  # noqa: PLC0415

    tf = timeframe_ms(cfg.market.timeframe)
    first = -(-first_from // tf) * tf if first_from is not None else (now // tf) * tf
    if stop_at is not None and stop_at <= first:
        raise ConfigError(f"--to {date_to} is not after the first bar to trade ({ms_to_iso(first)})")
    if first_from is not None:
        now = await venue.wait_for(feed, first, tf)  # a start in the future: its warm-up must be closed
    history = await feed.warmup(cfg.market.symbol, max(int(strategy.warmup), 1) + venue.WARMUP_MARGIN, first)
    ex = cfg.exchange
    payload: dict[str, Any] = {
        "warmup_start": history[0].open_time if history else first, "warmup_bars": len(history),
        "first_open": first, "stop_at": stop_at, "rest_url": ex.rest_url, "ws_url": ex.ws_url}
    if bybit is not None:
        cfg, payload = venue.live_start(cfg, bybit, history, now, payload)
    plan.start_payload, plan.start_time, plan.run_start_ms = payload, first, first
    return cfg, history, first - tf, bybit.qty if bybit is not None else Decimal(0)


def _services(feed: Any, opts: RunOptions, tf: int) -> Any:
    from bot import reconcile as rec  # noqa: PLC0415

    watchdog = opts.watchdog_s if opts.watchdog_s is not None else min(60.0, tf / 4000)

    def services(runner: Runner, stop: Any) -> RunScheduler:
        venue = runner.broker.write_ahead
        return RunScheduler(runner, feed=feed, equity_every_s=opts.equity_every_s, watchdog_every_s=watchdog,
                            reconcile_every_s=opts.reconcile_every_s if venue else 300.0,
                            reconcile=rec.periodic if venue else None)

    return services
