"""One runner for every mode: start or resume, reconciliation, the bar loop, signals, shutdown.

``bot/app.py`` chooses the parts per mode (a bar source, a broker, a clock) and a
:class:`RunPlan`; this module does the rest the same way for a backtest, paper and live:

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
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import structlog
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import Engine as DBEngine

from bot import reconcile as rec
from bot.bars import Bars
from bot.config import Config, config_to_dict
from bot.domain import Candle, RunStatus, timeframe_ms
from bot.engine import Engine
from bot.metrics import compute_metrics
from bot.risk import RiskManager
from bot.timeutil import ms_to_iso
from broker.base import Broker, MarketDataListener
from storage.journal import Journal
from storage.records import RunSnapshot
from strategies.base import Strategy

log = structlog.get_logger("bot.runner")

#: One bar's (or one batch's) playback: reveals each bar into the buffer and calls ``step``.
Batch = Callable[[Callable[[], None]], None]


class BarSource(Protocol):
    """Where closed bars come from: a preloaded file, a replayed one, a venue's stream."""

    #: Why the source ended before its data did (a test's ``stop_after``), or None.
    stopped_early: str | None

    def batches(self, bars: Bars) -> AsyncIterator[Batch]: ...

    async def aclose(self) -> None: ...


class PreloadedSource:
    """Backtests: the whole file is in ``bars`` already; batches reveal it bar by bar."""

    CHUNK = 50_000

    def __init__(self, total: int, tradable: int) -> None:
        self.total = total
        self.stopped_early = f"stopped after {total} bars" if total < tradable else None
        self.done = 0

    async def batches(self, bars: Bars) -> AsyncIterator[Batch]:
        while self.done < self.total:
            k = min(self.CHUNK, self.total - self.done)

            def play(step: Callable[[], None], k: int = k) -> None:
                for _ in range(k):
                    bars.n += 1  # reveal the next preloaded bar (bounded by `total`)
                    step()

            yield play
            self.done += k

    async def aclose(self) -> None:
        return None


