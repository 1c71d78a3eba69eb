"""PNGs of a multi-market run: the portfolio page's figures, then each market's price and section.

Names: summary, equity, contribution, monthly (the portfolio), then ``price-<symbol>`` and
``<section key>-<symbol>`` per market (symbol in lower case), each ``PNG_SIZE`` pixels.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from bot.report import theme as th
from bot.report.figures_portfolio import market_colour
from bot.report.png_figures import date_axis, equity_png, monthly_png, naive, new_figure, price_png, summary_png, title
from bot.report.png_models import model_png
from bot.report.portfolio import PortfolioData


def contribution_png(p: PortfolioData, t: th.Theme) -> Figure:
    """Each market's PnL so far and the portfolio's (their sum)."""
    fig = new_figure(t)
    title(fig, p, "Contribution to PnL by market", t)  # type: ignore[arg-type]
    ax = fig.add_subplot()
    x = naive(p.equity["dt"])
    for i, sym in enumerate(p.contribution.columns):
        ax.plot(x, p.contribution[sym].to_numpy(), color=market_colour(i), lw=1.6, label=sym)
    ax.plot(x, p.contribution.sum(axis=1).to_numpy(), color=th.STRATEGY, lw=2.0, ls=":", label="portfolio PnL")
    ax.axhline(0, color=t.muted, lw=0.8)
    ax.set_ylabel("PnL")
    ax.legend(loc="upper left", ncols=len(p.contribution.columns) + 1)
    date_axis(ax)
    return fig


def portfolio_pngs(p: PortfolioData, t: th.Theme) -> dict[str, Figure | None]:
    """Every PNG of a multi-market run by file name (without .png)."""
    figs: dict[str, Figure | None] = {"summary": summary_png(p, t)}  # type: ignore[arg-type]
    if p.has_bars:
        figs["equity"] = equity_png(p, t, p.benchmark, "portfolio equity",  # type: ignore[arg-type]
                                    "allocation-weighted buy & hold")
        figs["contribution"] = contribution_png(p, t)
        figs["monthly"] = monthly_png(p, t)  # type: ignore[arg-type]
    for d in p.data:
        s = str(d.run["symbol"]).lower()
        if d.has_bars:
            figs[f"price-{s}"] = price_png(d, t)
        figs[f"{d.section.key}-{s}"] = model_png(d, t)
    return figs
