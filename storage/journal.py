"""Batched, idempotent journal writes for one run.

Rows are buffered and written in one transaction per flush, so a backtest is not bound by
per-row commits. Every insert ignores rows already present (decision id, client order id,
execution id, equity bar), so replaying a stream after a restart never double-counts.
With ``write_ahead`` the engine flushes before each order leaves the process.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, Table, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from bot.domain import Decision, Fill, Order
from bot.errors import StorageError
from storage import schema as s

RUNNING = "running"
FINAL_STATUSES = ("completed", "failed", "interrupted", "stopped")


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
        self._fills: list[dict[str, Any]] = []
        self._trades: list[dict[str, Any]] = []
        self._equity: list[tuple[int, float, float, float, float]] = []
        self._events: list[dict[str, Any]] = []
        self._run_update: dict[str, Any] = {}
        self._ins = {t.name: _insert_ignore(engine, t) for t in
                     (s.decisions, s.orders, s.fills, s.trades, s.equity)}

    # -- run life cycle ---------------------------------------------------------------------------
    @classmethod
    def start_run(cls, engine: Engine, *, mode: str, strategy: str, symbol: str, timeframe: str,
                  category: str, config: dict[str, Any], initial_cash: float, data_source: str | None,
                  model_id: str | None = None, batch_size: int = 5000,
                  run_id: str | None = None) -> Journal:
        run_id = run_id or new_run_id()
        now = utcnow()
        try:
            with engine.begin() as conn:
                conn.execute(s.runs.insert().values(
                    id=run_id, mode=mode, status=RUNNING, strategy=strategy, symbol=symbol,
                    timeframe=timeframe, category=category, model_id=model_id, data_source=data_source,
                    config=config, initial_cash=Decimal(repr(float(initial_cash))), started_at=now,
                    updated_at=now, bars=0,
                ))
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot start a run in the journal: {str(exc).splitlines()[0]}") from None
        return cls(engine, run_id, batch_size)

    def reopen(self) -> None:
        """Mark a resumed run as running again."""
        with self.engine.begin() as conn:
            conn.execute(update(s.runs).where(s.runs.c.id == self.run_id)
                         .values(status=RUNNING, finished_at=None, error=None, updated_at=utcnow()))

    def finish(self, status: str, summary: dict[str, Any] | None = None, error: str | None = None) -> None:
        """Flush what is buffered and close the run with a final status."""
        assert status in FINAL_STATUSES
        try:
            self.flush()
        finally:
            values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "updated_at": utcnow()}
            if summary is not None:
                values["summary"] = summary
            if error is not None:
                values["error"] = error[:2000]
            with self.engine.begin() as conn:
                conn.execute(update(s.runs).where(s.runs.c.id == self.run_id).values(**values))

    # -- buffered records --------------------------------------------------------------------------
    def record_decision(self, decision_id: str, d: Decision, price: float, status: str) -> None:
        self._decisions.append({
            "id": decision_id, "run_id": self.run_id, "bar_time": d.bar_time, "symbol": d.symbol,
            "target": d.target, "confidence": d.confidence, "model_id": d.model_id, "price": price,
            "status": status, "explanation": d.explanation or None, "error": d.error,
        })

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
            "fee": fill.fee, "is_maker": fill.is_maker, "time": fill.time,
        })

    def record_trade(self, trade: dict[str, Any]) -> None:
        self._trades.append({"run_id": self.run_id, **trade})

    def record_equity(self, t: int, equity: float, cash: float, position: float, price: float) -> None:
        eq = self._equity
        eq.append((t, equity, cash, position, price))
        if len(eq) >= self.batch_size:
            self.flush()

    def record_event(self, t: int, kind: str, payload: dict[str, Any] | None = None) -> None:
        self._events.append({"run_id": self.run_id, "time": t, "kind": kind, "payload": payload})

    def set_progress(self, *, bars: int, first_bar: int | None, last_bar: int | None,
                     strategy_state: dict[str, Any] | None = None) -> None:
        self._run_update = {"bars": bars, "first_bar": first_bar, "last_bar": last_bar}
        if strategy_state is not None:
            self._run_update["strategy_state"] = strategy_state

    @property
    def pending(self) -> int:
        return (len(self._decisions) + len(self._new_orders) + len(self._order_updates) + len(self._fills)
                + len(self._trades) + len(self._equity) + len(self._events))

    def flush(self) -> None:
        """Write everything buffered in one transaction (all or nothing)."""
        if not self.pending and not self._run_update:
            return
        rid = self.run_id
        try:
            with self.engine.begin() as conn:
                if self._decisions:
                    conn.execute(self._ins["decisions"], self._decisions)
                if self._new_orders:
                    conn.execute(self._ins["orders"], list(self._new_orders.values()))
                for oid, values in self._order_updates.items():
                    conn.execute(update(s.orders).where(s.orders.c.id == oid).values(**values))
                if self._fills:
                    conn.execute(self._ins["fills"], self._fills)
                if self._trades:
                    conn.execute(self._ins["trades"], self._trades)
                if self._equity:
                    conn.execute(self._ins["equity"], [
                        {"run_id": rid, "time": t, "equity": e, "cash": c, "position": q, "price": p}
                        for (t, e, c, q, p) in self._equity
                    ])
                if self._events:
                    conn.execute(s.events.insert(), self._events)
                conn.execute(update(s.runs).where(s.runs.c.id == rid)
                             .values(updated_at=utcnow(), **self._run_update))
        except SQLAlchemyError as exc:
            raise StorageError(f"journal write failed: {str(exc).splitlines()[0]}") from None
        self._decisions.clear()
        self._new_orders.clear()
        self._order_updates.clear()
        self._fills.clear()
        self._trades.clear()
        self._equity.clear()
        self._events.clear()
        self._run_update = {}

    # -- reads needed by a resuming writer --------------------------------------------------------
    def known_exec_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.scalars(select(s.fills.c.exec_id).where(s.fills.c.run_id == self.run_id)))


def rows(result: Iterable[Any]) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in result]
