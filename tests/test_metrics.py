"""Metrics against hand-computed values; annualisation follows the bar frequency."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bot.metrics import bars_per_year, compute_metrics

HOUR = 3_600_000
DAY = 24 * HOUR


def test_bars_per_year_follows_the_timeframe() -> None:
    assert bars_per_year(HOUR) == pytest.approx(8760)
    assert bars_per_year(DAY) == pytest.approx(365)


def test_known_curve() -> None:
    eq = [110.0, 99.0, 108.9]  # +10%, -10%, +10%
    m = compute_metrics(equity=eq, positions=[1, 1, 0], prices=[10, 9, 11], trade_pnls=[15.0, -5.0],
                        fees=1.5, initial_cash=100.0, bar_ms=DAY)
    rets = np.array([0.1, -0.1, 0.1])
    assert m["total_return"] == pytest.approx(0.089)
    assert m["max_drawdown"] == pytest.approx(0.1)
    assert m["sharpe"] == pytest.approx(rets.mean() / rets.std(ddof=1) * math.sqrt(365))
    assert m["sortino"] == pytest.approx(rets.mean() / math.sqrt(0.01 / 3) * math.sqrt(365))
    assert m["win_rate"] == 0.5 and m["profit_factor"] == pytest.approx(3.0)
    assert m["exposure_time"] == pytest.approx(2 / 3)
    assert m["buy_and_hold_return"] == pytest.approx(0.1)
    assert m["cagr"] == pytest.approx(1.089 ** (365 / 3) - 1)
    assert m["fees"] == 1.5 and m["n_trades"] == 2


def test_same_returns_hourly_vs_daily_annualise_differently() -> None:
    eq = list(100 * np.cumprod(1 + np.tile([0.01, -0.005], 50)))
    h = compute_metrics(equity=eq, positions=[1] * 100, prices=[1] * 100, trade_pnls=[], fees=0,
                        initial_cash=100, bar_ms=HOUR)
    d = compute_metrics(equity=eq, positions=[1] * 100, prices=[1] * 100, trade_pnls=[], fees=0,
                        initial_cash=100, bar_ms=DAY)
    assert h["sharpe"] / d["sharpe"] == pytest.approx(math.sqrt(24))


def test_empty_and_no_losses() -> None:
    m = compute_metrics(equity=[], positions=[], prices=[], trade_pnls=[1.0], fees=0, initial_cash=10, bar_ms=HOUR)
    assert m["total_return"] == 0 and m["sharpe"] == 0
    assert m["profit_factor"] is None  # no losing trade: infinite, reported as null in JSON
