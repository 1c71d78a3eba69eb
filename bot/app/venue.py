"""Paper and live on a venue's feed: Bybit (or the local simulator) candles, simulated or real orders."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

import structlog

from bot import resume as resume_mod
from bot import signals
from bot.app.guards import guard_market, guard_venue
from bot.app.parts import build_strategy, open_journal_db, run_observers, simulated_brokers
from bot.bars import Bars
from bot.config import Config
from bot.domain import Category, timeframe_ms
from bot.engine import wall_clock_ms
from bot.errors import ConfigError, ExchangeError
from bot.funding import resolve_funding
from bot.retrain import Retrainer, check_retrain, swapped_checkpoints
from bot.runner import EventBuffer, MarketSession, Runner, RunPlan
from bot.scheduler import RunScheduler
from bot.sources import StreamSource
from bot.timeutil import ms_to_iso, parse_date
from broker.base import Broker, MarketDataListener
from broker.simulated import SimulatedBroker
from strategies.base import Strategy

if TYPE_CHECKING:
    from bot.live import RunOptions

log = structlog.get_logger("bot.app")


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
    venue.check_markets(cfg, checkpoint)
    check_retrain(cfg)
    observers = run_observers(cfg)  # a bad alert URL is told before any network call
    # A resumed run trades the model its last journaled swap put in (bot/retrain.py), not the first one.
    swapped = swapped_checkpoints(db, rp.run_id) if rp is not None else {}
    strategies = [build_strategy(cfg, swapped.get(m.symbol, checkpoint), market=m) for m in cfg.markets]
    for m, strategy in zip(cfg.markets, strategies, strict=True):
        guard_market(strategy, m)  # a checkpoint of another market: refused before any network call
    # Paper settles funding from the file market.funding names (live: the venue charges it).
    funding = [resolve_funding(m.funding, m.category, m.symbol, m.data) if keys is None else None
               for m in cfg.markets]
    samples: list[dict[str, Any] | None] = [None] * len(cfg.markets)
    events = EventBuffer()
    feed = venue.make_feed(cfg, opts, events)
    account = venue.make_broker(cfg, *keys, opts) if keys is not None else None
    try:
        legs = [account.leg(m.symbol, m.category, leverage=Decimal(repr(m.leverage)))
                for m in cfg.markets] if account is not None else None
        if account is not None:
            await venue.connect(account, cfg)
        try:
            now = await feed.server_time()  # after the venue check: the first bar must still lie ahead
        except ExchangeError as exc:
            raise ExchangeError(f"cannot reach {venue.venue_name(cfg)}: {exc}") from None
        plan = RunPlan(mode=mode, data_source=f"bybit{'-live' if keys else ''}:{cfg.exchange.rest_url or 'default'}",
                       durable=True, drain_s=opts.drain_s, observers=observers)
        if account is not None:  # journaled as the run begins (or resumes)
            plan.events.extend((now, "leverage_set", p) for p in account.leverage_set.values())
        if rp is not None:
            starts, stop_at = await _resume_start(rp, feed, account, plan, stop_at)
        else:
            cfg, starts, samples = await _fresh_start(cfg, strategies, feed, account, plan, now, first_from,
                                                      stop_at, date_to)
        brokers: list[Broker] = list(legs) if legs is not None else list(simulated_brokers(cfg))
        after = {m.symbol: a for m, (_, a, _) in zip(cfg.markets, starts, strict=True)}
        for m, broker, f in zip(cfg.markets, brokers, funding, strict=True):
            if f is not None and isinstance(broker, SimulatedBroker):
                broker.set_funding(f.times.tolist(), f.rates.tolist(), after_ms=after[m.symbol])
        sessions = []
        for m, strategy, broker, (history, _, qty), sample in zip(cfg.markets, strategies, brokers, starts, samples,
                                                                  strict=True):
            bars = Bars(m.symbol, m.timeframe)
            for c in history:
                bars.append(c)
            sessions.append(MarketSession(m, strategy, bars, broker, start_qty=qty, in_sample=sample,
                                          market=_bar_listener(broker)))
        plan.services = _services(cfg, feed, opts, min(timeframe_ms(m.timeframe) for m in cfg.markets))
        signals.point("venue_ready")  # the venue answered; nothing of this start is journaled yet
        runner = Runner(cfg, sessions, db, source=StreamSource(feed.groups(after), stop_at), plan=plan,
                        clock=wall_clock_ms, events=events)
        return await runner.run()
    finally:
        if account is not None:
            await account.close()
        await feed.close()


#: Per market: (the bars its buffer starts with, the open time of the last of them, its venue
#: position when the run began).
Start = tuple[list[Any], int, Decimal]


async def _resume_start(rp: resume_mod.ResumePlan, feed: Any, account: Any, plan: RunPlan,
                        stop_at: int | None) -> tuple[list[Start], int | None]:
    """Every market's buffer of a resumed run rebuilt from the venue, and the run's stop time."""
    starts = []
    for m in rp.cfg.markets:
        tf = timeframe_ms(m.timeframe)
        last = resume_mod.last_processed(rp, m.symbol, tf)
        history = await feed.history(m.symbol, rp.markets[m.symbol].warmup_start, last)
        resume_mod.check_bars(rp, m.symbol, history, tf)
        starts.append((history, last, rp.markets[m.symbol].start_qty))
    plan.resume = rp.resume
    plan.run_start_ms = rp.resume.first_open
    if account is not None:
        account.since_floor = int(rp.start.get("venue_start_ms", plan.run_start_ms))
    return starts, stop_at if stop_at is not None else rp.stop_at_ms


async def _fresh_start(cfg: Config, strategies: list[Strategy], feed: Any, account: Any, plan: RunPlan, now: int,
                       first_from: int | None, stop_at: int | None,
                       date_to: str | None) -> tuple[Config, list[Start], list[dict[str, Any] | None]]:
    """A new run starts each market with its bar forming at start-up (or at --from); the
    in-sample guard (bot/app/guards.py) refuses a first bar the checkpoint was fitted on."""
    from bot import live as venue  # noqa: PLC0415

    firsts = []
    for m in cfg.markets:
        tf = timeframe_ms(m.timeframe)
        first = -(-first_from // tf) * tf if first_from is not None else (now // tf) * tf
        if stop_at is not None and stop_at <= first:
            raise ConfigError(f"--to {date_to} is not after {m.symbol}'s first bar to trade ({ms_to_iso(first)})")
        firsts.append(first)
    guarded = [guard_venue(s, m, f, stop_at) for m, s, f in zip(cfg.markets, strategies, firsts, strict=True)]
    plan.events.extend((f, kind, p) for g, f in zip(guarded, firsts, strict=True) for kind, p in g.events)
    for m, g in zip(cfg.markets, guarded, strict=True):
        for line in g.notes:
            log.warning("checkpoint_guard", symbol=m.symbol, note=line)
    if first_from is not None:  # a start in the future: every market's warm-up must be closed
        now = await venue.wait_for(feed, max(firsts), min(timeframe_ms(m.timeframe) for m in cfg.markets))
    histories = [await feed.warmup(m.symbol, max(int(s.warmup), 1) + venue.WARMUP_MARGIN, first)
                 for m, s, first in zip(cfg.markets, strategies, firsts, strict=True)]
    qtys = venue.start_positions(account, cfg) if account is not None else [Decimal(0)] * len(cfg.markets)
    entries = [resume_mod.start_entry(h, f, q) for h, f, q in zip(histories, firsts, qtys, strict=True)]
    ex = cfg.exchange
    payload: dict[str, Any] = {"first_open": min(firsts), "stop_at": stop_at, "rest_url": ex.rest_url,
                               "ws_url": ex.ws_url}
    if len(entries) == 1:
        payload.update(entries[0])
    else:
        payload["markets"] = dict(zip(cfg.symbols, entries, strict=True))
    if account is not None:
        cfg, payload = venue.live_start(cfg, account, histories, now, payload)
    plan.start_payload, plan.start_time, plan.run_start_ms = payload, min(firsts), min(firsts)
    starts = [(h, f - timeframe_ms(m.timeframe), q)
              for m, h, f, q in zip(cfg.markets, histories, firsts, qtys, strict=True)]
    return cfg, starts, [g.in_sample for g in guarded]


def _services(cfg: Config, feed: Any, opts: RunOptions, tf: int) -> Any:
    from bot import reconcile as rec  # noqa: PLC0415

    watchdog = opts.watchdog_s if opts.watchdog_s is not None else min(60.0, tf / 4000)

    def services(runner: Runner, stop: Any) -> RunScheduler:
        venue = runner.write_ahead
        retrainer = Retrainer(runner, feed.history, lambda m, path: build_strategy(cfg, path, market=m))
        if retrainer.jobs():
            runner.plan.between_bars.append(retrainer.between_bars)
        return RunScheduler(runner, feed=feed, equity_every_s=opts.equity_every_s, watchdog_every_s=watchdog,
                            reconcile_every_s=opts.reconcile_every_s if venue else 300.0,
                            reconcile=rec.periodic if venue else None, retrain=retrainer.jobs())

    return services


def _bar_listener(broker: Broker) -> MarketDataListener | None:
    """Who must see every closed bar: the simulated fill engine, and a Bybit spot market (its
    stop leg's trail is the bot's to move: spot has no native trailing stop)."""
    if isinstance(broker, SimulatedBroker) or broker.instrument.category is Category.SPOT:
        return cast("MarketDataListener", broker)
    return None
