"""Composition root: the only module that knows every part and wires them per mode."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import Engine as DBEngine

from bot.bars import Bars
from bot.candles import CandleData
from bot.config import Config, MarketConfig, config_to_dict
from bot.domain import Candle, Category, Instrument, timeframe_ms
from bot.engine import Engine, wall_clock_ms
from bot.feeds.replay import load_candles
from bot.metrics import compute_metrics
from bot.risk import RiskManager
from bot.timeutil import ms_to_iso, parse_date
from broker.base import Broker
from broker.simulated import SimulatedBroker
from storage.db import open_database
from storage.journal import Journal
from strategies import create_strategy, strategy_class
from strategies.base import Strategy, StrategyContext

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
    cls = strategy_class(cfg.strategy.name)
    return cls.for_backtest(dict(cfg.strategy.params), strategy_context(cfg, checkpoint), data)


def load_data(cfg: Config, path: str, date_from: str | None = None, date_to: str | None = None) -> CandleData:
    return load_candles(
        path, symbol=cfg.market.symbol, timeframe=cfg.market.timeframe,
        bar_ms=timeframe_ms(cfg.market.timeframe),
        start_ms=parse_date(date_from) if date_from else None,
        end_ms=parse_date(date_to) if date_to else None,
    )


@dataclass(slots=True)
class Session:
    """Everything one run holds; built after all inputs are validated."""

    journal: Journal
    engine: Engine
    broker: Broker
    bars: Bars
    started: float


def open_session(cfg: Config, strategy: Strategy, db: DBEngine, bars: Bars, *, mode: str,
                 data_source: str | None, broker: Broker | None = None,
                 clock: Callable[[], int] | None = None, journal: Journal | None = None) -> Session:
    """A new run in the journal, or ``journal`` (a resumed run) when given."""
    journal = journal or Journal.start_run(
        db, mode=mode, strategy=strategy.name, symbol=cfg.market.symbol,
        timeframe=cfg.market.timeframe, category=cfg.market.category, config=config_to_dict(cfg),
        initial_cash=cfg.broker.initial_cash, data_source=data_source, model_id=strategy.model_id,
        batch_size=cfg.storage.batch_size,
    )
    if broker is None:
        broker = SimulatedBroker(instrument_from_config(cfg.market), cfg.broker.initial_cash,
                                 cfg.broker.fee_rate, cfg.broker.slippage_bps)
    engine = Engine(
        run_id=journal.run_id, strategy=strategy, bars=bars, broker=broker, journal=journal,
        risk=RiskManager(cfg.risk, long_only=cfg.market.category == "spot"), fee_rate=cfg.broker.fee_rate,
        bar_ms=timeframe_ms(cfg.market.timeframe), clock=clock,
    )
    return Session(journal, engine, broker, bars, time.perf_counter())


def summarise(cfg: Config, s: Session, mode: str) -> dict[str, Any]:
    eng, broker = s.engine, s.broker
    bar_ms = timeframe_ms(cfg.market.timeframe)
    n = len(eng.equity_curve)
    closes = s.bars.close[-n:] if n else []
    m = compute_metrics(
        equity=eng.equity_curve, positions=eng.position_curve, prices=closes,
        trade_pnls=eng.trade_pnls, fees=eng.fees_paid, initial_cash=cfg.broker.initial_cash, bar_ms=bar_ms,
    )
    pos = broker.position()
    elapsed = time.perf_counter() - s.started
    return {
        "run_id": eng.run_id,
        "mode": mode,
        "strategy": eng.strategy.name,
        "symbol": cfg.market.symbol,
        "timeframe": cfg.market.timeframe,
        "model_id": eng.strategy.model_id,
        "candles": n,
        "start": ms_to_iso(eng.first_bar) if eng.first_bar is not None else None,
        "end": ms_to_iso(eng.last_bar) if eng.last_bar is not None else None,
        **m,
        "realized_pnl": float(pos.realized_pnl),
        "open_position": float(pos.qty),
        "decisions": eng.n_decisions,
        "orders": eng.n_orders,
        "elapsed_s": round(elapsed, 4),
        "candles_per_s": round(n / elapsed, 1) if elapsed > 0 else None,
    }


def _progress(total: int, label: str) -> Progress:
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=True)


def run_backtest(cfg: Config, data: CandleData, strategy: Strategy, db: DBEngine, *,
                 mode: str = "backtest", show_progress: bool = True, history: int = 0,
                 stop_after: int | None = None) -> dict[str, Any]:
    """Replay ``data`` through the live code path with the simulated broker; journal and summarise.

    The first ``history`` bars are shown to the strategy as history but never traded (and are not
    in the equity curve). ``stop_after`` stops after that many traded bars, leaving the run
    marked interrupted (tests use it).
    """
    bars = Bars.preloaded(cfg.market.symbol, cfg.market.timeframe, data.time, data.open, data.high,
                          data.low, data.close, data.volume)
    s = open_session(cfg, strategy, db, bars, mode=mode, data_source=data.source)
    journal, engine = s.journal, s.engine
    if data.gaps.count:
        journal.record_event(int(data.time[0]), "data_gaps", {
            "count": data.gaps.count, "missing_bars": data.gaps.missing_bars,
            "largest_ms": data.gaps.largest_ms, "largest_at": data.gaps.largest_at})
    # A second process for the equity rows pays off only when there are many of them.
    journal.use_background_writer(equity_process=len(data) - history >= 250_000)
    tradable = len(data) - history
    total = tradable if stop_after is None else min(stop_after, tradable)
    try:
        strategy.precompute(data)
        for _ in range(history):
            bars.advance()
        engine.start()
        step = engine.on_bar
        chunk = 50_000
        with _progress(total, "backtest") as progress:
            task = progress.add_task("bars", total=total, visible=show_progress and total > chunk)
            done = 0
            while done < total:
                k = min(chunk, total - done)
                for _ in range(k):
                    bars.n += 1  # reveal the next preloaded bar (bounded by `total` above)
                    step()
                done += k
                progress.update(task, completed=done)
        engine.sync_equity()
        journal.flush()
        journal.close()  # every row written (equity writer drained) before the clock stops
        summary = summarise(cfg, s, mode)
        journal.set_progress(**engine.progress(), strategy_state=_json_state(strategy))
        if total < tradable:
            journal.finish("interrupted", summary, error=f"stopped after {total} bars")
        else:
            journal.finish("completed", summary)
        return summary
    except KeyboardInterrupt:
        _sync_quietly(engine)
        _close_quietly(journal, "interrupted", "interrupted by the user")
        raise
    except BaseException as exc:
        _sync_quietly(engine)
        _close_quietly(journal, "failed", f"{type(exc).__name__}: {exc}")
        raise


def _sync_quietly(engine: Engine) -> None:
    try:
        engine.sync_equity()
    except Exception:  # noqa: BLE001 - keep the original error
        pass


def _json_state(strategy: Strategy) -> dict[str, Any] | None:
    try:
        return strategy.state_dict() or None
    except Exception:  # noqa: BLE001 - state is a convenience, never a reason to fail a run
        return None


def _close_quietly(journal: Journal, status: str, error: str) -> None:
    try:
        journal.finish(status, error=error)
    except Exception as exc:  # noqa: BLE001
        log.error("journal_close_failed", status=status, error=str(exc))


async def run_paper(cfg: Config, strategy: Strategy, db: DBEngine, feed: AsyncIterator[Candle], *,
                    data_source: str, warmup: list[Candle] | None = None,
                    mode: str = "paper", journal: Journal | None = None,
                    prepare: Callable[[Session], None] | None = None, stop_at_ms: int | None = None,
                    services: Callable[[Session, asyncio.Event], AbstractAsyncContextManager[Any]] | None = None,
                    broker: Broker | None = None) -> dict[str, Any]:
    """Paper trading: a live (or replayed) feed, the simulated wallet, wall-clock order times.

    ``journal`` continues an existing run and ``prepare`` then rebuilds its state instead of a
    fresh ``engine.start()`` (see bot/resume.py). ``stop_at_ms`` completes the run before the
    first bar opening at or after it. ``services`` wraps the loop (the scheduler) and may set
    the stop event. ``broker`` replaces the simulated wallet (live trading). SIGINT/SIGTERM
    stop cleanly: the run is marked stopped, the journal flushed.
    """
    bars = Bars(cfg.market.symbol, cfg.market.timeframe)
    for c in warmup or []:
        bars.append(c)
    s = open_session(cfg, strategy, db, bars, mode=mode, data_source=data_source, clock=wall_clock_ms,
                     journal=journal, broker=broker)
    journal, engine = s.journal, s.engine
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    status = "completed"
    candles = _until(feed, stop)
    try:
        if prepare is not None:
            prepare(s)
        else:
            engine.start()
        async with (services(s, stop) if services is not None else contextlib.nullcontext()):
            async for candle in candles:
                if stop_at_ms is not None and candle.open_time >= stop_at_ms:
                    break
                bars.append(candle)
                engine.on_bar()
                engine.sync_equity()
                journal.set_progress(**engine.progress())
                journal.flush()
            else:
                if stop.is_set():
                    status = "stopped"
        summary = summarise(cfg, s, mode)
        journal.finish(status, summary)
        return summary
    except BaseException as exc:
        _close_quietly(journal, "failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        await candles.aclose()
        closer = getattr(feed, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass


async def _until(feed: AsyncIterator[Candle], stop: asyncio.Event) -> AsyncIterator[Candle]:
    it = feed.__aiter__()
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


def open_journal_db(url: str) -> DBEngine:
    return open_database(url)
