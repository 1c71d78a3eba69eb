"""Deleting whole runs from the journal: ``bot journal prune`` and ``storage.retention_days``.

A run goes with every row of it, in every table, in one transaction per run: a failure (or a
kill) half-way leaves that run whole. A run marked ``running`` is never deleted: it is in
progress, or was killed and can still be resumed. The check is made inside the deleting
transaction, so a run resumed after it was listed is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from bot.domain import RunStatus
from bot.errors import StorageError
from storage import schema as s
from storage.db import safe_url

log = structlog.get_logger("journal")

#: A run's own tables, in an order that deletes each row before the rows it references
#: (fills -> orders -> decisions).
RUN_TABLES = ("fills", "trades", "equity_blocks", "events", "funding", "orders", "decisions")
#: Statuses a prune may delete (everything but ``running``).
FINAL = tuple(st.value for st in RunStatus if st.is_final)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which runs a prune deletes: not ``running``, of ``statuses``, except the ``keep`` newest
    of those (by start), and (``older_than``) last written before ``now - older_than``."""

    older_than: timedelta | None = None
    keep: int | None = None
    statuses: tuple[str, ...] = FINAL


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt  # SQLite returns UTC without its zone


def select_runs(engine: Engine, sel: Selection, now: datetime | None = None) -> list[dict[str, Any]]:
    """The runs ``sel`` deletes, newest first, with their row count per table (``rows``)."""
    now = now or datetime.now(UTC)
    r = s.runs.c
    statuses = [st for st in sel.statuses if st != RunStatus.RUNNING]
    q = (select(r.id, r.mode, r.status, r.strategy, r.symbol, r.started_at, r.updated_at)
         .where(r.status.in_(statuses)).order_by(r.started_at.desc(), r.id))
    try:
        with engine.connect() as conn:
            runs = [dict(row._mapping) for row in conn.execute(q)]
            runs = runs[sel.keep or 0:]
            if sel.older_than is not None:
                runs = [x for x in runs if _aware(x["updated_at"]) < now - sel.older_than]
            for x in runs:
                x["rows"] = _counts(conn, x["id"])
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot read runs from {safe_url(str(engine.url))}: {str(exc).splitlines()[0]}") from None
    return runs


def _counts(conn: Any, run_id: str) -> dict[str, int]:
    out = {}
    for name in RUN_TABLES:
        t = s.metadata.tables[name]
        out[name] = int(conn.scalar(select(func.count()).select_from(t).where(t.c.run_id == run_id)) or 0)
    return out


def delete_run(engine: Engine, run_id: str) -> dict[str, int] | None:
    """Delete the run and all its rows in one transaction; the rows deleted per table, or None
    when the run is gone or ``running`` (then nothing is deleted)."""
    r = s.runs.c
    try:
        with engine.begin() as conn:
            # Locks the run's row (PostgreSQL: until commit; SQLite: the database's write lock),
            # so it cannot be resumed half-way through; a running run matches nothing.
            held = conn.execute(update(s.runs).where(r.id == run_id, r.status != RunStatus.RUNNING)
                                .values(status=r.status)).rowcount
            if not held:
                return None
            out = {}
            for name in RUN_TABLES:
                t = s.metadata.tables[name]
                out[name] = conn.execute(delete(t).where(t.c.run_id == run_id)).rowcount
            out["runs"] = conn.execute(delete(s.runs).where(r.id == run_id)).rowcount
            return out
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot delete run {run_id} from {safe_url(str(engine.url))}: "
                           f"{str(exc).splitlines()[0]}") from None


def prune(engine: Engine, sel: Selection, now: datetime | None = None) -> list[tuple[str, dict[str, int]]]:
    """Delete what ``sel`` selects, one run per transaction: (run id, rows deleted per table)."""
    done = []
    for run in select_runs(engine, sel, now):
        counts = delete_run(engine, run["id"])
        if counts is not None:
            done.append((run["id"], counts))
    return done


def apply_retention(engine: Engine, days: int, now: datetime | None = None) -> list[tuple[str, dict[str, int]]]:
    """``storage.retention_days``, when a new run starts: delete the runs last written more than
    ``days`` days ago (0: off). A failure is logged, never stops the run from starting."""
    if days <= 0:
        return []
    try:
        done = prune(engine, Selection(older_than=timedelta(days=days)), now)
    except StorageError as exc:
        log.warning("journal_retention_failed", days=days, error=str(exc))
        return []
    if done:
        log.info("journal_retention", days=days, runs=[rid for rid, _ in done],
                 rows=sum(sum(c.values()) for _, c in done))
    return done
