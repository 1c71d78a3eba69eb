"""One runner for every mode: start or resume, reconciliation, the bar loop, signals, shutdown.

``bot/app.py`` chooses the parts per mode (a bar source, one broker per market over one wallet,
a clock) and a :class:`RunPlan`; this module does the rest the same way for a backtest, paper
and live, for one market or several (one :class:`MarketSession` and one engine per market, one
journal run, one event loop):

1. open the run in the journal (new), or continue a journaled one (resume);
2. start the engine, or restore it from the run's snapshot (one ``engine.restore``);
3. when orders leave the process (a venue broker), reconcile journal and venue before any bar:
   nothing trades until they agree;
4. play the source's bars through ``engine.on_bar``; paper and live commit every bar as one
   transaction (a kill loses at most the bar in progress), backtests commit in batches;
5. stop on the source's end, SIGINT/SIGTERM (paper/live) or ``--to``, let orders in flight
   resolve, and close the run with its summary: ``completed``, ``stopped``, ``interrupted`` or
   ``failed`` (a crash or Ctrl-C never leaves a run looking complete).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import structlog
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import Engine as DBEngine

from bot import heap, signals
from bot import reconcile as rec
from bot.bars import Bars
from bot.config import Config, MarketConfig, config_to_dict
from bot.domain import RunStatus, timeframe_ms
from bot.engine import Engine
from bot.observe import Observers, RunObserver
from bot.portfolio import Marks
from bot.risk import PortfolioRisk, RiskManager
from bot.run_summary import run_summary
from bot.sources import BarSource, PreloadedSource, until_stopped
from broker.base import Broker, MarketDataListener
from storage.journal import Journal
from storage.records import RunSnapshot
from storage.retention import apply_retention
from strategies.base import Strategy

log = structlog.get_logger("bot.runner")

#: Paper and live: how long a bar's deferred explanations wait for its orders' creates to be
#: answered by the venue (a create that takes longer goes on alone; the explanation runs).
SEND_WAIT_S = 1.0

@dataclass
class MarketSession:
    """One market of a run: its config, strategy, bar buffer and broker (over the run's one
    wallet); the runner adds its engine and the run's journal. Reconciliation and the scheduler
    take a session (``journal``, ``engine``, ``broker``)."""

    cfg: MarketConfig
    strategy: Strategy
    bars: Bars
    broker: Broker
    #: Sees every bar's prices before the engine marks it (the simulated fill engine).
    market: MarketDataListener | None = None
    #: Backtests: bars shown to the strategy as history, never traded.
    history: int = 0
    precompute: Any = None
    #: Venue position of this market when the run began (reconciliation).
    start_qty: Decimal = Decimal(0)
    #: The bars it trades that the checkpoint was fitted on (bot/app/guards.py); None: out of sample.
    in_sample: dict[str, Any] | None = None
    engine: Engine | None = None
    journal: Journal | None = None

    @property
    def symbol(self) -> str:
        return self.cfg.symbol


@dataclass
class Resume:
    """A journaled run to continue: its journal, how its buffers were built, and its snapshot."""

    journal: Journal
    snapshot: RunSnapshot
    #: Bars of warm-up each market's buffer started with (by symbol).
    warmup_bars: dict[str, int]
    first_open: int


@dataclass
class RunPlan:
    """What differs between modes, as data. Built by bot/app.py."""

    mode: str
    data_source: str
    #: Paper and live: every bar is one transaction, signals stop cleanly, a scheduler runs.
    durable: bool = False
    resume: Resume | None = None
    #: New resumable runs journal this as ``<mode>_start`` (what a resume needs); None: not resumable.
    start_payload: dict[str, Any] | None = None
    start_time: int = 0
    #: Journaled before the first bar (data gaps found while loading, feed events so far).
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    #: The run's first bar (reconciliation).
    run_start_ms: int = 0
    #: Wraps the bar loop (the scheduler); may set the stop event.
    services: Callable[[Runner, asyncio.Event], AbstractAsyncContextManager[Any]] | None = None
    drain_s: float = 10.0
    show_progress: bool = False
    #: Backtests: write the journal from a second process (storage/journal_process.py; pays off
    #: from some 50k bars, below which its start-up costs more than it saves).
    writer_process: bool = False
    #: Paper and live: metrics, alerts (bot/observe.py); told of committed rows and each bar.
    observers: list[RunObserver] = field(default_factory=list)
    #: Called before each bar is played, after the previous bar's transaction: the only moment
    #: a strategy may change (a retrained model swapped in, bot/retrain.py).
    between_bars: list[Callable[[], None]] = field(default_factory=list)


class EventBuffer:
    """Feed events that arrive before the run exists are kept, then journaled with it."""

    def __init__(self) -> None:
        self.runner: Runner | None = None
        self.pending: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        if self.runner is None or self.runner.journal is None:
            self.pending.append((kind, payload))
            return
        self.runner.journal.record_event(self.runner.last_bar or 0, kind, payload)

    def attach(self, runner: Runner) -> None:
        self.runner = runner
        pending, self.pending = self.pending, []
        for kind, payload in pending:
            self(kind, payload)


class Runner:
    """Runs one run, in any mode, over one or more markets; ``await runner.run()`` -> summary."""

    def __init__(self, cfg: Config, sessions: list[MarketSession], db: DBEngine, *, source: BarSource,
                 plan: RunPlan, clock: Callable[[], int] | None = None, events: EventBuffer | None = None) -> None:
        if [m.symbol for m in sessions] != cfg.symbols:
            raise ValueError("one session per configured market, in config order")
        self.cfg, self.sessions, self.db = cfg, sessions, db
        self.source, self.plan, self.clock, self.events = source, plan, clock, events
        self.journal: Journal | None = None
        self.started = time.perf_counter()
        self.observers = Observers(plan.observers)

    @property
    def engines(self) -> list[Engine]:
        return [m.engine for m in self.sessions if m.engine is not None]

    @property
    def last_bar(self) -> int | None:
        bars = [e.last_bar for e in self.engines if e.last_bar is not None]
        return max(bars) if bars else None

    @property
    def write_ahead(self) -> bool:
        return any(m.broker.write_ahead for m in self.sessions)

    # -- the run -----------------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        plan = self.plan
        stop = asyncio.Event()
        # Before the run exists: a stop during start-up ends it ``stopped`` (resumable), never
        # half-opened. Backtests get Ctrl-C's KeyboardInterrupt (SIGTERM too: bot/signals.py).
        handlers = signals.StopOnSignals(stop) if plan.durable else None
        status = RunStatus.COMPLETED
        try:
            if handlers is not None:  # a start-up already cancelled (SIGINT/SIGTERM) ends here, before any write
                await asyncio.sleep(0)
            journal = self.journal = plan.resume.journal if plan.resume else self._new_run()
            if self.observers:
                journal.listeners.append(self.observers.committed)
                self.observers.started(self)
            signals.point("run_opened")
            self._engines(journal)
            self._begin(journal)
            signals.point("run_begun")
            for m in self.sessions:
                if m.broker.write_ahead:
                    # Nothing trades until the journal and the venue tell the same story.
                    await rec.reconcile(m, start_qty=m.start_qty, run_start_ms=plan.run_start_ms)
            signals.point("reconciled")
            if plan.resume is not None:
                self._record_resume(journal)
            services = plan.services(self, stop) if plan.services else contextlib.nullcontext()
            async with services:
                with heap.startup_heap_frozen():
                    looped = await self._loop(stop)
                if not looped:
                    status = RunStatus.STOPPED
                for m in self.sessions:
                    if not await m.broker.drain(plan.drain_s):
                        log.warning("stop_orders_working", symbol=m.symbol,
                                    orders=[o.client_order_id for o in m.broker.open_orders()])
            if self.source.stopped_early:
                status = RunStatus.INTERRUPTED
            return self._finish(status)
        except (KeyboardInterrupt, asyncio.CancelledError):
            self._close_quietly(RunStatus.INTERRUPTED, "interrupted by the user")
            raise
        except BaseException as exc:
            self._close_quietly(RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if handlers is not None:
                handlers.remove()
            await self.source.aclose()

    def _new_run(self) -> Journal:
        cfg, plan = self.cfg, self.plan
        names = [m.strategy.name for m in self.sessions]
        ids = [m.strategy.model_id for m in self.sessions if m.strategy.model_id]
        # A resumable run and its start event (what a resume needs) are one transaction: a kill
        # at any point of start-up leaves either nothing or a run that ``--resume`` continues.
        start = (plan.start_time, f"{plan.mode}_start", plan.start_payload) if plan.start_payload is not None else None
        # storage.retention_days: first delete the runs last written more than that many days ago.
        apply_retention(self.db, cfg.storage.retention_days)
        return Journal.start_run(
            self.db, mode=plan.mode, strategy=",".join(names), symbol=",".join(cfg.symbols),
            timeframe=_joined(m.timeframe for m in cfg.markets), category=_joined(m.category for m in cfg.markets),
            config=config_to_dict(cfg), initial_cash=cfg.broker.initial_cash, data_source=plan.data_source,
            model_id=(",".join(ids)[:64] or None), batch_size=cfg.storage.batch_size, start_event=start,
        )

    def _engines(self, journal: Journal) -> None:
        cfg = self.cfg
        portfolio = PortfolioRisk(cfg.risk)
        marks = Marks(len(self.sessions)) if len(self.sessions) > 1 else None
        for slot, m in enumerate(self.sessions):
            m.journal = journal
            m.engine = Engine(
                run_id=journal.run_id, strategy=m.strategy, bars=m.bars, broker=m.broker, journal=journal,
                risk=RiskManager(cfg.risk.for_market(m.cfg), long_only=m.cfg.category == "spot", portfolio=portfolio),
                fee_rate=cfg.broker.fee_rate, bar_ms=timeframe_ms(m.cfg.timeframe), clock=self.clock,
                market=m.market, allocation=m.cfg.allocation or 1.0, marks=marks, slot=slot,
                log_orders=self.plan.durable, defer_explanations=self.plan.durable, exits=m.cfg.exits,
            )

    def _begin(self, journal: Journal) -> None:
        plan = self.plan
        for t, kind, payload in plan.events:
            journal.record_event(t, kind, payload)
        if plan.resume is not None:
            self._restore(plan.resume)
            journal.reopen()
        else:
            if not plan.durable:
                journal.use_background_writer(process=plan.writer_process)
            for m in self.sessions:
                if m.precompute is not None:
                    m.strategy.precompute(m.precompute)
                for _ in range(m.history):
                    m.bars.advance()
                assert m.engine is not None
                m.engine.start()
        if self.events is not None:
            self.events.attach(self)
        journal.flush(background=True)  # a backtest's writer takes it; paper and live write it now

    def _restore(self, r: Resume) -> None:
        """Every market's books and engine from the run's snapshot (one ``restore`` each)."""
        snap = r.snapshot
        for m in self.sessions:
            m.broker.restore(snap.initial_cash, snap.fills, snap.orders)
        # The wallet the brokers share (simulated: rebuilt from the fills) and what funding moved.
        self.sessions[0].broker.restore_funding(sum((a for _, _, a in snap.funding), Decimal(0)))
        for m in self.sessions:
            assert m.engine is not None and m.journal is not None
            mismatches = m.engine.restore(snap.for_symbol(m.symbol), r.warmup_bars.get(m.symbol, 0))
            if mismatches:
                log.warning("resume_strategy_mismatch", run=m.journal.run_id, symbol=m.symbol, bars=mismatches)
                m.journal.record_event(snap.last_bar or r.first_open, "resume_mismatch",
                                       {"symbol": m.symbol, "bars": mismatches})

    def _record_resume(self, journal: Journal) -> None:
        r = self.plan.resume
        assert r is not None
        first = self.sessions[0].broker
        positions = {m.symbol: format(m.broker.position().qty, "f") for m in self.sessions}
        payload: dict[str, Any] = {"last_bar": r.snapshot.last_bar, "fills": len(r.snapshot.fills),
                                   "working_orders": len(r.snapshot.working),
                                   "cash": format(first.balance(0.0).cash, "f")}
        if len(positions) == 1:
            payload["position"] = next(iter(positions.values()))
        else:
            payload["positions"] = positions
        journal.record_event(r.snapshot.last_bar or r.first_open, f"{self.plan.mode}_resume", payload)
        journal.flush()
        log.info("run_resumed", run=journal.run_id, mode=self.plan.mode, last_bar=r.snapshot.last_bar,
                 fills=len(r.snapshot.fills), working_orders=len(r.snapshot.working))

    async def _loop(self, stop: asyncio.Event) -> bool:
        """Play every bar; False when a signal stopped the run first."""
        journal = self.journal
        assert journal is not None
        engines = self.engines
        books = [m.bars for m in self.sessions]
        plan = self.plan
        durable = plan.durable
        total = getattr(self.source, "total", 0)
        visible = self.plan.show_progress and total > PreloadedSource.CHUNK
        with Progress(TextColumn("backtest"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      transient=True, disable=not visible) as progress:
            task = progress.add_task("bars", total=total)
            # Backtests never wait (run_to_end), so only paper and live race the stop event.
            batches = until_stopped(self.source.batches(books), stop) if durable else self.source.batches(books)
            try:
                async for play in batches:
                    for hook in plan.between_bars:
                        hook()
                    began = time.perf_counter()
                    play(engines)
                    if durable:  # one transaction per bar: a kill loses at most the bar in progress
                        took = time.perf_counter() - began  # to the orders sent: the decision latency
                        await self._explain(engines)
                        for e in engines:
                            e.sync_equity()
                        journal.set_progress(**self._progress())
                        journal.flush()
                        self.observers.bar_done(self, took)
                    else:
                        progress.update(task, completed=getattr(self.source, "done", 0))
            finally:
                await batches.aclose()  # type: ignore[attr-defined]  # both are async generators
        return not stop.is_set()

    async def _explain(self, engines: list[Engine]) -> None:
        """The bar's deferred explanations, once its orders have left: a venue broker's creates
        are answered first (for at most ``SEND_WAIT_S``), so an explanation never holds an order
        back (nor takes the interpreter from the thread sending it). Then journaled with the
        decisions, in the bar's transaction that follows."""
        if not any(e.explanations for e in engines):
            return
        for m in self.sessions:
            await m.broker.orders_sent(SEND_WAIT_S)
        for e in engines:
            e.explain_pending()

    def _progress(self) -> dict[str, Any]:
        engines = self.engines
        if len(engines) == 1:
            return engines[0].progress()
        firsts = [e.first_bar for e in engines if e.first_bar is not None]
        return {"bars": sum(len(e.curve) for e in engines), "first_bar": min(firsts) if firsts else None,
                "last_bar": self.last_bar}

    def _finish(self, status: RunStatus) -> dict[str, Any]:
        journal = self.journal
        assert journal is not None
        for e in self.engines:
            e.explain_pending()  # a stop between a bar's orders and its explanations
            e.sync_equity()
        journal.flush()
        journal.close()  # every row written (background writers drained) before the clock stops
        summary = self.summary()
        state = _json_state(self.sessions[0].strategy) if len(self.sessions) == 1 else {
            m.symbol: _json_state(m.strategy) for m in self.sessions}
        journal.set_progress(**self._progress(), strategy_state=state)
        journal.finish(status, summary, error=self.source.stopped_early)
        self.observers.finished(self, str(status))
        return summary

    def _close_quietly(self, status: RunStatus, error: str) -> None:
        for e in self.engines:
            with contextlib.suppress(Exception):
                e.explain_pending()
            with contextlib.suppress(Exception):
                e.sync_equity()
        if self.journal is None:
            return
        try:
            if self.engines:
                self.journal.set_progress(**self._progress())  # the bars whose rows the journal holds
            self.journal.finish(status, error=error)
        except Exception as exc:  # noqa: BLE001 - keep the original error
            log.error("journal_close_failed", status=str(status), error=str(exc))
        self.observers.finished(self, str(status))

    # -- results -----------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.started
        out = run_summary(self.cfg, self.sessions, self.plan.mode)
        n = out["candles"]
        out.update({"elapsed_s": round(elapsed, 4),
                    "candles_per_s": round(n / elapsed, 1) if elapsed > 0 else None})
        return out


def _joined(values: Any) -> str:
    return ",".join(dict.fromkeys(values))


T = TypeVar("T")


def run_to_end(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never waits on I/O (a backtest) to its end, without an event loop.

    A backtest's source, broker and journal never suspend, so its run completes in one step;
    this works inside a running loop too (tests call backtests from async tests).
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a backtest waited on I/O; it must run without an event loop")


def _json_state(strategy: Strategy) -> dict[str, Any] | None:
    try:
        return strategy.state_dict() or None
    except Exception:  # noqa: BLE001 - state is a convenience, never a reason to fail a run
        return None
