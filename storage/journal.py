"""Batched, idempotent journal writes for one run.

Rows are buffered and written in one transaction per flush, so a backtest is not bound by
per-row commits. Every insert ignores rows already present (decision id, client order id,
execution id), so replaying a stream after a restart never double-counts; the equity curve is
written as blocks per flush (storage/equity_codec.py), and a bar marked twice keeps its first mark.
With ``write_ahead`` the engine flushes before each order leaves the process.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, Table, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from bot.domain import EXPLANATION_PENDING, Decision, DecisionStatus, Fill, Order, RunStatus
from bot.errors import StorageError
from storage import equity_codec
from storage import schema as s

RUNNING = RunStatus.RUNNING


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_run_id() -> str:
    return secrets.token_hex(4)


def _insert_ignore(engine: Engine, table: Table) -> Any:
    if engine.dialect.name == "postgresql":
        return pg_insert(table).on_conflict_do_nothing()
    return sqlite_insert(table).on_conflict_do_nothing()


def order_row(order: Order, run_id: str) -> dict[str, Any]:
    return {
        "id": order.client_order_id,
        "run_id": run_id,
        "decision_id": order.decision_id,
        "symbol": order.symbol,
        "side": str(order.side),
        "order_type": str(order.order_type),
        "qty": order.qty,
        "price": order.price,
        "status": str(order.status),
        "exchange_order_id": order.exchange_order_id,
        "filled_qty": order.filled_qty,
        "avg_fill_price": order.avg_fill_price,
        "reject_reason": order.reject_reason,
        "adopted": order.adopted,
        "exit_reason": None if order.exit_reason is None else str(order.exit_reason),
        "created_time": order.created_time,
        "updated_time": order.updated_time,
    }


_ORDER_MUTABLE = ("status", "exchange_order_id", "filled_qty", "avg_fill_price", "reject_reason",
                  "updated_time", "adopted")


class Journal:
    def __init__(self, engine: Engine, run_id: str, batch_size: int = 5000) -> None:
        self.engine = engine
        self.run_id = run_id
        self.batch_size = batch_size
        self._decisions: list[dict[str, Any]] = []
        self._new_orders: dict[str, dict[str, Any]] = {}
        self._order_updates: dict[str, dict[str, Any]] = {}
        self._decision_updates: dict[str, dict[str, Any]] = {}
        self._fills: list[dict[str, Any]] = []
        self._trades: list[dict[str, Any]] = []
        self._equity: list[tuple[str, Any, Any, Any, Any, Any]] = []
        self._equity_rows = 0
        self._events: list[dict[str, Any]] = []
        self._funding: list[dict[str, Any]] = []
        self._run_update: dict[str, Any] = {}
        self._ins = {t.name: _insert_ignore(engine, t) for t in
                     (s.decisions, s.orders, s.fills, s.trades, s.funding)}
        self._plans: dict[tuple[str, tuple[str, ...]], tuple[str, list[Any]]] = {}
        self._writer: ThreadPoolExecutor | None = None
        self._inflight: Future[None] | None = None
        #: Called with each batch right after it committed (bot/observe.py), in the writing thread.
        self.listeners: list[Callable[[Committed], None]] = []

    # -- run life cycle ---------------------------------------------------------------------------
    @classmethod
    def start_run(cls, engine: Engine, *, mode: str, strategy: str, symbol: str, timeframe: str,
                  category: str, config: dict[str, Any], initial_cash: float, data_source: str | None,
                  model_id: str | None = None, batch_size: int = 5000, run_id: str | None = None,
                  start_event: tuple[int, str, dict[str, Any]] | None = None) -> Journal:
        """Open a run; ``start_event`` (time, kind, payload) is written in the same transaction."""
        run_id = run_id or new_run_id()
        now = utcnow()
        try:
            with engine.begin() as conn:
                conn.execute(s.runs.insert().values(
                    id=run_id, mode=mode, status=RUNNING, strategy=strategy, symbol=symbol,
                    timeframe=timeframe, category=category, model_id=model_id, data_source=data_source,
                    config=config, initial_cash=Decimal(repr(float(initial_cash))), started_at=now,
                    updated_at=now, bars=0, host=socket.gethostname(), pid=os.getpid(),
                ))
                if start_event is not None:
                    t, kind, payload = start_event
                    conn.execute(s.events.insert().values(run_id=run_id, time=t, kind=kind, payload=payload))
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot start a run in the journal: {str(exc).splitlines()[0]}") from None
        return cls(engine, run_id, batch_size)

    def reopen(self) -> None:
        """Mark a resumed run as running again."""
        with self.engine.begin() as conn:
            conn.execute(update(s.runs).where(s.runs.c.id == self.run_id)
                         .values(status=RUNNING, finished_at=None, error=None, updated_at=utcnow(),
                                 host=socket.gethostname(), pid=os.getpid()))

    def finish(self, status: RunStatus, summary: dict[str, Any] | None = None, error: str | None = None) -> None:
        """Flush what is buffered and close the run with a final status."""
        status = RunStatus(status)
        assert status.is_final
        values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "updated_at": utcnow()}
        if summary is not None:
            values["summary"] = summary
        if error is not None:
            values["error"] = error[:2000]
        try:
            self.flush()
        finally:
            try:
                self.close()
            finally:  # a writer that failed to close never leaves the run looking alive
                with self.engine.begin() as conn:
                    conn.execute(update(s.runs).where(s.runs.c.id == self.run_id).values(**values))

    # -- buffered records --------------------------------------------------------------------------
    def record_decision(self, decision_id: str, d: Decision, price: float, status: DecisionStatus) -> None:
        """A decision as it stands now; one with a deferred explanation part is written with its
        eager part and ``explanation_pending`` until :meth:`complete_explanation`."""
        explanation = d.explanation or None
        if d.deferred is not None:
            explanation = {**d.explanation, EXPLANATION_PENDING: True}
        self._decisions.append({
            "id": decision_id, "run_id": self.run_id, "bar_time": d.bar_time, "symbol": d.symbol,
            "target": d.target, "confidence": d.confidence, "model_id": d.model_id, "price": price,
            "status": status.value, "explanation": explanation, "error": d.error,
        })

    def update_decision(self, decision_id: str, status: DecisionStatus) -> None:
        """What became of a journaled decision later (one that waited on a working order)."""
        self._change_decision(decision_id, "status", status.value)

    def complete_explanation(self, decision_id: str, explanation: dict[str, Any]) -> None:
        """A decision's completed explanation (its deferred part merged in, or the error that part
        raised): replaces the eager one in the buffered row, or in the row already written (a
        write-ahead flush before the order left), in the next transaction."""
        self._change_decision(decision_id, "explanation", explanation or None)

    def _change_decision(self, decision_id: str, column: str, value: Any) -> None:
        for row in reversed(self._decisions):
            if row["id"] == decision_id:
                row[column] = value
                return
        self._decision_updates.setdefault(decision_id, {})[column] = value

    def record_order(self, order: Order) -> None:
        self._new_orders[order.client_order_id] = order_row(order, self.run_id)

    def update_order(self, order: Order) -> None:
        row = order_row(order, self.run_id)
        pending = self._new_orders.get(order.client_order_id)
        if pending is not None:
            pending.update(row)
        else:
            self._order_updates[order.client_order_id] = {k: row[k] for k in _ORDER_MUTABLE}

    def record_fill(self, fill: Fill) -> None:
        self._fills.append({
            "exec_id": fill.exec_id, "run_id": self.run_id, "order_id": fill.client_order_id,
            "symbol": fill.symbol, "side": str(fill.side), "qty": fill.qty, "price": fill.price,
            "fee": fill.fee, "fee_currency": fill.fee_currency, "is_maker": fill.is_maker, "time": fill.time,
            "reason": fill.reason,
        })

    def record_funding(self, symbol: str, t: int, rate: float, qty: Decimal, price: Decimal,
                       amount: Decimal) -> None:
        """A funding settlement of the market's position (``amount``: cash moved, negative = paid)."""
        self._funding.append({"run_id": self.run_id, "symbol": symbol, "time": t, "rate": rate, "qty": qty,
                              "price": price, "amount": amount})

    def record_trade(self, trade: dict[str, Any]) -> None:
        self._trades.append({"run_id": self.run_id, **trade})

    def record_equity(self, symbol: str, t: int, equity: float, cash: float, position: float,
                      price: float) -> None:
        self._equity.append((symbol, (t,), (equity,), (cash,), (position,), (price,)))

    def record_equity_block(self, symbol: str, times: Any, equity: Any, cash: Any, position: Any,
                            prices: Any) -> None:
        """One market's equity marks for consecutive bars (array-likes of equal length); rows are
        built on write."""
        self._equity.append((symbol, times, equity, cash, position, prices))
        self._equity_rows += len(times)
        if self._equity_rows >= self.batch_size:
            self.flush(background=self._background)

    def record_event(self, t: int, kind: str, payload: dict[str, Any] | None = None) -> None:
        self._events.append({"run_id": self.run_id, "time": t, "kind": kind, "payload": payload})

    def set_progress(self, *, bars: int, first_bar: int | None, last_bar: int | None,
                     strategy_state: dict[str, Any] | None = None) -> None:
        self._run_update = {"bars": bars, "first_bar": first_bar, "last_bar": last_bar}
        if strategy_state is not None:
            self._run_update["strategy_state"] = strategy_state

    @property
    def pending(self) -> int:
        return (len(self._decisions) + len(self._decision_updates) + len(self._new_orders)
                + len(self._order_updates) + len(self._fills)
                + len(self._trades) + len(self._equity) + len(self._events) + len(self._funding))

    def use_background_writer(self, process: bool = False) -> None:
        """Backtests: write batches off the engine's thread while it keeps running.

        At most one batch is in flight and batches are written in order; ``flush()`` without
        ``background`` (and ``finish``) waits for it, so write-ahead semantics are unchanged.
        With ``process`` (large backtests on a file or server database, nobody listening to the
        batches) they are written by a second process instead (:mod:`storage.journal_process`).
        """
        self._background = True
        if (process and self._proc is None and not self.listeners
                and self.engine.url.database not in (None, "", ":memory:")):
            from storage.journal_process import JournalProcess  # noqa: PLC0415

            url = self.engine.url.render_as_string(hide_password=False)
            self._proc = JournalProcess(url, self.run_id, self.batch_size)
        elif self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")

    _proc: Any = None

    _background = False

    def flush(self, background: bool = False) -> None:
        """Write everything buffered in one transaction (all or nothing)."""
        self._wait()
        if not self.pending and not self._run_update:
            return
        batch = Committed(self.run_id, self._decisions, self._decision_updates, list(self._new_orders.values()),
                       self._order_updates, self._fills, self._trades, self._equity, self._events,
                       self._run_update, self._funding)
        self._decisions, self._decision_updates, self._new_orders, self._order_updates = [], {}, {}, {}
        self._fills, self._trades, self._equity, self._events, self._run_update = [], [], [], [], {}
        self._funding = []
        self._equity_rows = 0
        if self._proc is not None:
            self._proc.put(batch)
            if not background:
                self._proc.sync()
        elif background and self._writer is not None:
            self._inflight = self._writer.submit(self.write_batch, batch)
        else:
            self.write_batch(batch)

    def _wait(self) -> None:
        fut = self._inflight
        if fut is None:
            return
        try:
            fut.result()  # re-raises a failed background write here, in the engine's thread
        finally:
            if fut.done():  # a Ctrl-C while waiting leaves the batch in flight for the next wait
                self._inflight = None

    def close(self) -> None:
        try:
            self._wait()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None
            proc, self._proc = self._proc, None
            if proc is not None:
                proc.close()

    def write_batch(self, b: Committed) -> None:
        """One batch as one transaction (this journal's, or a parent's: storage/journal_process.py)."""
        try:
            with self.engine.begin() as conn:
                if b.decisions:
                    self._insert(conn, s.decisions, b.decisions)
                for did, values in b.decision_updates.items():
                    conn.execute(update(s.decisions).where(s.decisions.c.id == did).values(**values))
                if b.new_orders:
                    self._insert(conn, s.orders, b.new_orders)
                for oid, values in b.order_updates.items():
                    conn.execute(update(s.orders).where(s.orders.c.id == oid).values(**values))
                if b.fills:
                    self._insert(conn, s.fills, b.fills)
                if b.trades:
                    self._insert(conn, s.trades, b.trades)
                if b.equity:
                    conn.execute(s.equity_blocks.insert(), [
                        {"run_id": self.run_id, "symbol": sym, "first_time": t0, "last_time": t1, "n": n, "data": data}
                        for sym, t0, t1, n, data in equity_codec.blocks_of(b.equity)])
                if b.events:
                    conn.execute(s.events.insert(), b.events)
                if b.funding:
                    self._insert(conn, s.funding, b.funding)
                conn.execute(update(s.runs).where(s.runs.c.id == self.run_id)
                             .values(updated_at=utcnow(), **b.run_update))
        except SQLAlchemyError as exc:
            raise StorageError(f"journal write failed: {str(exc).splitlines()[0]}") from None
        for listener in self.listeners:
            listener(b)

    def _insert(self, conn: Any, table: Table, rows: list[dict[str, Any]]) -> None:
        """``rows`` into ``table``, known keys ignored (the insert of :func:`_insert_ignore`): one
        driver-level executemany with each column's own bind processor, without building
        SQLAlchemy's per-row parameters (most of a batch's write time). Rows whose keys differ
        take the statement path."""
        keys = tuple(rows[0])
        if any(len(r) != len(keys) or tuple(r) != keys for r in rows):
            conn.execute(self._ins[table.name], rows)
            return
        plan = self._plans.get((table.name, keys))
        if plan is None:
            plan = self._plans[(table.name, keys)] = _insert_plan(self.engine, table, keys)
        sql, procs = plan
        if any(procs):
            data = [tuple([v if p is None else p(v) for v, p in zip(r.values(), procs, strict=True)]) for r in rows]
        else:
            data = [tuple(r.values()) for r in rows]
        conn.exec_driver_sql(sql, data)

    # -- reads needed by a resuming writer --------------------------------------------------------
    def known_exec_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.scalars(select(s.fills.c.exec_id).where(s.fills.c.run_id == self.run_id)))


