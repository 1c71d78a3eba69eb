"""``bot run --mode paper`` on the live Bybit feed, and the ``--mode live`` entry point.

Paper mode: REST warm-up, then closed bars from the public WebSocket into the same engine a
backtest runs, with the simulated broker (market orders fill at the next bar's open, same fee
and slippage rules). ``--resume``/``--run-id`` continue an unfinished run (bot/resume.py).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from bot import app as core
from bot import resume as resume_mod
from bot.app import Session
from bot.config import Config
from bot.domain import timeframe_ms
from bot.errors import ConfigError, ExchangeError
from bot.feeds.bybit import BybitFeed
from bot.scheduler import RunScheduler
from bot.timeutil import ms_to_iso, parse_date
from storage import queries as q
from strategies.base import Strategy

#: Bars of history beyond the strategy's own warm-up, so indicators settle before trading.
WARMUP_MARGIN = 50


def warmup_bars(strategy: Strategy) -> int:
    return max(int(strategy.warmup), 1) + WARMUP_MARGIN


def live(cfg: Config, checkpoint: str | None, as_json: bool, *, confirm_live: bool = False, resume: bool = False,
         run_id: str | None = None, date_from: str | None = None, date_to: str | None = None) -> None:
    """Live trading on Bybit (testnet by default): see bot/live.py."""
    from bot.live import run_live  # noqa: PLC0415 - pybit only when trading live

    summary = asyncio.run(run_live(cfg, checkpoint, confirm_live=confirm_live, resume=resume, run_id=run_id,
                                   date_from=date_from, date_to=date_to))
    from bot.cli.common import console, dumps, print_summary  # noqa: PLC0415 - CLI-only imports

    if as_json:
        sys.stdout.write(dumps(summary) + "\n")
    else:
        print_summary(summary)
        console.print(f"run {summary['run_id']}: resume with  bot run --mode live --resume")


def paper_bybit(cfg: Config, checkpoint: str | None, as_json: bool, *, resume: bool = False,
                run_id: str | None = None, date_from: str | None = None, date_to: str | None = None) -> None:
    summary = asyncio.run(run_paper_bybit(cfg, checkpoint, resume=resume, run_id=run_id,
                                          date_from=date_from, date_to=date_to))
    from bot.cli.common import console, dumps, print_summary  # noqa: PLC0415 - CLI-only imports

    if as_json:
        sys.stdout.write(dumps(summary) + "\n")
    else:
        print_summary(summary)
        status = q.resolve_run(core.open_journal_db(cfg.storage.url), summary["run_id"])["status"]
        hint = "  (continue with: bot run --mode paper --resume)" if status != "completed" else ""
        console.print(f"run {summary['run_id']}: {status}{hint}")


@dataclass
class _Events:
    """Feed events before the journal exists are buffered, then journaled with the run."""

    session: Session | None = None
    pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        if self.session is None:
            self.pending.append((kind, payload))
            return
        self.session.journal.record_event(self.session.engine.last_bar or 0, kind, payload)

    def attach(self, session: Session) -> None:
        self.session = session
        for kind, payload in self.pending:
            self(kind, payload)
        self.pending.clear()


async def run_paper_bybit(cfg: Config, checkpoint: str | None = None, *, resume: bool = False,
                          run_id: str | None = None, date_from: str | None = None,
                          date_to: str | None = None, watchdog_s: float | None = None,
                          equity_every_s: float = 60.0, ping_interval_s: float = 20.0,
                          feed_factory: Any = None) -> dict[str, Any]:
    """Paper trading on the Bybit (or simulator) feed; returns the run summary."""
    db = core.open_journal_db(cfg.storage.url)
    stop_at = parse_date(date_to) if date_to else None
    plan = resume_mod.plan(db, cfg, run_id, stop_at) if (resume or run_id) else None
    if plan is not None:
        cfg = plan.cfg
    strategy = core.build_strategy(cfg, checkpoint)
    tf = timeframe_ms(cfg.market.timeframe)
    events = _Events()
    ex = cfg.exchange
    make = feed_factory or BybitFeed
    feed: BybitFeed = make(cfg.market.symbol, cfg.market.timeframe, cfg.market.category,
                           rest_url=ex.rest_url, ws_url=ex.ws_url, testnet=ex.testnet, timeout_s=ex.timeout_s,
                           ping_interval_s=ping_interval_s, on_event=events)
    try:
        try:
            now = await feed.server_time()
        except ExchangeError as exc:
            where = ex.rest_url or ("Bybit testnet" if ex.testnet else "Bybit")
            raise ExchangeError(f"cannot reach {where}: {exc}") from None
        if plan is not None:
            last = plan.last_bar if plan.last_bar is not None else plan.first_open - tf
            history = await feed.history(plan.warmup_start, last)
            resume_mod.check_bars(plan, history, tf)
            stop_at = plan.stop_at_ms
            prepare = _resume_prepare(plan, events)
            after = last
        else:
            first = parse_date(date_from) if date_from else now
            first = -(-first // tf) * tf if date_from else (first // tf) * tf
            if stop_at is not None and stop_at <= first:
                raise ConfigError(f"--to {date_to} is not after the first bar to trade ({ms_to_iso(first)})")
            history = await feed.warmup(warmup_bars(strategy), first)
            start = {"warmup_start": history[0].open_time if history else first, "warmup_bars": len(history),
                     "first_open": first, "stop_at": stop_at, "rest_url": ex.rest_url, "ws_url": ex.ws_url}
            prepare = _fresh_prepare(start, events)
            after = first - tf
        services = _services(feed, events, watchdog_s if watchdog_s is not None else min(60.0, tf / 4000),
                             equity_every_s)
        return await core.run_paper(
            cfg, strategy, db, feed.stream(after), data_source=f"bybit:{ex.rest_url or 'default'}",
            warmup=history, journal=plan.journal if plan is not None else None, prepare=prepare,
            stop_at_ms=stop_at, services=services)
    finally:
        await feed.close()


def _fresh_prepare(start: dict[str, Any], events: _Events) -> Any:
    def prepare(s: Session) -> None:
        s.engine.start()
        s.journal.record_event(start["first_open"], resume_mod.START_EVENT, start)
        s.journal.flush()  # a resume needs this even if the process dies before the first bar
        events.attach(s)

    return prepare


def _resume_prepare(plan: resume_mod.ResumePlan, events: _Events) -> Any:
    def prepare(s: Session) -> None:
        resume_mod.restore(s, plan)
        events.attach(s)

    return prepare


def _services(feed: BybitFeed, events: _Events, watchdog_s: float, equity_every_s: float) -> Any:
    @asynccontextmanager
    async def services(s: Session, stop: asyncio.Event) -> AsyncIterator[RunScheduler]:
        async with RunScheduler(s, feed=feed, equity_every_s=equity_every_s,
                                watchdog_every_s=watchdog_s) as sched:
            yield sched

    return services
