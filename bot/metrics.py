"""Performance metrics, annualised by the data's own bar frequency (crypto trades 24/7).

A figure that a run cannot support is ``None`` (JSON ``null``, ``n/a`` in tables), never a
number that only looks like one: the annualised figures (CAGR, volatility, Sharpe, Sortino) of a
run with fewer than :data:`MIN_ANNUALISE_DAYS` days of bars (27 hourly bars up 4 % would
otherwise "compound" to a CAGR of millions of percent), and the win rate, profit factor and
average trade of a run without a closed trade. A profit factor is also ``None`` when no trade
lost (it would be infinite).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np

YEAR_MS = 365 * 86_400_000
#: Annualised figures need at least this much history (number of bars x bar length).
MIN_ANNUALISE_DAYS = 30
ANNUALISED = ("cagr", "volatility", "sharpe", "sortino")


def bars_per_year(bar_ms: int) -> float:
    return YEAR_MS / bar_ms


def can_annualise(bars: int, bar_ms: int) -> bool:
    """Whether ``bars`` bars of ``bar_ms`` span :data:`MIN_ANNUALISE_DAYS` days."""
    return bars > 1 and bars * bar_ms >= MIN_ANNUALISE_DAYS * 86_400_000


def _f(x: float) -> float:
    return float(x) if math.isfinite(x) else 0.0


def compute_metrics(*, equity: Sequence[float] | np.ndarray, positions: Sequence[float] | np.ndarray,
                    prices: Sequence[float] | np.ndarray, trade_pnls: Sequence[Decimal | float],
                    fees: Decimal | float, initial_cash: float, bar_ms: int) -> dict[str, Any]:
    """Summary statistics of one run.

    ``equity``/``positions``/``prices`` are per-bar marks at each bar's close; ``trade_pnls`` the
    net PnL of each closed round trip.
    """
    eq = np.asarray(equity, dtype=np.float64)
    n = int(eq.shape[0])
    initial = float(initial_cash)
    final = float(eq[-1]) if n else initial
    total_return = final / initial - 1.0
    out: dict[str, Any] = {
        "bars": n,
        "initial_equity": initial,
        "final_equity": final,
        "total_return": total_return,
    }
    if n:
        curve = np.concatenate(([initial], eq))
        rets = curve[1:] / curve[:-1] - 1.0
        bpy = bars_per_year(bar_ms)
        sd = float(rets.std(ddof=1)) if n > 1 else 0.0
        mean = float(rets.mean())
        downside = float(np.sqrt(np.mean(np.minimum(rets, 0.0) ** 2)))
        years = n * bar_ms / YEAR_MS
        peak = np.maximum.accumulate(curve)
        dd = 1.0 - curve / peak
        px = np.asarray(prices, dtype=np.float64)
        pos = np.asarray(positions, dtype=np.float64)
        out.update({
            "cagr": _f((final / initial) ** (1.0 / years) - 1.0) if final > 0 and years > 0 else -1.0,
            "volatility": _f(sd * math.sqrt(bpy)),
            "sharpe": _f(mean / sd * math.sqrt(bpy)) if sd > 0 else 0.0,
            "sortino": _f(mean / downside * math.sqrt(bpy)) if downside > 0 else 0.0,
            "max_drawdown": _f(float(dd.max())),
            "exposure_time": float(np.count_nonzero(pos) / n),
            "buy_and_hold_return": _f(float(px[-1] / px[0] - 1.0)) if px.size and px[0] > 0 else 0.0,
        })
        if not can_annualise(n, bar_ms):
            out.update(dict.fromkeys(ANNUALISED))
    else:
        out.update({**dict.fromkeys(ANNUALISED), "max_drawdown": 0.0, "exposure_time": 0.0,
                    "buy_and_hold_return": 0.0})
    pnl = [float(p) for p in trade_pnls]
    wins = [p for p in pnl if p > 0]
    losses = [p for p in pnl if p < 0]
    gross_loss = -sum(losses)
    out.update({
        "n_trades": len(pnl),
        "win_rate": len(wins) / len(pnl) if pnl else None,
        # JSON has no infinity: None when no trade lost, as when there is no trade at all.
        "profit_factor": (sum(wins) / gross_loss) if gross_loss > 0 else (None if wins or not pnl else 0.0),
        "avg_trade_pnl": sum(pnl) / len(pnl) if pnl else None,
        "fees": float(fees),
    })
    return out
