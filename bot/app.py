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

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Engine as DBEngine

from bot import resume as resume_mod
from bot.bars import Bars
from bot.candles import CandleData
from bot.config import Config, MarketConfig
from bot.domain import Category, Instrument, timeframe_ms
from bot.engine import wall_clock_ms
from bot.errors import ConfigError, ExchangeError
from bot.feeds.replay import load_candles, replay_candles
from bot.runner import EventBuffer, PreloadedSource, Runner, RunPlan, StreamSource, run_to_end
from bot.scheduler import RunScheduler
from bot.timeutil import ms_to_iso, parse_date
from broker.base import Broker
from broker.simulated import SimulatedBroker
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


def strategy_context(cfg: Config, checkpoint: str | None = None) -> StrategyContext:
    return StrategyContext(
        symbol=cfg.market.symbol,
        timeframe=cfg.market.timeframe,
        long_only=cfg.market.category == "spot",
        fee_rate=cfg.broker.fee_rate,
        checkpoint=checkpoint or cfg.strategy.checkpoint,
    )


def build_strategy(cfg: Config, checkpoint: str | None = None) -> Strategy:
    return create_strategy(cfg.strategy.name, cfg.strategy.params, strategy_context(cfg, checkpoint))


def build_backtest_strategy(cfg: Config, data: CandleData,
                            checkpoint: str | None = None) -> tuple[Strategy, int, str | None]:
    """(strategy, first traded bar, note): model strategies may train on early bars first."""
    return backtest_strategy(cfg.strategy.name, cfg.strategy.params, strategy_context(cfg, checkpoint), data)


def load_data(cfg: Config, path: str, date_from: str | None = None, date_to: str | None = None) -> CandleData:
    return load_candles(
        path, symbol=cfg.market.symbol, timeframe=cfg.market.timeframe,
        bar_ms=timeframe_ms(cfg.market.timeframe),
        start_ms=parse_date(date_from) if date_from else None,
        end_ms=parse_date(date_to) if date_to else None,
    )


def simulated_broker(cfg: Config) -> SimulatedBroker:
    return SimulatedBroker(instrument_from_config(cfg.market), cfg.broker.initial_cash, cfg.broker.fee_rate,
                           cfg.broker.slippage_bps)


def open_journal_db(url: str) -> DBEngine:
    return open_database(url)


# -- backtest and paper on a file ---------------------------------------------------------------------
def backtest(cfg: Config, data: CandleData, strategy: Strategy, db: DBEngine, *, mode: str = "backtest",
             show_progress: bool = True, history: int = 0, stop_after: int | None = None) -> dict[str, Any]:
    """Replay ``data`` through the live code path with the simulated broker; journal and summarise.

    The first ``history`` bars are shown to the strategy as history but never traded (and are not
    in the equity curve). ``stop_after`` stops after that many traded bars, leaving the run
    marked interrupted (tests use it).
    """
    bars = Bars.preloaded(cfg.market.symbol, cfg.market.timeframe, data.time, data.open, data.high,
                          data.low, data.close, data.volume)
    broker = simulated_broker(cfg)
    tradable = len(data) - history
    total = tradable if stop_after is None else min(stop_after, tradable)
    events = []
    if data.gaps.count:
        g = data.gaps
        events.append((int(data.time[0]), "data_gaps", {"count": g.count, "missing_bars": g.missing_bars,
                                                          "largest_ms": g.largest_ms, "largest_at": g.largest_at}))
    plan = RunPlan(mode=mode, data_source=data.source, events=events, history=history, precompute=data,
                   show_progress=show_progress, equity_process=tradable >= 250_000)
    runner = Runner(cfg, strategy, db, bars=bars, source=PreloadedSource(total, tradable), broker=broker,
                    plan=plan, market=broker)
    return run_to_end(runner.run())


