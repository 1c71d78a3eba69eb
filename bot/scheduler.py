"""Periodic jobs around a paper (or live) run, on APScheduler's AsyncIOScheduler.

Jobs: an equity snapshot (log line plus journal flush, a heartbeat in ``runs.updated_at``),
the stale-feed watchdog (asks the exchange's clock; see BybitFeed.check_stale), reconciliation
(paper: the broker's wallet against the engine's books; live trading plugs its venue check into
``reconcile``) and retraining (one job per market with ``market.retrain``: bot/retrain.py). Jobs
never overlap themselves and a failing job is logged, never fatal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = structlog.get_logger("bot.scheduler")

Job = Callable[[], Awaitable[Any]]


class RunScheduler:
    """Owns the AsyncIOScheduler for one run; use as ``async with`` around the bar loop.

    ``session`` is the runner: its ``journal`` and its market ``sessions`` (each with its
    ``engine`` and ``broker``); reconciliation runs per market."""

    def __init__(self, session: Any, *, feed: Any | None = None, equity_every_s: float = 60.0,
                 watchdog_every_s: float | None = 60.0, reconcile_every_s: float | None = 300.0,
                 reconcile: Callable[[Any], Awaitable[None] | None] | None = None,
                 retrain: Mapping[str, tuple[float, Job]] | None = None) -> None:
        self.session = session
        self.feed = feed
        self.reconcile_hook = reconcile or reconcile_paper
        self.runs: dict[str, int] = {}
        self.sched = AsyncIOScheduler(timezone="UTC", job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": 30})
        self._add("equity_snapshot", self.equity_snapshot, equity_every_s)
        if feed is not None and watchdog_every_s:
            self._add("watchdog", self.watchdog, watchdog_every_s)
        if reconcile_every_s:
            self._add("reconcile", self.reconcile, reconcile_every_s)
        for name, (every_s, job) in (retrain or {}).items():  # e.g. ``retrain:BTCUSDT``: its own interval
            self._add(name, job, every_s)

    def _add(self, name: str, fn: Job, every_s: float | None) -> None:
        if not every_s or every_s <= 0:
            return

        async def guarded() -> None:
            self.runs[name] = self.runs.get(name, 0) + 1
            try:
                await fn()
            except Exception as exc:  # noqa: BLE001 - a periodic job must never stop the run
                log.error("job_failed", job=name, error=f"{type(exc).__name__}: {exc}")

        self.sched.add_job(guarded, "interval", seconds=every_s, id=name, name=name)

    # -- jobs -------------------------------------------------------------------------------------
    async def equity_snapshot(self) -> None:
        for m in self.session.sessions:
            eng = m.engine
            if len(eng.curve):
                log.info("equity_snapshot", run=eng.run_id, symbol=m.symbol, equity=round(eng.curve.equity[-1], 2),
                         position=eng.curve.position[-1], bars=len(eng.curve), last_bar=eng.last_bar)
        self.session.journal.flush()

    async def watchdog(self) -> None:
        if self.feed is not None:
            await self.feed.check_stale()

    async def reconcile(self) -> None:
        for m in self.session.sessions:  # one market at a time
            res = self.reconcile_hook(m)
            if asyncio.iscoroutine(res):
                await res

    # -- life cycle -------------------------------------------------------------------------------
    async def __aenter__(self) -> RunScheduler:
        self.sched.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sched.shutdown(wait=False)
        await asyncio.sleep(0)


def reconcile_paper(session: Any) -> None:
    """Paper: the simulated wallet must agree with the position the engine last marked (one market)."""
    eng, broker = session.engine, session.broker
    if not len(eng.curve):
        return
    qty = float(broker.position().qty)
    marked = eng.curve.position[-1]
    if abs(qty - marked) > 1e-12:
        log.error("reconcile_mismatch", broker_qty=qty, engine_qty=marked)
        session.journal.record_event(eng.last_bar or 0, "reconcile_mismatch",
                                     {"symbol": session.symbol, "broker_qty": qty, "engine_qty": marked})