class StreamSource:
    """Paper and live: closed candles as they arrive (a venue's stream or a paced replay)."""

    def __init__(self, candles: AsyncIterator[Candle], stop_at_ms: int | None = None,
                 close: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        self.candles = candles
        self.stop_at_ms = stop_at_ms
        self.stopped_early: str | None = None
        self._close = close

    async def batches(self, bars: Bars) -> AsyncIterator[Batch]:
        async for c in self.candles:
            if self.stop_at_ms is not None and c.open_time >= self.stop_at_ms:
                return
            bars.append(c)
            yield _one

    async def aclose(self) -> None:
        closer = getattr(self.candles, "aclose", None)
        with contextlib.suppress(Exception):
            if closer is not None:
                await closer()
            if self._close is not None:
                await self._close()


def _one(step: Callable[[], None]) -> None:
    step()


@dataclass
class Resume:
    """A journaled run to continue: its journal, how its buffer was built, and its snapshot."""

    journal: Journal
    snapshot: RunSnapshot
    warmup_bars: int
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
    #: Backtests: bars shown to the strategy as history, never traded.
    history: int = 0
    precompute: Any = None
    #: Venue position when the run began and the run's first bar (reconciliation).
    start_qty: Decimal = Decimal(0)
    run_start_ms: int = 0
    #: Wraps the bar loop (the scheduler); may set the stop event.
    services: Callable[[Runner, asyncio.Event], AbstractAsyncContextManager[Any]] | None = None
    drain_s: float = 10.0
    show_progress: bool = False
    #: Backtests: write the equity rows from a second process (pays off for very many bars).
    equity_process: bool = False


class EventBuffer:
    """Feed events that arrive before the run exists are kept, then journaled with it."""

    def __init__(self) -> None:
        self.runner: Runner | None = None
        self.pending: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        if self.runner is None or self.runner.engine is None:
            self.pending.append((kind, payload))
            return
        self.runner.engine.on_venue_event(kind, payload)

    def attach(self, runner: Runner) -> None:
        self.runner = runner
        pending, self.pending = self.pending, []
        for kind, payload in pending:
            self(kind, payload)


class Runner:
    """Runs one run, in any mode, from its parts and plan; ``await runner.run()`` -> summary."""

    def __init__(self, cfg: Config, strategy: Strategy, db: DBEngine, *, bars: Bars, source: BarSource,
                 broker: Broker, plan: RunPlan, clock: Callable[[], int] | None = None,
                 market: MarketDataListener | None = None, events: EventBuffer | None = None) -> None:
        self.cfg, self.strategy, self.db = cfg, strategy, db
        self.bars, self.source, self.broker, self.plan = bars, source, broker, plan
        self.clock, self.market, self.events = clock, market, events
        self.journal: Journal | None = None
        self.engine: Engine | None = None
        self.started = time.perf_counter()

    # -- the run -----------------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        plan = self.plan
        journal = self.journal = plan.resume.journal if plan.resume else self._new_run()
        engine = self.engine = self._engine(journal)
        stop = asyncio.Event()
        signals = _Signals(stop) if plan.durable else None
        status = RunStatus.COMPLETED
        try:
            self._begin(journal, engine)
            if self.broker.write_ahead:
                # Nothing trades until the journal and the venue tell the same story.
                await rec.reconcile(self, start_qty=plan.start_qty, run_start_ms=plan.run_start_ms)
            if plan.resume is not None:
                self._record_resume(journal)
            services = plan.services(self, stop) if plan.services else contextlib.nullcontext()
            async with services:
                if not await self._loop(stop):
                    status = RunStatus.STOPPED
                if not await self.broker.drain(plan.drain_s):
                    log.warning("stop_orders_working", orders=[o.client_order_id for o in self.broker.open_orders()])
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
            if signals is not None:
                signals.remove()
            await self.source.aclose()

    def _new_run(self) -> Journal:
        cfg, plan = self.cfg, self.plan
        return Journal.start_run(
            self.db, mode=plan.mode, strategy=self.strategy.name, symbol=cfg.market.symbol,
            timeframe=cfg.market.timeframe, category=cfg.market.category, config=config_to_dict(cfg),
            initial_cash=cfg.broker.initial_cash, data_source=plan.data_source, model_id=self.strategy.model_id,
            batch_size=cfg.storage.batch_size,
        )

    def _engine(self, journal: Journal) -> Engine:
        cfg = self.cfg
        return Engine(
            run_id=journal.run_id, strategy=self.strategy, bars=self.bars, broker=self.broker, journal=journal,
            risk=RiskManager(cfg.risk, long_only=cfg.market.category == "spot"), fee_rate=cfg.broker.fee_rate,
            bar_ms=timeframe_ms(cfg.market.timeframe), clock=self.clock, market=self.market,
        )

    def _begin(self, journal: Journal, engine: Engine) -> None:
        plan = self.plan
        for t, kind, payload in plan.events:
            journal.record_event(t, kind, payload)
        if plan.resume is not None:
            r = plan.resume
            self.broker.restore(r.snapshot.initial_cash, r.snapshot.fills, r.snapshot.orders)
            mismatches = engine.restore(r.snapshot, r.warmup_bars)
            if mismatches:
                log.warning("resume_strategy_mismatch", run=journal.run_id, bars=mismatches)
                journal.record_event(r.snapshot.last_bar or r.first_open, "resume_mismatch", {"bars": mismatches})
            journal.reopen()
        else:
            if not plan.durable:
                journal.use_background_writer(equity_process=plan.equity_process)
            if plan.precompute is not None:
                self.strategy.precompute(plan.precompute)
            for _ in range(plan.history):
                self.bars.advance()
            engine.start()
            if plan.start_payload is not None:
                journal.record_event(plan.start_time, f"{plan.mode}_start", plan.start_payload)
        if self.events is not None:
            self.events.attach(self)
        journal.flush()  # a resume needs the start event even if the process dies before the first bar

    def _record_resume(self, journal: Journal) -> None:
        r = self.plan.resume
        assert r is not None
        pos = self.broker.position()
        journal.record_event(r.snapshot.last_bar or r.first_open, f"{self.plan.mode}_resume", {
            "last_bar": r.snapshot.last_bar, "fills": len(r.snapshot.fills), "working_orders": len(r.snapshot.working),
            "cash": format(self.broker.balance(0.0).cash, "f"), "position": format(pos.qty, "f")})
        journal.flush()
        log.info("run_resumed", run=journal.run_id, mode=self.plan.mode, last_bar=r.snapshot.last_bar,
                 fills=len(r.snapshot.fills), working_orders=len(r.snapshot.working))

    async def _loop(self, stop: asyncio.Event) -> bool:
        """Play every bar; False when a signal stopped the run first."""
        engine, journal = self.engine, self.journal
        assert engine is not None and journal is not None
        step, durable = engine.on_bar, self.plan.durable
        total = getattr(self.source, "total", 0)
        visible = self.plan.show_progress and total > PreloadedSource.CHUNK
        with Progress(TextColumn("backtest"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      transient=True, disable=not visible) as progress:
            task = progress.add_task("bars", total=total)
            # Backtests never wait (run_to_end), so only paper and live race the stop event.
            batches = _until(self.source.batches(self.bars), stop) if durable else self.source.batches(self.bars)
            try:
                async for play in batches:
                    play(step)
                    if durable:  # one transaction per bar: a kill loses at most the bar in progress
                        engine.sync_equity()
                        journal.set_progress(**engine.progress())
                        journal.flush()
                    else:
                        progress.update(task, completed=getattr(self.source, "done", 0))
            finally:
                await batches.aclose()  # type: ignore[attr-defined]  # both are async generators
        return not stop.is_set()

    def _finish(self, status: RunStatus) -> dict[str, Any]:
        engine, journal = self.engine, self.journal
        assert engine is not None and journal is not None
        engine.sync_equity()
        journal.flush()
        journal.close()  # every row written (background writers drained) before the clock stops
        summary = self.summary()
        journal.set_progress(**engine.progress(), strategy_state=_json_state(self.strategy))
        journal.finish(status, summary, error=self.source.stopped_early)
        return summary

    def _close_quietly(self, status: RunStatus, error: str) -> None:
        if self.engine is not None:
            with contextlib.suppress(Exception):
                self.engine.sync_equity()
        if self.journal is None:
            return
        try:
            self.journal.finish(status, error=error)
        except Exception as exc:  # noqa: BLE001 - keep the original error
            log.error("journal_close_failed", status=str(status), error=str(exc))

    # -- results -----------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        cfg, eng = self.cfg, self.engine
        assert eng is not None
        n = len(eng.equity_curve)
        closes = self.bars.close[-n:] if n else []
        m = compute_metrics(
            equity=eng.equity_curve, positions=eng.position_curve, prices=closes, trade_pnls=eng.trade_pnls,
            fees=eng.fees_paid, initial_cash=cfg.broker.initial_cash, bar_ms=timeframe_ms(cfg.market.timeframe),
        )
        pos = self.broker.position()
        elapsed = time.perf_counter() - self.started
        return {
            "run_id": eng.run_id, "mode": self.plan.mode, "strategy": eng.strategy.name,
            "symbol": cfg.market.symbol, "timeframe": cfg.market.timeframe, "model_id": eng.strategy.model_id,
            "candles": n,
            "start": ms_to_iso(eng.first_bar) if eng.first_bar is not None else None,
            "end": ms_to_iso(eng.last_bar) if eng.last_bar is not None else None,
            **m,
            "realized_pnl": float(pos.realized_pnl), "open_position": float(pos.qty),
            "decisions": eng.n_decisions, "orders": eng.n_orders,
            "elapsed_s": round(elapsed, 4), "candles_per_s": round(n / elapsed, 1) if elapsed > 0 else None,
        }


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


class _Signals:
    """SIGINT/SIGTERM set the stop event: the bar loop ends and the run is marked stopped."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.loop = asyncio.get_running_loop()
        self.installed: list[int] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.loop.add_signal_handler(sig, stop.set)
                self.installed.append(sig)
            except (NotImplementedError, RuntimeError):
                pass

    def remove(self) -> None:
        for sig in self.installed:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self.loop.remove_signal_handler(sig)


async def _until(batches: AsyncIterator[Batch], stop: asyncio.Event) -> AsyncIterator[Batch]:
    """The source's batches until ``stop`` is set (a stop also interrupts a wait for the next bar)."""
    it = batches.__aiter__()
    try:
        while not stop.is_set():
            nxt = asyncio.ensure_future(it.__anext__())
            waiter = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({nxt, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if nxt in done:
                waiter.cancel()
                try:
                    yield nxt.result()
                except StopAsyncIteration:
                    return
            else:
                nxt.cancel()
                return
    finally:
        closer = getattr(it, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()


def _json_state(strategy: Strategy) -> dict[str, Any] | None:
    try:
        return strategy.state_dict() or None
    except Exception:  # noqa: BLE001 - state is a convenience, never a reason to fail a run
        return None
