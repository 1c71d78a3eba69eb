"""Paged, newest-first reads of the journal for the API (``bot serve``), beside :mod:`storage.queries`.

A dashboard polls these every few seconds while a run is writing, so each one is a single
indexed query: a page of rows, a count, the latest mark of each market, or a run's fingerprint
(what changes whenever the run's writer commits).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, desc, func, select

from bot.domain import TERMINAL_STATUSES
from storage import equity_codec
from storage import schema as s

#: Each journal table's newest-first order: its time column, then its key.
_ORDER = {"decisions": ("bar_time", "id"), "orders": ("created_time", "id"), "fills": ("time", "exec_id"),
          "trades": ("exit_time", "id"), "events": ("time", "id")}


def _rows(result: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in result]


def runs_page(engine: Engine, limit: int, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """(runs newest first, without their config and strategy state; how many runs there are)."""
    cols = [c for c in s.runs.c if c.name not in ("config", "strategy_state")]
    q = select(*cols).order_by(desc(s.runs.c.started_at), s.runs.c.id).limit(limit).offset(offset)
    with engine.connect() as conn:
        return _rows(conn.execute(q)), int(conn.scalar(select(func.count()).select_from(s.runs)) or 0)


def page(engine: Engine, table: str, run_id: str, *, limit: int, offset: int = 0, symbol: str | None = None,
         kinds: Iterable[str] | None = None) -> tuple[list[dict[str, Any]], int]:
    """(one page of a run's rows of ``table``, newest first; how many rows match).

    ``symbol`` keeps one market (not for events, which have none); ``kinds`` keeps those event kinds.
    """
    t = s.metadata.tables[table]
    where = [t.c.run_id == run_id]
    if symbol is not None:
        where.append(t.c.symbol == symbol)
    if kinds is not None:
        where.append(t.c.kind.in_(list(kinds)))
    time_col, key = _ORDER[table]
    q = select(t).where(*where).order_by(desc(t.c[time_col]), desc(t.c[key])).limit(limit).offset(offset)
    with engine.connect() as conn:
        rows = _rows(conn.execute(q))
        total = int(conn.scalar(select(func.count()).select_from(t).where(*where)) or 0)
    return rows, total


def last_marks(engine: Engine, run_id: str, symbols: list[str]) -> dict[str, dict[str, Any]]:
    """Each market's latest equity mark (a market not marked yet is left out): the last row of its
    block that reaches furthest."""
    b = s.equity_blocks.c
    out: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for sym in symbols:
            data = conn.scalar(select(b.data).where(b.run_id == run_id, b.symbol == sym)
                               .order_by(desc(b.last_time), b.id).limit(1))
            if data is not None:
                cols = equity_codec.decode(data)
                out[sym] = {"run_id": run_id, "symbol": sym,
                            **dict(zip(equity_codec.COLUMNS, (c[-1].item() for c in cols), strict=True))}
    return out


def working_orders(engine: Engine, run_id: str) -> list[dict[str, Any]]:
    """The run's orders that have not reached a final status, oldest first."""
    o = s.orders.c
    q = (select(s.orders).where(o.run_id == run_id, o.status.not_in([str(x) for x in TERMINAL_STATUSES]))
         .order_by(o.created_time, o.id))
    with engine.connect() as conn:
        return _rows(conn.execute(q))


def fingerprint(engine: Engine, run_id: str) -> tuple[Any, ...] | None:
    """What changes whenever the run's writer commits (None: no such run); a cache key for answers
    computed from all of a run's rows."""
    r = s.runs.c
    with engine.connect() as conn:
        row = conn.execute(select(r.updated_at, r.status, r.bars, r.last_bar).where(r.id == run_id)).first()
    return None if row is None else tuple(row)