def _insert_plan(engine: Engine, table: Table, keys: tuple[str, ...]) -> tuple[str, list[Any]]:
    """The driver-level insert-or-ignore of ``keys`` into ``table`` and each column's bind processor."""
    dialect = engine.dialect
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    cols = ", ".join(dialect.identifier_preparer.quote(k) for k in keys)
    sql = (f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({cols}) "
           f"VALUES ({', '.join([mark] * len(keys))}) ON CONFLICT DO NOTHING")
    procs = [table.c[k].type.dialect_impl(dialect).bind_processor(dialect) for k in keys]
    return sql, procs


@dataclass(slots=True)
class Committed:
    """One transaction's rows, as written (row dicts keyed by column; ``equity`` holds blocks of
    (symbol, times, equity, cash, position, price) array-likes)."""

    run_id: str
    decisions: list[dict[str, Any]]
    decision_updates: dict[str, dict[str, Any]]
    new_orders: list[dict[str, Any]]
    order_updates: dict[str, dict[str, Any]]
    fills: list[dict[str, Any]]
    trades: list[dict[str, Any]]
    equity: list[tuple[Any, Any, Any, Any, Any]]
    events: list[dict[str, Any]]
    run_update: dict[str, Any]
    funding: list[dict[str, Any]] = field(default_factory=list)


def rows(result: Iterable[Any]) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in result]
