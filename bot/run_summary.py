"""A run's summary: one market's metrics, or the portfolio's with a line per market.

The portfolio's equity curve is every market's marks merged on one time grid: at each time the
mark of the market processed last (config order), whose ``equity`` already counts every
market at its latest close. Its buy-and-hold is the allocation-weighted buy-and-hold of the
markets over the bars each traded, its exposure the share of times any market held a position.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bot.candles import union_times
from bot.config import Config
from bot.domain import timeframe_ms
from bot.metrics import compute_metrics
from bot.protection import exit_counts
from bot.timeutil import ms_to_iso

#: A market line of a multi-market run keeps what is that market's own (its curve's equity is
#: the portfolio's, so equity-curve figures belong to the portfolio line only).
PORTFOLIO_ONLY = ("initial_equity", "final_equity", "total_return", "cagr", "volatility", "sharpe", "sortino",
                  "max_drawdown")


def run_summary(cfg: Config, sessions: list[Any], mode: str) -> dict[str, Any]:
    """The summary of a finished (or stopped) run over its market sessions."""
    lines = [_market_line(cfg, m) for m in sessions]
    if len(lines) == 1:
        return {"mode": mode, **lines[0]}
    samples = in_sample_total(lines)
    for ln, m in zip(lines, sessions, strict=True):
        for k in PORTFOLIO_ONLY:
            ln.pop(k, None)
        pos = m.broker.position()
        last = float(m.bars.close[-1]) if m.bars.n else 0.0
        unrealised = float(pos.qty) * (last - float(pos.avg_price)) if pos.qty else 0.0
        ln["allocation"] = m.cfg.allocation
        ln["net_pnl"] = ln["realized_pnl"] + unrealised - ln["fees"] - ln["funding_paid"]
    eq, pos, times = _portfolio_curve(sessions)
    engines = [m.engine for m in sessions]
    trade_pnls = [p for e in engines for p in e.books.trade_pnls]
    fees = sum((e.books.fees_paid for e in engines), start=engines[0].books.fees_paid * 0)
    bar_ms = min(timeframe_ms(m.cfg.timeframe) for m in sessions)
    metrics = compute_metrics(equity=eq, positions=pos, prices=[], trade_pnls=trade_pnls, fees=fees,
                              initial_cash=cfg.broker.initial_cash, bar_ms=bar_ms)
    weights = [m.cfg.allocation or 0.0 for m in sessions]
    metrics["buy_and_hold_return"] = float(sum(w * ln["buy_and_hold_return"] for w, ln in zip(weights, lines,
                                                                                                strict=True)))
    return {
        "run_id": engines[0].run_id, "mode": mode, "strategy": ",".join(ln["strategy"] for ln in lines),
        "symbol": ",".join(cfg.symbols), "timeframe": ",".join(dict.fromkeys(m.cfg.timeframe for m in sessions)),
        "model_id": None, "candles": int(sum(ln["candles"] for ln in lines)),
        "start": ms_to_iso(int(times[0])) if len(times) else None,
        "end": ms_to_iso(int(times[-1])) if len(times) else None,
        **metrics,
        "realized_pnl": float(sum(ln["realized_pnl"] for ln in lines)),
        "funding_paid": float(sum(ln["funding_paid"] for ln in lines)),
        **exit_counts(r for e in engines for r in e.books.trade_exits),
        "liquidations": sum(ln["liquidations"] for ln in lines),
        "decisions": sum(ln["decisions"] for ln in lines), "orders": sum(ln["orders"] for ln in lines),
        **samples,
        "markets": lines,
    }


def in_sample_total(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """A multi-market run's ``in_sample`` entry (when any market traded bars its checkpoint was
    fitted on): the bars over all markets and which markets; each line keeps its own."""
    marked = [ln for ln in lines if ln.get("in_sample")]
    if not marked:
        return {}
    return {"in_sample": {"bars": sum(int(ln["in_sample"]["bars"]) for ln in marked),
                          "markets": [ln["symbol"] for ln in marked]}}


def _market_line(cfg: Config, m: Any) -> dict[str, Any]:
    eng = m.engine
    n = len(eng.curve)
    closes = m.bars.close[m.bars.n - n:m.bars.n] if n else []
    metrics = compute_metrics(
        equity=eng.curve.equity, positions=eng.curve.position, prices=closes, trade_pnls=eng.books.trade_pnls,
        fees=eng.books.fees_paid, initial_cash=cfg.broker.initial_cash, bar_ms=timeframe_ms(m.cfg.timeframe),
    )
    pos = m.broker.position()
    return {
        "run_id": eng.run_id, "strategy": eng.strategy.name, "symbol": m.cfg.symbol, "timeframe": m.cfg.timeframe,
        "model_id": eng.strategy.model_id, "candles": n,
        "start": ms_to_iso(eng.first_bar) if eng.first_bar is not None else None,
        "end": ms_to_iso(eng.last_bar) if eng.last_bar is not None else None,
        **metrics,
        "realized_pnl": float(pos.realized_pnl), "funding_paid": float(eng.books.funding_paid),
        **exit_counts(eng.books.trade_exits),
        "liquidations": eng.books.liquidations, "open_position": float(pos.qty),
        "decisions": eng.n_decisions, "orders": eng.n_orders,
        **({"in_sample": m.in_sample} if m.in_sample else {}),
    }


def _portfolio_curve(sessions: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(equity, any-position indicator, times) on the union of the markets' bar closes, labelled
    like :func:`storage.queries.portfolio_curve` (close minus the smallest bar length); the same
    merge over the engines' arrays, which a run of millions of bars cannot afford as row dicts."""
    series = []
    step = min(timeframe_ms(m.cfg.timeframe) for m in sessions)
    for m in sessions:
        eng = m.engine
        n = len(eng.curve)
        t = np.asarray(m.bars.time[m.bars.n - n:m.bars.n], dtype=np.int64) + timeframe_ms(m.cfg.timeframe) - step
        series.append((t, np.frombuffer(eng.curve.equity, dtype=np.float64),
                       np.frombuffer(eng.curve.position, dtype=np.float64)))
    grid = union_times([t for t, _, _ in series])
    eq = np.full(len(grid), np.nan)
    held = np.zeros(len(grid), dtype=bool)
    for t, e, p in series:  # config order: a later market's mark at the same time wins
        if not len(t):
            continue
        at = np.searchsorted(grid, t)
        eq[at] = e
        last = np.searchsorted(t, grid, side="right") - 1
        held |= np.where(last >= 0, p[np.maximum(last, 0)] != 0, False)
    valid = ~np.isnan(eq)
    return eq[valid], held[valid].astype(np.float64), grid[valid]
