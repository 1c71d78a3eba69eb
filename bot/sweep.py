"""``bot sweep``: one backtest per point of a parameter grid and per market, as independent jobs.

Every point is a full backtest of the market's candles through the runner (``bot backtest``),
journaled as a run; the points run on ``Jobs`` (serially, a process pool or Ray, bot/jobs.py) and
come back in grid order, each market after the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.app.files import backtest
from bot.app.parts import build_strategy
from bot.candles import CandleData
from bot.config import Config
from bot.funding import FundingRates
from bot.jobs import Jobs
from bot.search_space import invalid, nested
from storage.db import database_for
from strategies import get_spec

FIGURES = ("total_return", "sharpe", "max_drawdown", "n_trades", "fees")


@dataclass(frozen=True, slots=True)
class Market:
    """One market of a sweep: its one-market config (rules set) and candles."""

    cfg: Config
    data: CandleData
    funding: FundingRates | None = None


@dataclass(frozen=True, slots=True)
class Point:
    symbol: str
    params: dict[str, Any]
    run_id: str | None
    figures: dict[str, Any]
    invalid: str | None = None


def sweep_job(cfg: Config, data: CandleData, url: str, params: dict[str, Any],
              funding: FundingRates | None) -> dict[str, Any]:
    """Backtest ``params`` on ``data``; the run's summary."""
    db = database_for(url)
    m = cfg.market
    cfg = cfg.with_market(m.model_copy(update={"strategy": m.strategy.model_copy(update={"params": params})}))
    return backtest(cfg, data, build_strategy(cfg), db, show_progress=False, funding=funding)


def run_sweep(markets: list[Market], grid: list[dict[str, Any]], url: str, jobs: Jobs) -> list[Point]:
    """Every grid point on every market; a point the strategy refuses as a whole (fast >= slow)
    is listed with the reason instead of run."""
    points: list[Point] = []
    work, names, slots = [], [], []
    for mk in markets:
        m = mk.cfg.market
        model = get_spec(m.strategy.name).params
        for g in grid:
            params = nested(dict(m.strategy.params), g)
            why = invalid(model, params)
            points.append(Point(m.symbol, params, None, {}, why))
            if why is None:
                slots.append(len(points) - 1)
                work.append((mk.cfg, mk.data, url, params, mk.funding))
                names.append(f"{m.symbol} {' '.join(f'{k}={v}' for k, v in g.items())}")
    for i, summary in zip(slots, jobs.map(sweep_job, work, names), strict=True):
        p = points[i]
        points[i] = Point(p.symbol, p.params, summary["run_id"], {k: summary.get(k) for k in FIGURES})
    return points
