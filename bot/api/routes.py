"""The JSON endpoints under ``/api``: runs and, per run, its summary, equity, positions, trades,
orders, fills, decisions, events and alerts. Lists are paged, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from sqlalchemy import Engine

from bot.api import views
from bot.api.cache import RunCache
from bot.api.encode import answer, row
from bot.errors import StorageError
from bot.summary import check_symbol, journal_summary, run_markets
from storage import pages
from storage import queries as q

router = APIRouter(prefix="/api")

Limit = Query(50, ge=1, le=1000, description="Rows per page.")
Offset = Query(0, ge=0, description="Rows to skip (newest first).")
Symbol = Query(None, description="Only this market of a multi-market run.")


@dataclass(slots=True)
class Journal:
    """What the endpoints read: the journal's engine and the cache of whole-run answers."""

    db: Engine
    cache: RunCache


def journal(request: Request) -> Journal:
    return request.app.state.journal  # type: ignore[no-any-return]


def find_run(j: Journal, run: str) -> dict[str, Any]:
    """The run by id (or ``latest``); 404 when the journal has no such run."""
    try:
        return q.resolve_run(j.db, run)
    except StorageError as exc:
        raise HTTPException(404, str(exc)) from None


def _paged(items: list[Any], total: int, limit: int, offset: int, **head: Any) -> Response:
    return answer({**head, "total": total, "limit": limit, "offset": offset, "items": items})


def _markets(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"symbol": m.symbol, "timeframe": m.timeframe, "strategy": m.strategy, "allocation": m.allocation}
            for m in run_markets(run)]


@router.get("/runs")
def runs(request: Request, limit: int = Limit, offset: int = Offset) -> Response:
    """Runs, newest first (without their config: ask for one run for that)."""
    rows, total = pages.runs_page(journal(request).db, limit, offset)
    items = [{**row(r), "markets": q.run_symbols(r)} for r in rows]
    return _paged(items, total, limit, offset)


@router.get("/runs/{run}")
def one_run(request: Request, run: str) -> Response:
    """One run (``latest`` works too) with its journaled config, secrets masked."""
    r = find_run(journal(request), run)
    out = {k: v for k, v in row(r).items() if k != "strategy_state"}
    return answer({**out, "markets": _markets(r), "report": f"/runs/{r['id']}/report"})


@router.get("/runs/{run}/summary")
def summary(request: Request, run: str, symbol: str | None = Symbol) -> Response:
    """``bot journal summary``'s figures, recomputed from the journal."""
    j = journal(request)
    r = find_run(j, run)
    sym = check_symbol(r, symbol)
    return answer(j.cache.get(r["id"], ("summary", sym), lambda: journal_summary(j.db, r, symbol=sym)))


@router.get("/runs/{run}/equity")
def equity(request: Request, run: str, symbol: str | None = Symbol,
           points: int = Query(1500, ge=10, le=20000, description="At most this many points.")) -> Response:
    """The equity curve (the portfolio's, or one market's bars), downsampled for long runs."""
    j = journal(request)
    r = find_run(j, run)
    sym = check_symbol(r, symbol)

    # The portfolio curve of several markets: its rows' position and price are of whichever market
    # closed last, so they are left out.
    keys = ("time", "equity", "cash", "held") if sym is None and len(q.run_symbols(r)) > 1 else \
        ("time", "equity", "cash", "position", "price")

    def curve() -> dict[str, Any]:
        rows = q.equity(j.db, r["id"], symbol=sym)
        return {"total": len(rows), "points": [row({k: x[k] for k in keys}) for x in views.downsample(rows, points)]}

    c = j.cache.get(r["id"], ("equity", sym, points), curve)
    return answer({"run_id": r["id"], "symbol": sym, "initial_cash": r["initial_cash"], **c})


@router.get("/runs/{run}/positions")
def positions(request: Request, run: str) -> Response:
    """Each market's position now (flat ones too), its entry, mark, PnL and working orders."""
    j = journal(request)
    r = find_run(j, run)
    return answer({"run_id": r["id"], "items": j.cache.get(r["id"], ("positions",), lambda: views.positions(j.db, r))})


def _table(request: Request, table: str, run: str, symbol: str | None, limit: int, offset: int) -> Response:
    j = journal(request)
    r = find_run(j, run)
    sym = check_symbol(r, symbol)
    rows, total = pages.page(j.db, table, r["id"], limit=limit, offset=offset, symbol=sym)
    return _paged([row(x) for x in rows], total, limit, offset, run_id=r["id"], symbol=sym)


@router.get("/runs/{run}/trades")
def trades(request: Request, run: str, symbol: str | None = Symbol, limit: int = Limit,
           offset: int = Offset) -> Response:
    """Round-trip trades, newest exit first."""
    return _table(request, "trades", run, symbol, limit, offset)


@router.get("/runs/{run}/orders")
def orders(request: Request, run: str, symbol: str | None = Symbol, limit: int = Limit,
           offset: int = Offset) -> Response:
    """Orders, newest first, each naming the decision that caused it."""
    return _table(request, "orders", run, symbol, limit, offset)


@router.get("/runs/{run}/fills")
def fills(request: Request, run: str, symbol: str | None = Symbol, limit: int = Limit,
          offset: int = Offset) -> Response:
    """Executions, newest first."""
    return _table(request, "fills", run, symbol, limit, offset)


@router.get("/runs/{run}/decisions")
def decisions(request: Request, run: str, symbol: str | None = Symbol, limit: int = Limit, offset: int = Offset,
              explanation: bool = Query(False, description="Include each decision's full explanation.")) -> Response:
    """Decisions, newest first, each with its one-line why (the reasons of ``bot journal explain``)."""
    j = journal(request)
    r = find_run(j, run)
    sym = check_symbol(r, symbol)
    rows, total = pages.page(j.db, "decisions", r["id"], limit=limit, offset=offset, symbol=sym)
    return _paged([views.decision(r, d, explanation) for d in rows], total, limit, offset, run_id=r["id"], symbol=sym)


@router.get("/runs/{run}/events")
def events(request: Request, run: str, limit: int = Limit, offset: int = Offset,
           kind: list[str] | None = Query(None, description="Only these kinds (repeatable).")) -> Response:
    """Every journaled event, newest first: starts, resumes, order outcomes, feed and risk events."""
    j = journal(request)
    r = find_run(j, run)
    rows, total = pages.page(j.db, "events", r["id"], limit=limit, offset=offset, kinds=kind)
    return _paged([row(x) for x in rows], total, limit, offset, run_id=r["id"])


@router.get("/runs/{run}/alerts")
def alerts(request: Request, run: str, limit: int = Limit, offset: int = Offset) -> Response:
    """Trouble, newest first: kill switches, rejected or blocked orders, stale or gapped feeds,
    reconciliation that found or repaired a difference."""
    j = journal(request)
    r = find_run(j, run)
    return answer({"run_id": r["id"], "limit": limit, "offset": offset,
                   "items": views.alerts(j.db, r["id"], limit, offset)})