async def paper_replay(cfg: Config, data: CandleData, strategy: Strategy, db: DBEngine,
                       speed: float = 0.0) -> dict[str, Any]:
    """Paper trading on a replayed file: the wall clock, paced at ``speed`` x real time (0 = flat out)."""
    broker = simulated_broker(cfg)
    source = StreamSource(replay_candles(data, speed, timeframe_ms(cfg.market.timeframe)))
    plan = RunPlan(mode="paper", data_source=data.source, durable=True)
    runner = Runner(cfg, strategy, db, bars=Bars(cfg.market.symbol, cfg.market.timeframe), source=source,
                    broker=broker, plan=plan, clock=wall_clock_ms, market=broker)
    return await runner.run()


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
    account = venue.make_broker(cfg, *keys, opts) if keys is not None else None
    bybit = account.leg(cfg.market.symbol, cfg.market.category) if account is not None else None
    try:
        if account is not None:
            await venue.connect(account, cfg)
        try:
            now = await feed.server_time()  # after the venue check: the first bar must still lie ahead
        except ExchangeError as exc:
            raise ExchangeError(f"cannot reach {venue.venue_name(cfg)}: {exc}") from None
        plan = RunPlan(mode=mode, data_source=f"bybit{'-live' if bybit else ''}:{cfg.exchange.rest_url or 'default'}",
                       durable=True, drain_s=opts.drain_s)
        if rp is not None:
            history, after, stop_at = await _resume_start(rp, feed, bybit, plan, tf, stop_at)
        else:
            cfg, history, after = await _fresh_start(cfg, strategy, feed, bybit, plan, now, first_from, stop_at,
                                                     date_to)
        broker: Broker = bybit if bybit is not None else simulated_broker(cfg)
        bars = Bars(cfg.market.symbol, cfg.market.timeframe)
        for c in history:
            bars.append(c)
        plan.services = _services(feed, opts, tf)
        runner = Runner(cfg, strategy, db, bars=bars, source=StreamSource(feed.stream(after), stop_at),
                        broker=broker, plan=plan, clock=wall_clock_ms,
                        market=broker if isinstance(broker, SimulatedBroker) else None, events=events)
        return await runner.run()
    finally:
        if account is not None:
            await account.close()
        await feed.close()


async def _resume_start(rp: resume_mod.ResumePlan, feed: Any, bybit: Any, plan: RunPlan, tf: int,
                        stop_at: int | None) -> tuple[list[Any], int, int | None]:
    """The buffer of a resumed run rebuilt from the venue: (history, last bar, stop time)."""
    last = resume_mod.last_processed(rp, tf)
    history = await feed.history(rp.warmup_start, last)
    resume_mod.check_bars(rp, history, tf)
    plan.resume = rp.resume
    plan.start_qty = Decimal(str(rp.start.get("start_qty", "0")))
    plan.run_start_ms = rp.resume.first_open
    if bybit is not None:
        bybit.since_floor = int(rp.start.get("venue_start_ms", plan.run_start_ms))
    return history, last, stop_at if stop_at is not None else rp.stop_at_ms


async def _fresh_start(cfg: Config, strategy: Strategy, feed: Any, bybit: Any, plan: RunPlan, now: int,
                       first_from: int | None, stop_at: int | None,
                       date_to: str | None) -> tuple[Config, list[Any], int]:
    """A new run starts with the bar forming at start-up (or at --from): (config, warm-up, bar before)."""
    from bot import live as venue  # noqa: PLC0415

    tf = timeframe_ms(cfg.market.timeframe)
    first = -(-first_from // tf) * tf if first_from is not None else (now // tf) * tf
    if stop_at is not None and stop_at <= first:
        raise ConfigError(f"--to {date_to} is not after the first bar to trade ({ms_to_iso(first)})")
    if first_from is not None:
        now = await venue.wait_for(feed, first, tf)  # a start in the future: its warm-up must be closed
    history = await feed.warmup(max(int(strategy.warmup), 1) + venue.WARMUP_MARGIN, first)
    ex = cfg.exchange
    payload: dict[str, Any] = {
        "warmup_start": history[0].open_time if history else first, "warmup_bars": len(history),
        "first_open": first, "stop_at": stop_at, "rest_url": ex.rest_url, "ws_url": ex.ws_url}
    if bybit is not None:
        cfg, payload = venue.live_start(cfg, bybit, history, now, payload)
    plan.start_payload, plan.start_time, plan.run_start_ms = payload, first, first
    plan.start_qty = bybit.qty if bybit is not None else Decimal(0)
    return cfg, history, first - tf


def _services(feed: Any, opts: RunOptions, tf: int) -> Any:
    from bot import reconcile as rec  # noqa: PLC0415

    watchdog = opts.watchdog_s if opts.watchdog_s is not None else min(60.0, tf / 4000)

    def services(runner: Runner, stop: Any) -> RunScheduler:
        venue = runner.broker.write_ahead
        return RunScheduler(runner, feed=feed, equity_every_s=opts.equity_every_s, watchdog_every_s=watchdog,
                            reconcile_every_s=opts.reconcile_every_s if venue else 300.0,
                            reconcile=rec.periodic if venue else None)

    return services
