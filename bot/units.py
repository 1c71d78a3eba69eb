"""How a run's figures are shown to people: one unit for each, everywhere.

Summaries (``bot backtest --json``, ``bot journal summary --format json|csv``, the journal's
``runs.summary``) hold returns, drawdown, exposure, win rate and allocation as **fractions**
(0.05 = 5 %); every table a person reads (``bot backtest``, ``bot journal summary``, ``bot
journal runs|trades``, the HTML report and its PNGs) shows them as **percent**, through
:func:`format_metric`. A figure that cannot be computed (an annualised figure of a run too short
to annualise, a win rate without closed trades: :mod:`bot.metrics`) is ``None`` in JSON and
``n/a`` here.
"""

from __future__ import annotations

from typing import Any

#: Keys whose values are fractions, shown as percent.
PERCENT = frozenset({"total_return", "buy_and_hold_return", "cagr", "max_drawdown", "win_rate", "exposure_time",
                     "volatility", "allocation", "return_pct"})
#: Percentages shown with their sign (a gain or a loss).
SIGNED = frozenset({"total_return", "buy_and_hold_return", "cagr", "return_pct"})
#: Amounts of the quote coin, two decimals.
MONEY = frozenset({"initial_equity", "final_equity", "avg_trade_pnl", "fees", "funding_paid", "net_pnl", "realized_pnl",
                   "gross_pnl", "equity", "cash"})
RATIO = frozenset({"sharpe", "sortino", "profit_factor"})
NA = "n/a"


def format_metric(key: str, v: Any) -> str:
    """``v`` (the value of summary key ``key``) as text for a person."""
    if v is None:
        return NA
    if isinstance(v, bool | str):
        return str(v)
    if not isinstance(v, int | float):  # a Decimal amount is shown like a float, anything else as it is
        if key not in PERCENT | MONEY | RATIO:
            return str(v)
        try:
            v = float(v)
        except (TypeError, ValueError):
            return str(v)
    if key in PERCENT:
        return f"{v * 100:+.2f}%" if key in SIGNED else f"{v * 100:.2f}%"
    if key in MONEY:
        return f"{v:,.2f}"
    if key in RATIO:
        return f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.4f}" if abs(v) < 100 else f"{v:,.2f}"
