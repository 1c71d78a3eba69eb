"""Read side of the journal: what ``bot journal ...`` and reports ask."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, desc, func, or_, select

from bot.domain import TIMEFRAME_MS
from bot.errors import StorageError
from storage import schema as s


def _rows(result: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in result]


def resolve_run(engine: Engine, run: str | None, mode: str | None = None) -> dict[str, Any]:
    """A run by id, or ``latest`` (optionally of one mode). Raises StorageError if none."""
    q = select(s.runs)
    if run in (None, "", "latest"):
        if mode:
            q = q.where(s.runs.c.mode == mode)
        q = q.order_by(desc(s.runs.c.started_at)).limit(1)
    else:
        q = q.where(s.runs.c.id == run)
    with engine.connect() as conn:
        row = conn.execute(q).first()
    if row is None:
        what = f"run {run!r}" if run not in (None, "", "latest") else "any run"
        raise StorageError(f"no {what} in the journal" + (f" for mode {mode}" if mode else ""))
    return dict(row._mapping)


def list_runs(engine: Engine, limit: int = 50) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return _rows(conn.execute(select(s.runs).order_by(desc(s.runs.c.started_at)).limit(limit)))


def run_symbols(run: dict[str, Any]) -> list[str]:
    """The markets a run traded, in config order (``runs.symbol`` is comma-separated)."""
    return [x for x in str(run.get("symbol") or "").split(",") if x]


def _of(q: Any, table: Any, symbol: str | None) -> Any:
    return q.where(table.c.symbol == symbol) if symbol else q


def decisions(engine: Engine, run_id: str, limit: int | None = None,
              symbol: str | None = None) -> list[dict[str, Any]]:
    q = _of(select(s.decisions).where(s.decisions.c.run_id == run_id), s.decisions, symbol)
    q = q.order_by(s.decisions.c.bar_time, s.decisions.c.id)
    if limit:
        q = q.limit(limit)
    with engine.connect() as conn:
        return _rows(conn.execute(q))


def orders(engine: Engine, run_id: str, symbol: str | None = None) -> list[dict[str, Any]]:
    q = _of(select(s.orders).where(s.orders.c.run_id == run_id), s.orders, symbol)
    q = q.order_by(s.orders.c.created_time, s.orders.c.id)
    with engine.connect() as conn:
        return _rows(conn.execute(q))


def fills(engine: Engine, run_id: str, symbol: str | None = None) -> list[dict[str, Any]]:
    q = _of(select(s.fills).where(s.fills.c.run_id == run_id), s.fills, symbol)
    q = q.order_by(s.fills.c.time, s.fills.c.exec_id)
    with engine.connect() as conn:
        return _rows(conn.execute(q))


def trades(engine: Engine, run_id: str, symbol: str | None = None) -> list[dict[str, Any]]:
    q = _of(select(s.trades).where(s.trades.c.run_id == run_id), s.trades, symbol)
    q = q.order_by(s.trades.c.exit_time, s.trades.c.id)
    with engine.connect() as conn:
        return _rows(conn.execute(q))


def equity(engine: Engine, run_id: str, symbol: str | None = None) -> list[dict[str, Any]]:
    """One market's equity rows, or (no ``symbol``) the portfolio curve.

    Every row's ``equity`` and ``cash`` are the portfolio's at that market's bar close, so the
    portfolio curve of a multi-market run is every market's rows in order of their bars' close
    (the markets' config order when they close together), one per close: the mark of the market
    processed last. Its ``position`` and ``price`` are that market's; per-market exposure comes
    from ``symbol=``.
    """
    q = _of(select(s.equity).where(s.equity.c.run_id == run_id), s.equity, symbol).order_by(s.equity.c.time)
    with engine.connect() as conn:
        rows = _rows(conn.execute(q))
        if symbol or not rows:
            return rows
        run = conn.execute(select(s.runs.c.symbol, s.runs.c.config).where(s.runs.c.id == run_id)).first()
    order = {sym: i for i, sym in enumerate(str(run.symbol if run else "").split(","))}
    if len(order) < 2:
        return rows
    markets = (run.config or {}).get("markets") or []
    bar = {m.get("symbol"): TIMEFRAME_MS.get(m.get("timeframe", ""), 0) for m in markets if isinstance(m, dict)}
    rows.sort(key=lambda r: (r["time"] + bar.get(r["symbol"], 0), order.get(r["symbol"], 0)))
    out: list[dict[str, Any]] = []
    last_close = None
    for r in rows:
        close = r["time"] + bar.get(r["symbol"], 0)
        if out and close == last_close:
            out[-1] = r
        else:
            out.append(r)
        last_close = close
    return out


def events(engine: Engine, run_id: str) -> list[dict[str, Any]]:
    q = select(s.events).where(s.events.c.run_id == run_id).order_by(s.events.c.time, s.events.c.id)
    with engine.connect() as conn:
        return _rows(conn.execute(q))


def total_fees(engine: Engine, run_id: str) -> Any:
    with engine.connect() as conn:
        vals = conn.scalars(select(s.fills.c.fee).where(s.fills.c.run_id == run_id)).all()
    return sum(vals) if vals else 0


def find_decision(engine: Engine, ident: str) -> dict[str, Any]:
    """A decision by its id, or the decision behind an order (client or exchange id)."""
    with engine.connect() as conn:
        row = conn.execute(select(s.decisions).where(s.decisions.c.id == ident)).first()
        if row is None:
            order = conn.execute(select(s.orders).where(
                or_(s.orders.c.id == ident, s.orders.c.exchange_order_id == ident))).first()
            if order is not None and order.decision_id:
                row = conn.execute(select(s.decisions).where(s.decisions.c.id == order.decision_id)).first()
    if row is None:
        raise StorageError(f"no decision or order with id {ident!r} in the journal")
    return dict(row._mapping)


def orders_for_decision(engine: Engine, decision_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return _rows(conn.execute(select(s.orders).where(s.orders.c.decision_id == decision_id)))


def fills_for_orders(engine: Engine, order_ids: list[str]) -> list[dict[str, Any]]:
    if not order_ids:
        return []
    with engine.connect() as conn:
        return _rows(conn.execute(select(s.fills).where(s.fills.c.order_id.in_(order_ids))
                                  .order_by(s.fills.c.time)))


def count(engine: Engine, table: str, run_id: str) -> int:
    t = s.metadata.tables[table]
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(t).where(t.c.run_id == run_id)) or 0)
