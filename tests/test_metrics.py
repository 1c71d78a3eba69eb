"""Metrics against hand-computed values; annualisation follows the bar frequency."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bot.metrics import ANNUALISED, bars_per_year, can_annualise, compute_metrics

HOUR = 3_600_000
DAY = 24 * HOUR


def test_bars_per_year_follows_the_timeframe() -> None:
    assert bars_per_year(HOUR) == pytest.approx(8760)
    assert bars_per_year(DAY) == pytest.approx(365)


def test_known_curve() -> None:
    eq = [110.0, 99.0, 108.9]
    m = compute_metrics(equity=eq, positions=[1, 1, 0], prices=[10, 9, 11], trade_pnls=[15.0, -5.0],
                        fees=1.5, initial_cash=100.0, bar_ms=DAY)
    assert m["total_return"] == pytest.approx(0.089)
    assert m["max_drawdown"] == pytest.approx(0.1)
    assert m["win_rate"] == 0.5 and m["profit_factor"] == pytest.approx(3.0)
    assert m["avg_trade_pnl"] == pytest.approx(5.0)
    assert m["exposure_time"] == pytest.approx(2 / 3)
    assert m["buy_and_hold_return"] == pytest.approx(0.1)
    assert m["fees"] == 1.5 and m["n_trades"] == 2


def test_known_curve_long_enough_to_annualise() -> None:
    rets = np.tile([0.1, -0.1, 0.1], 10)  # 30 daily bars: +10%, -10%, +10%, ...
    eq = list(100.0 * np.cumprod(1 + rets))
    m = compute_metrics(equity=eq, positions=[1] * 30, prices=[1] * 30, trade_pnls=[], fees=0,
                        initial_cash=100.0, bar_ms=DAY)
    assert m["sharpe"] == pytest.approx(rets.mean() / rets.std(ddof=1) * math.sqrt(365))
    assert m["sortino"] == pytest.approx(rets.mean() / math.sqrt(0.01 / 3) * math.sqrt(365))
    assert m["volatility"] == pytest.approx(rets.std(ddof=1) * math.sqrt(365))
    assert m["cagr"] == pytest.approx((eq[-1] / 100.0) ** (365 / 30) - 1)


@pytest.mark.parametrize(("bars", "bar_ms"), [(3, DAY), (29, DAY), (27, HOUR), (719, HOUR), (1, DAY)])
def test_too_short_to_annualise_is_none(bars: int, bar_ms: int) -> None:
    """Under 30 days of bars there is no honest yearly figure: 27 hourly bars up 4 % would
    'compound' to a CAGR of millions of percent and a Sharpe in the tens."""
    eq = list(100.0 * np.cumprod(1 + np.tile([0.004, -0.001], bars)[:bars]))
    m = compute_metrics(equity=eq, positions=[1] * bars, prices=[1] * bars, trade_pnls=[1.0, -0.5], fees=0,
                        initial_cash=100.0, bar_ms=bar_ms)
    assert not can_annualise(bars, bar_ms)
    assert {k: m[k] for k in ANNUALISED} == dict.fromkeys(ANNUALISED)
    assert m["total_return"] == pytest.approx(eq[-1] / 100 - 1) and m["max_drawdown"] >= 0  # not annualised: kept
    assert m["win_rate"] == 0.5


@pytest.mark.parametrize(("bars", "bar_ms"), [(30, DAY), (720, HOUR), (8640, 5 * 60_000)])
def test_thirty_days_are_enough(bars: int, bar_ms: int) -> None:
    eq = list(100.0 * np.cumprod(1 + np.tile([0.004, -0.001], bars)[:bars]))
    m = compute_metrics(equity=eq, positions=[1] * bars, prices=[1] * bars, trade_pnls=[], fees=0,
                        initial_cash=100.0, bar_ms=bar_ms)
    assert can_annualise(bars, bar_ms)
    assert all(isinstance(m[k], float) for k in ANNUALISED)


def test_same_returns_hourly_vs_daily_annualise_differently() -> None:
    eq = list(100 * np.cumprod(1 + np.tile([0.01, -0.005], 400)))
    h = compute_metrics(equity=eq, positions=[1] * 800, prices=[1] * 800, trade_pnls=[], fees=0,
                        initial_cash=100, bar_ms=HOUR)
    d = compute_metrics(equity=eq, positions=[1] * 800, prices=[1] * 800, trade_pnls=[], fees=0,
                        initial_cash=100, bar_ms=DAY)
    assert h["sharpe"] / d["sharpe"] == pytest.approx(math.sqrt(24))


def test_empty_and_no_losses() -> None:
    m = compute_metrics(equity=[], positions=[], prices=[], trade_pnls=[1.0], fees=0, initial_cash=10, bar_ms=HOUR)
    assert m["total_return"] == 0 and m["sharpe"] is None and m["cagr"] is None
    assert m["profit_factor"] is None  # no losing trade: infinite, reported as null in JSON
    assert m["win_rate"] == 1.0


def test_no_closed_trade_has_no_win_rate_or_profit_factor() -> None:
    eq = list(np.linspace(100, 110, 800))
    m = compute_metrics(equity=eq, positions=[1] * 800, prices=[1] * 800, trade_pnls=[], fees=0,
                        initial_cash=100, bar_ms=HOUR)
    assert m["n_trades"] == 0
    assert m["win_rate"] is None and m["profit_factor"] is None and m["avg_trade_pnl"] is None
    assert m["sharpe"] is not None  # 33 days: annualised all the same
    losing = compute_metrics(equity=eq, positions=[1] * 800, prices=[1] * 800, trade_pnls=[-1.0], fees=0,
                             initial_cash=100, bar_ms=HOUR)
    assert losing["win_rate"] == 0.0 and losing["profit_factor"] == 0.0
