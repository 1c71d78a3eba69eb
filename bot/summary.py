"""A run's summary recomputed from the journal alone (any mode, finished or not).

A one-market run gives one set of figures. A multi-market run gives the portfolio's at top level
and ``markets``, a line per market, as :func:`bot.run_summary.run_summary` does at the end of a
run; ``symbol=`` gives one market's line. A market's equity rows carry the portfolio's equity, so
equity-curve figures (return, Sharpe, drawdown...) belong to the portfolio only.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
from sqlalchemy import Engine

from bot.domain import Side, fee_in_base, timeframe_ms
from bot.errors import ConfigError
from bot.metrics import compute_metrics
from bot.positions import PositionBook
from bot.protection import exit_counts
from bot.run_summary import PORTFOLIO_ONLY, in_sample_total
from bot.timeutil import ms_to_iso
from storage import queries as q


@dataclass(frozen=True, slots=True)
class RunMarket:
    """One market of a run as its journaled config names it."""

    symbol: str
    timeframe: str
    strategy: str
    params: dict[str, Any]
    allocation: float | None

    @property
    def bar_ms(self) -> int:
        return timeframe_ms(self.timeframe)


def run_markets(run: dict[str, Any]) -> list[RunMarket]:
    """The run's markets in config order: from its journaled config, else from its columns."""
    cfg = run.get("config") if isinstance(run.get("config"), dict) else {}
    listed = [m for m in cfg.get("markets") or [] if isinstance(m, dict) and m.get("symbol")]
    symbols = q.run_symbols(run)
    if [m["symbol"] for m in listed] == symbols:
        return [RunMarket(m["symbol"], str(m.get("timeframe") or "1h"), str((m.get("strategy") or {}).get("name")),
                          dict((m.get("strategy") or {}).get("params") or {}), m.get("allocation"))
                for m in listed]
    # Older rows: the columns alone (a one-market run's config had market: and strategy:).
    tfs, names = str(run.get("timeframe") or "1h").split(","), str(run.get("strategy") or "").split(",")
    params = dict((cfg.get("strategy") or {}).get("params") or {}) if len(symbols) == 1 else {}
    return [RunMarket(s, tfs[min(i, len(tfs) - 1)], names[min(i, len(names) - 1)], params,
                      1.0 if len(symbols) == 1 else None) for i, s in enumerate(symbols)]


def check_symbol(run: dict[str, Any], symbol: str | None) -> str | None:
    """``symbol`` as the run names it (upper case), or ConfigError when the run did not trade it."""
    if symbol is None:
        return None
    traded = q.run_symbols(run)
    if symbol.upper() not in traded:
        raise ConfigError(f"run {run['id']} did not trade {symbol}: its markets are {', '.join(traded) or 'none'}")
    return symbol.upper()


def journal_summary(db: Engine, run: dict[str, Any], symbol: str | None = None) -> dict[str, Any]:
    """The run's summary; with ``symbol`` (ConfigError if the run did not trade it) that market's."""
    symbol = check_symbol(run, symbol)
    markets = run_markets(run)
    if len(markets) < 2:
        return _one_market(db, run)
    if symbol is not None:
        m = next(m for m in markets if m.symbol == symbol)
        return {**_head(run), **market_line(db, run, m)}
    return _portfolio(db, run, markets)


