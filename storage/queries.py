"""Read side of the journal: what ``bot journal ...`` and reports ask."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, desc, func, or_, select

from bot.domain import TIMEFRAME_MS, fee_in_base
from bot.errors import StorageError
from storage import equity_codec
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
    """One market's equity rows, or (no ``symbol``) the portfolio curve (:func:`portfolio_curve`)."""
    with engine.connect() as conn:
        if symbol is None:
            run = conn.execute(select(s.runs.c.symbol, s.runs.c.config).where(s.runs.c.id == run_id)).first()
            symbols = str(run.symbol if run else "").split(",")
            if len(symbols) > 1:
                listed = {m.get("symbol"): m for m in (run.config or {}).get("markets") or [] if isinstance(m, dict)}
                bar_ms = {sym: TIMEFRAME_MS.get(str(listed.get(sym, {}).get("timeframe", "1h")), 3_600_000)
                          for sym in symbols}
                return portfolio_curve({sym: _equity_rows(conn, run_id, sym) for sym in symbols}, bar_ms)
        return _equity_rows(conn, run_id, symbol)


def _equity_rows(conn: Any, run_id: str, symbol: str | None) -> list[dict[str, Any]]:
    """One market's curve (its blocks merged: storage/equity_codec.py), as rows in time order."""
    b = s.equity_blocks.c
    q = _of(select(b.symbol, b.data).where(b.run_id == run_id), s.equity_blocks, symbol).order_by(b.id)
    by_symbol: dict[str, list[bytes]] = {}
    for sym, data in conn.execute(q):
        by_symbol.setdefault(sym, []).append(data)
    out = []
    for sym, blocks in by_symbol.items():
        out += equity_codec.rows(equity_codec.merge(blocks), {"run_id": run_id, "symbol": sym})
    return out


def portfolio_curve(rows: dict[str, list[dict[str, Any]]], bar_ms: dict[str, int]) -> list[dict[str, Any]]:
    """Every market's equity rows (``rows``: by symbol, in config order) merged on one grid.

    Each row's ``equity`` and ``cash`` are the portfolio's at that market's bar close, so the
    portfolio curve is the rows in order of their bars' close (config order when they close
    together), one per close: the mark of the market processed last. Rows are labelled like the
    smallest timeframe's bars (close minus that bar length: a 4h bar's mark comes after the 1h
    bars inside it); with one timeframe that is each row's own time. ``position`` and ``price``
    are the row's market's; ``held`` says whether any market held a position then.
    """
    step = min(bar_ms.values())
    tagged = sorted(((r["time"] + bar_ms[sym] - step, i, r) for i, sym in enumerate(rows) for r in rows[sym]),
                    key=lambda x: (x[0], x[1]))
    held = [False] * len(rows)
    out: list[dict[str, Any]] = []
    for t, i, r in tagged:
        held[i] = bool(r["position"])
        row = {**r, "time": t, "held": any(held)}
        if out and out[-1]["time"] == t:
            out[-1] = row
        else:
            out.append(row)
    return out


def funding(engine: Engine, run_id: str, symbol: str | None = None) -> list[dict[str, Any]]:
    """The run's funding settlements (one market's with ``symbol``), in time order."""
    with engine.connect() as conn:
        q = _of(select(s.funding).where(s.funding.c.run_id == run_id), s.funding, symbol)
        return _rows(conn.execute(q.order_by(s.funding.c.time, s.funding.c.symbol)))


def funding_paid(engine: Engine, run_id: str, symbol: str | None = None) -> Decimal:
    """Net funding the run paid (negative: received), from its settlement rows."""
    return -sum((Decimal(r["amount"]) for r in funding(engine, run_id, symbol)), Decimal(0))


def liquidations(engine: Engine, run_id: str, symbol: str | None = None) -> int:
    """How many of the run's fills (one market's with ``symbol``) were liquidations."""
    f = s.fills.c
    q = select(func.count()).select_from(s.fills).where(f.run_id == run_id, f.reason == "liquidation")
    if symbol is not None:
        q = q.where(f.symbol == symbol)
    with engine.connect() as conn:
        return int(conn.scalar(q) or 0)


def events(engine: Engine, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
    q = select(s.events).where(s.events.c.run_id == run_id).order_by(s.events.c.time, s.events.c.id)
    if kind is not None:
        q = q.where(s.events.c.kind == kind)
    with engine.connect() as conn:
        return _rows(conn.execute(q))


def total_fees(engine: Engine, run_id: str) -> Any:
    """Every fee of the run in the quote coin (a fee paid in the base coin at its fill price)."""
    f = s.fills.c
    with engine.connect() as conn:
        rows = conn.execute(select(f.symbol, f.fee, f.fee_currency, f.price).where(f.run_id == run_id)).all()
    return sum(fee * price if fee_in_base(sym, cur) else fee for sym, fee, cur, price in rows) if rows else 0


def find_decision(engine: Engine, ident: str) -> dict[str, Any]:
    """A decision by its id, or the decision behind an order (client or exchange id)."""
    with engine.connect() as conn:
        row = conn.execute(select(s.decisions).where(s.decisions.c.id == ident)).first()
        if row is None:
            order = conn.execute(select(s.orders).where(
                or_(s.orders.c.id == ident, s.orders.c.exchange_order_id == ident))).first()
            if order is not None and order.decision_id:
                row = conn.execute(select(s.decisions).where(s.decisions.c.id == order.decision_id)).first()
            elif order is not None:  # the venue's own order (a liquidation, one adopted): no decision behind it
                liquidation = conn.execute(select(s.fills.c.exec_id).where(
                    s.fills.c.order_id == order.id, s.fills.c.reason == "liquidation")).first()
                why = "the venue's liquidation of the position (bot journal events: liquidation)" \
                    if liquidation is not None else "an order the venue had and the journal did not (adopted)"
                raise StorageError(f"order {ident!r} has no decision behind it: {why}")
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
