"""A multi-market run for the report: the portfolio's curve and summary, then each market's rows.

The portfolio curve is :func:`bot.summary.portfolio_curve` (every market's marks on one grid);
its benchmark is the allocation-weighted buy & hold of the markets (the summary's
``buy_and_hold_return``). Each market's contribution to PnL over time is exact accounting from
the journal: the cash its fills and funding settlements moved so far plus its position marked at
its own close. The contributions add up to the portfolio's equity minus the initial cash
wherever every market has a mark.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from bot.domain import Side, fee_in_base, fill_cash
from bot.report.data import ReportData, load_market_data, to_dt
from bot.summary import RunMarket, journal_summary, portfolio_curve, run_markets
from storage import queries as q


@dataclass(slots=True)
class PortfolioData:
    """A multi-market run, ready to plot: the portfolio page's data and one ReportData per market."""

    run: dict[str, Any]
    #: The portfolio's figures (journal_summary) without its ``markets`` lines.
    summary: dict[str, Any]
    #: One row per time of the portfolio grid: time, dt, equity, cash, position (any market held).
    equity: pd.DataFrame
    #: Equity of holding every market from its first close with its allocation of the initial cash.
    benchmark: np.ndarray
    #: Each market's PnL so far on the portfolio grid (columns: symbols, config order).
    contribution: pd.DataFrame
    markets: list[RunMarket]
    lines: list[dict[str, Any]]
    data: list[ReportData]
    events: list[dict[str, Any]]

    @property
    def run_id(self) -> str:
        return str(self.run["id"])

    @property
    def initial_cash(self) -> float:
        return float(self.run["initial_cash"])

    @property
    def has_bars(self) -> bool:
        return not self.equity.empty


def is_multi(run: dict[str, Any]) -> bool:
    return len(q.run_symbols(run)) > 1


def market_pnl(fills: list[dict[str, Any]], times: np.ndarray, prices: np.ndarray, positions: np.ndarray,
               bar_ms: int, funding: list[dict[str, Any]] = ()) -> np.ndarray:  # type: ignore[assignment]
    """A market's PnL at each of its bars: cash moved by the fills and the funding settlements
    before the bar's close plus the position marked at the close (``times`` are bar open times,
    oldest first)."""
    ft = np.asarray([int(f["time"]) for f in fills], dtype=np.int64)
    cash = np.cumsum([float(fill_cash(Side(f["side"]), Decimal(str(f["qty"])), Decimal(str(f["price"])),
                                      Decimal(str(f["fee"])), fee_in_base(f["symbol"], f["fee_currency"])))
                      for f in fills])
    n = np.searchsorted(ft, times + bar_ms, side="left")  # fills strictly before the close
    moved = np.where(n > 0, cash[np.maximum(n - 1, 0)] if len(cash) else 0.0, 0.0)
    if funding:
        fund_t = np.asarray([int(r["time"]) for r in funding], dtype=np.int64)
        paid = np.cumsum([float(r["amount"]) for r in funding])
        k = np.searchsorted(fund_t, times + bar_ms, side="left")  # settled before the close
        moved = moved + np.where(k > 0, paid[np.maximum(k - 1, 0)], 0.0)
    return moved + positions * prices


def _on_grid(grid: np.ndarray, times: np.ndarray, values: np.ndarray, fill: float) -> np.ndarray:
    """``values`` at their ``times`` carried forward onto ``grid`` (``fill`` before the first)."""
    at = np.searchsorted(times, grid, side="right") - 1
    return np.where(at >= 0, values[np.maximum(at, 0)] if len(values) else fill, fill)


def load_portfolio_data(db: Engine, run: dict[str, Any]) -> PortfolioData:
    rid = run["id"]
    markets = run_markets(run)
    summary = journal_summary(db, run)
    lines = summary.pop("markets")
    data = [load_market_data(db, run, m, ln) for m, ln in zip(markets, lines, strict=True)]
    rows = {m.symbol: q.equity(db, rid, symbol=m.symbol) for m in markets}
    curve = portfolio_curve(rows, markets)
    eq = pd.DataFrame({"time": np.asarray([r["time"] for r in curve], dtype=np.int64),
                       "equity": np.asarray([r["equity"] for r in curve], dtype=np.float64),
                       "cash": np.asarray([r["cash"] for r in curve], dtype=np.float64),
                       "position": np.asarray([float(r["held"]) for r in curve], dtype=np.float64)})
    eq["dt"] = to_dt(eq["time"].to_numpy())
    grid = eq["time"].to_numpy()
    step = min(m.bar_ms for m in markets)
    bench = np.zeros(len(grid))
    contrib: dict[str, np.ndarray] = {}
    for m, d in zip(markets, data, strict=True):
        t = d.equity["time"].to_numpy() + m.bar_ms - step  # labelled like the portfolio grid
        px = d.equity["price"].to_numpy()
        pnl = market_pnl(q.fills(db, rid, symbol=m.symbol), d.equity["time"].to_numpy(), px,
                         d.equity["position"].to_numpy(), m.bar_ms, q.funding(db, rid, symbol=m.symbol))
        contrib[m.symbol] = _on_grid(grid, t, pnl, 0.0)
        rel = px / px[0] if len(px) and px[0] > 0 else np.ones(len(px))
        bench += (m.allocation or 0.0) * _on_grid(grid, t, rel, 1.0)
    cash_left = 1.0 - sum(m.allocation or 0.0 for m in markets)
    return PortfolioData(
        run=run, summary=summary, equity=eq, benchmark=(bench + cash_left) * float(run["initial_cash"]),
        contribution=pd.DataFrame(contrib), markets=markets, lines=lines, data=data, events=q.events(db, rid))
