"""``bot run --mode live``: the paper driver's feed, engine and scheduler with the Bybit broker.

Order of start-up: safety checks (keys, mainnet confirmation), the venue (instrument rules,
a signed call, books, the authenticated private stream), the journal run (new, or the latest
unfinished live run on ``--resume``), reconciliation with the venue, and only then the bar
loop: no decision can trade before the journal and the exchange agree. A scheduled job
repeats the venue check. Stopping (SIGINT/SIGTERM) leaves orders on the venue as they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import Engine as DBEngine

from bot import app as core
from bot import reconcile as rec
from bot import resume as resume_mod
from bot.app import Session
from bot.config import Config, Secrets
from bot.domain import Fill, Side, timeframe_ms
from bot.errors import ConfigError, ExchangeError
from bot.feeds.bybit import BybitFeed
from bot.scheduler import RunScheduler
from bot.timeutil import parse_date
from broker.bybit import BybitBroker, BybitHttp, PrivateStream, private_url
from storage import queries as q
from storage.journal import Journal

log = structlog.get_logger("bot.live")

START_EVENT = "live_start"
RESUME_EVENT = "live_resume"
WARMUP_MARGIN = 50


@dataclass(frozen=True)
class LiveOptions:
    """Knobs tests turn (accelerated simulator clock); defaults suit a real venue."""

    reconcile_every_s: float = 300.0
    equity_every_s: float = 60.0
    watchdog_s: float | None = None
    ping_interval_s: float = 20.0
    stream_check_s: float = 0.5
    drain_s: float = 10.0


def is_mainnet(cfg: Config) -> bool:
    return not cfg.exchange.testnet and not cfg.exchange.rest_url


def credentials(cfg: Config, confirm_live: bool) -> tuple[str, str]:
    """Keys from the environment; mainnet only with explicit confirmation."""
    if is_mainnet(cfg) and not confirm_live:
        raise ConfigError("refusing to trade on Bybit mainnet without --confirm-live "
                          "(exchange.testnet=false means real money)")
    sec = Secrets()
    key = sec.api_key.get_secret_value() if sec.api_key else ""
    secret = sec.api_secret.get_secret_value() if sec.api_secret else ""
    if not key or not secret:
        raise ConfigError("live trading needs API keys: set BYBIT_API_KEY and BYBIT_API_SECRET "
                          "(environment or .env)")
    return key, secret


# -- resume -----------------------------------------------------------------------------------------
def find_live_run(db: DBEngine, run_id: str | None) -> dict[str, Any]:
    return resume_mod.find_run(db, run_id, mode="live", start_event=START_EVENT)


def live_plan(db: DBEngine, current: Config, run_id: str | None) -> tuple[resume_mod.ResumePlan, dict[str, Any]]:
    run = find_live_run(db, run_id)
    start = resume_mod.start_event(db, run["id"], START_EVENT)
    tree = dict(run["config"])
    tree.update({k: getattr(current, k).model_dump(mode="json") for k in ("exchange", "storage", "logging")})
    cfg = Config.model_validate(tree)
    # A bar whose decision is journaled counts as processed even if the kill came before the
    # bar's progress row: its order intent was written ahead and is resolved by reconciliation.
    decisions = q.decisions(db, run["id"])
    last = max([run["last_bar"] or -1, *(int(d["bar_time"]) for d in decisions)])
    plan = resume_mod.ResumePlan(run=run, cfg=cfg, journal=Journal(db, run["id"], cfg.storage.batch_size),
                                 warmup_start=int(start["warmup_start"]), warmup_bars=int(start["warmup_bars"]),
                                 first_open=int(start["first_open"]), last_bar=None if last < 0 else last,
                                 stop_at_ms=start.get("stop_at"))
    return plan, start


def restore_books(session: Session, plan: resume_mod.ResumePlan) -> None:
    """Engine counters, trade ledger, equity curve, risk peaks and strategy state from the journal."""
    eng, bars, db = session.engine, session.bars, plan.journal.engine
    rid = plan.run_id
    index = {int(t): i for i, t in enumerate(bars.time)}
    orders = q.orders(db, rid)
    by_id = {o["id"]: o for o in orders}
    fills = q.fills(db, rid)
    for f in fills:
        fill = Fill(exec_id=f["exec_id"], client_order_id=f["order_id"], symbol=f["symbol"], side=Side(f["side"]),
                    qty=f["qty"], price=f["price"], fee=f["fee"], time=int(f["time"]), is_maker=bool(f["is_maker"]))
        eng.ledger.on_fill(fill, (by_id.get(f["order_id"]) or {}).get("decision_id"), index.get(fill.time, 0))
    eng.trade_pnls.extend(t["net_pnl"] for t in q.trades(db, rid))
    eng.fees_paid = sum((f["fee"] for f in fills), Decimal(0))
    for r in q.equity(db, rid):
        eng.equity_curve.append(float(r["equity"]))
        eng.position_curve.append(float(r["position"]))
        eng.cash_curve.append(float(r["cash"]))
        if eng._risk_active:  # noqa: SLF001 - peaks must survive a restart
            eng.risk.on_equity(int(r["time"]), float(r["equity"]))
    decisions = q.decisions(db, rid)
    eng.n_decisions, eng.n_orders = len(decisions), len(orders)
    acted = [d for d in decisions if d["status"] in ("order", "hold", "waiting", "blocked")]
    if acted and acted[-1]["target"] is not None:
        eng.target = float(acted[-1]["target"])
    ordered = [d for d in decisions if d["status"] == "order"]
    if ordered:
        eng.risk.last_order_bar = index.get(int(ordered[-1]["bar_time"]), -(10**9))
    eng.bar_index = bars.n - 1
    eng.last_bar = plan.last_bar
    eng._synced_to = bars.n - 1  # noqa: SLF001 - bars up to here are journaled (or lost with the kill)
    resume_mod._replay_strategy(eng.strategy, bars, plan, {int(d["bar_time"]): d for d in decisions})  # noqa: SLF001
    plan.journal.reopen()


# -- the run ------------------------------------------------------------------------------------------
async def run_live(cfg: Config, checkpoint: str | None = None, *, confirm_live: bool = False, resume: bool = False,
                   run_id: str | None = None, date_from: str | None = None, date_to: str | None = None,
                   options: LiveOptions | None = None) -> dict[str, Any]:
    opts = options or LiveOptions()
    key, secret = credentials(cfg, confirm_live)
    stop_at = parse_date(date_to) if date_to else None  # bad input fails before any network call
    first_from = parse_date(date_from) if date_from else None
    db = core.open_journal_db(cfg.storage.url)
    plan, start = live_plan(db, cfg, run_id) if (resume or run_id) else (None, None)
    if plan is not None:
        cfg = plan.cfg
    strategy = core.build_strategy(cfg, checkpoint)
    tf = timeframe_ms(cfg.market.timeframe)
    ex, m = cfg.exchange, cfg.market
    where = ex.rest_url or ("Bybit testnet" if ex.testnet else "Bybit MAINNET")
    http = BybitHttp(key, secret, testnet=ex.testnet, rest_url=ex.rest_url, recv_window=ex.recv_window,
                     timeout_s=ex.timeout_s, category=m.category)
    stream = PrivateStream(key, secret, url=private_url(ex.ws_url, ex.testnet), testnet=ex.testnet,
                           on_message=lambda _m: None, on_reconnect=_noop, check_every_s=opts.stream_check_s,
                           ping_interval_s=int(max(opts.ping_interval_s, 1)))
    broker = BybitBroker(http, m.symbol, m.category, stream=stream)
    feed = BybitFeed(m.symbol, m.timeframe, m.category, rest_url=ex.rest_url, ws_url=ex.ws_url, testnet=ex.testnet,
                     timeout_s=ex.timeout_s, ping_interval_s=opts.ping_interval_s)
    try:
        try:
            await broker.load()
            now = await feed.server_time()  # after the venue check: the first bar must still lie ahead
        except ExchangeError as exc:
            raise type(exc)(f"{where}: {exc}", code=exc.code) from None
        log.info("live_venue_ready", venue=where, symbol=m.symbol, position=str(broker.qty),
                 tick=str(broker.instrument.tick_size), lot=str(broker.instrument.qty_step))
        if plan is not None:
            assert start is not None
            last = plan.last_bar if plan.last_bar is not None else plan.first_open - tf
            history = await feed.history(plan.warmup_start, last)
            resume_mod.check_bars(plan, history, tf)
            stop_at = stop_at if stop_at is not None else plan.stop_at_ms
            start_qty = Decimal(str(start.get("start_qty", "0")))
            run_start = int(start["first_open"])
            broker.since_floor = int(start.get("venue_start_ms", run_start))
            after = last

            def prepare(sess: Session) -> None:
                restore_books(sess, plan)
                _wire(sess, broker)
        else:
            # Trading starts with the bar forming at start-up (or at --from), as paper mode does.
            first = -(-first_from // tf) * tf if first_from is not None else (now // tf) * tf
            if date_from:
                now = await _wait_for(feed, first, tf)  # a start in the future: its warm-up must be closed
            history = await feed.warmup(max(int(strategy.warmup), 1) + WARMUP_MARGIN, first)
            start_qty = broker.qty
            run_start = first
            broker.since_floor = now  # fills before this are the account's history, not this run's
            mark = Decimal(repr(history[-1].close)) if history else Decimal(0)
            equity = float(broker.cash + broker.qty * mark)
            if equity <= 0:
                raise ExchangeError(f"{where}: the account holds no USDT equity to trade with")
            cfg = cfg.model_copy(update={"broker": cfg.broker.model_copy(update={"initial_cash": equity})})
            payload = {"warmup_start": history[0].open_time if history else first, "warmup_bars": len(history),
                       "first_open": first, "stop_at": stop_at, "rest_url": ex.rest_url, "ws_url": ex.ws_url,
                       "testnet": ex.testnet, "start_qty": format(start_qty, "f"), "start_equity": equity,
                       "venue_start_ms": now}
            after = first - tf

            def prepare(sess: Session) -> None:
                sess.engine.start()
                sess.journal.record_event(first, START_EVENT, payload)
                sess.journal.flush()
                _wire(sess, broker)

        @asynccontextmanager
        async def services(sess: Session, stop: asyncio.Event) -> AsyncIterator[RunScheduler]:
            # Reconciliation before the first bar: nothing trades until journal and venue agree.
            await rec.reconcile(sess, broker, start_qty=start_qty, run_start_ms=run_start)
            if plan is not None:
                sess.journal.record_event(plan.last_bar or plan.first_open, RESUME_EVENT,
                                          {"last_bar": plan.last_bar, "position": format(broker.qty, "f")})
                sess.journal.flush()

            async def periodic(session: Any) -> None:
                await rec.periodic(session, broker)

            watchdog = opts.watchdog_s if opts.watchdog_s is not None else min(60.0, tf / 4000)
            async with RunScheduler(sess, feed=feed, equity_every_s=opts.equity_every_s, watchdog_every_s=watchdog,
                                    reconcile_every_s=opts.reconcile_every_s, reconcile=periodic) as sched:
                yield sched
                # A clean stop lets orders in flight resolve, so the journal records their outcome;
                # one still working after that stays on the venue and is reconciled at the next start.
                if not await broker.drain(opts.drain_s):
                    log.warning("live_stop_orders_working", orders=[o.client_order_id for o in broker.open_orders()])

        return await core.run_paper(
            cfg, strategy, db, feed.stream(after), data_source=f"bybit-live:{ex.rest_url or where}", warmup=history,
            mode="live", journal=plan.journal if plan is not None else None, prepare=prepare, stop_at_ms=stop_at,
            services=services, broker=broker)
    finally:
        await broker.close()
        await feed.close()


async def _wait_for(feed: BybitFeed, first: int, tf: int) -> int:
    """Sleep until, by the venue's clock, the bar before ``first`` has closed. The venue's clock
    rate is measured between polls (a simulator may run faster than real time)."""
    loop = asyncio.get_running_loop()
    prev: tuple[float, int] | None = None
    while True:
        now = await feed.server_time()
        wall = loop.time()
        if now >= first:
            return now
        rate = 1.0
        if prev is not None and wall > prev[0] and now > prev[1]:
            rate = (now - prev[1]) / ((wall - prev[0]) * 1000.0)
        prev = (wall, now)
        log.info("live_waiting_for_start", first_bar=first, server_time=now)
        await asyncio.sleep(min(max((first - now) / rate / 1000.0 / 2, 0.005), 5.0) if rate != 1.0 else 0.05)


async def _noop() -> None:
    return None


def _wire(sess: Session, broker: BybitBroker) -> None:
    """Venue events reach the journal promptly: adopted orders first recorded, every event flushed."""
    journal = sess.journal
    engine_listener = broker._listener  # noqa: SLF001 - wrap the engine's listener set by Engine()

    def on_adopt(order: Any) -> None:
        journal.record_order(order)

    def listener(order: Any, fill: Any) -> None:
        assert engine_listener is not None
        engine_listener(order, fill)
        journal.flush()

    def on_event(kind: str, payload: dict[str, Any]) -> None:
        journal.record_event(sess.engine.last_bar or 0, kind, payload)

    broker.on_adopt = on_adopt
    broker.on_event = on_event
    broker.set_listener(listener)