def _head(run: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": run["id"], "mode": run["mode"], "status": run["status"]}


def _one_market(db: Engine, run: dict[str, Any]) -> dict[str, Any]:
    rid = run["id"]
    eq = q.equity(db, rid)
    trades = q.trades(db, rid)
    m = compute_metrics(
        equity=[r["equity"] for r in eq], positions=[r["position"] for r in eq],
        prices=[r["price"] for r in eq], trade_pnls=[t["net_pnl"] for t in trades],
        fees=q.total_fees(db, rid), initial_cash=float(run["initial_cash"]),
        bar_ms=timeframe_ms(run["timeframe"]),
    )
    return {
        **_head(run),
        "strategy": run["strategy"],
        "symbol": run["symbol"],
        "timeframe": run["timeframe"],
        "model_id": run.get("model_id"),
        "candles": len(eq),
        "start": ms_to_iso(eq[0]["time"]) if eq else None,
        "end": ms_to_iso(eq[-1]["time"]) if eq else None,
        **m,
        "funding_paid": float(q.funding_paid(db, rid)),
        **exit_counts(t.get("exit_reason") for t in trades),
        "liquidations": q.liquidations(db, rid),
        **_counts(db, run),
        **_speed(run),
        **_in_sample(db, run),
    }


def _in_sample(db: Engine, run: dict[str, Any], symbol: str | None = None) -> dict[str, Any]:
    """``in_sample``: the bars the run traded that its checkpoint was fitted on, as journaled at its
    start (bot/app/guards.py); nothing when it traded out of sample only."""
    for e in q.events(db, run["id"], kind="in_sample"):
        p = e.get("payload") or {}
        if symbol is None or p.get("symbol") == symbol:
            return {"in_sample": p}
    return {}


def _counts(db: Engine, run: dict[str, Any], symbol: str | None = None) -> dict[str, int]:
    if symbol is None:
        return {t: q.count(db, t, run["id"]) for t in ("decisions", "orders", "fills")}
    return {"decisions": len(q.decisions(db, run["id"], symbol=symbol)),
            "orders": len(q.orders(db, run["id"], symbol=symbol)),
            "fills": len(q.fills(db, run["id"], symbol=symbol))}


def _speed(run: dict[str, Any]) -> dict[str, Any]:
    stored = run.get("summary") or {}
    return {"elapsed_s": stored.get("elapsed_s"), "candles_per_s": stored.get("candles_per_s")}


def replay_fills(fills: list[dict[str, Any]]) -> PositionBook:
    """The market's position book replayed from its fills (realised PnL before fees, fees, qty)."""
    book = PositionBook()
    for f in fills:
        book.apply(Side(f["side"]), Decimal(str(f["qty"])), Decimal(str(f["price"])), Decimal(str(f["fee"])),
                   fee_in_base=fee_in_base(f["symbol"], f["fee_currency"]))
    return book


def market_line(db: Engine, run: dict[str, Any], m: RunMarket) -> dict[str, Any]:
    """One market's line of a multi-market run, from its own journal rows."""
    rid = run["id"]
    eq = q.equity(db, rid, symbol=m.symbol)
    trades = q.trades(db, rid, symbol=m.symbol)
    fills = q.fills(db, rid, symbol=m.symbol)
    book = replay_fills(fills)
    metrics = compute_metrics(
        equity=[r["equity"] for r in eq], positions=[r["position"] for r in eq], prices=[r["price"] for r in eq],
        trade_pnls=[t["net_pnl"] for t in trades], fees=book.fees, initial_cash=float(run["initial_cash"]),
        bar_ms=m.bar_ms)
    for k in PORTFOLIO_ONLY:
        metrics.pop(k, None)
    last = Decimal(str(eq[-1]["price"])) if eq else Decimal(0)
    unrealised = book.qty * (last - book.avg_price) if book.qty else Decimal(0)
    paid = q.funding_paid(db, rid, m.symbol)
    return {
        "symbol": m.symbol, "strategy": m.strategy, "timeframe": m.timeframe, "allocation": m.allocation,
        "candles": len(eq),
        "start": ms_to_iso(eq[0]["time"]) if eq else None,
        "end": ms_to_iso(eq[-1]["time"]) if eq else None,
        **metrics,
        "realized_pnl": float(book.realized), "net_pnl": float(book.realized + unrealised - book.fees - paid),
        "funding_paid": float(paid),
        **exit_counts(t.get("exit_reason") for t in trades),
        "liquidations": sum(1 for f in fills if f.get("reason") == "liquidation"),
        "open_position": float(book.qty),
        **_counts(db, run, m.symbol),
        **_in_sample(db, run, m.symbol),
    }


def portfolio_curve(rows: dict[str, list[dict[str, Any]]], markets: list[RunMarket]) -> list[dict[str, Any]]:
    """Every market's equity rows merged on one grid (:func:`storage.queries.portfolio_curve`)."""
    return q.portfolio_curve(rows, {m.symbol: m.bar_ms for m in markets})


def _portfolio(db: Engine, run: dict[str, Any], markets: list[RunMarket]) -> dict[str, Any]:
    rid = run["id"]
    rows = {m.symbol: q.equity(db, rid, symbol=m.symbol) for m in markets}
    curve = portfolio_curve(rows, markets)
    lines = [market_line(db, run, m) for m in markets]
    trades = q.trades(db, rid)
    metrics = compute_metrics(
        equity=[r["equity"] for r in curve], positions=[float(r["held"]) for r in curve], prices=[],
        trade_pnls=[t["net_pnl"] for t in trades], fees=q.total_fees(db, rid),
        initial_cash=float(run["initial_cash"]), bar_ms=min(m.bar_ms for m in markets))
    weights = np.asarray([m.allocation or 0.0 for m in markets])
    metrics["buy_and_hold_return"] = float(weights @ np.asarray([ln["buy_and_hold_return"] for ln in lines]))
    return {
        **_head(run),
        "strategy": run["strategy"], "symbol": run["symbol"], "timeframe": run["timeframe"],
        "model_id": run.get("model_id"),
        "candles": sum(ln["candles"] for ln in lines),
        "start": min((ln["start"] for ln in lines if ln["start"]), default=None),
        "end": max((ln["end"] for ln in lines if ln["end"]), default=None),
        **metrics,
        "realized_pnl": float(sum(ln["realized_pnl"] for ln in lines)),
        "funding_paid": float(sum(ln["funding_paid"] for ln in lines)),
        **exit_counts(t.get("exit_reason") for t in trades),
        "liquidations": sum(ln["liquidations"] for ln in lines),
        **_counts(db, run),
        **_speed(run),
        **in_sample_total(lines),
        "markets": lines,
    }
