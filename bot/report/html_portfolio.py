"""The sections of a multi-market run's ``report.html``: the portfolio page, then each market.

Portfolio: summary, markets table, equity and drawdown of the portfolio curve against the
allocation-weighted buy & hold, each market's contribution to PnL, monthly returns. Then per
market (ids end in the lower-case symbol): price and trades, position and exposure, trades, and
the market's strategy's own section (its spec's report section, else the generic one).
"""

from __future__ import annotations

from html import escape

from bot.report import tables
from bot.report import theme as th
from bot.report.analysis import marker_fills
from bot.report.blocks import Section, no_bars, strategy_section, tail_sections
from bot.report.data import ReportData
from bot.report.figures import equity_figure, monthly_figure, price_figure
from bot.report.figures_faith import faith_section
from bot.report.figures_portfolio import contribution_figure, market_colour, position_figure
from bot.report.portfolio import PortfolioData

MARKET_CARDS = ["net_pnl", "n_trades", "win_rate", "fees", "exposure_time", "buy_and_hold_return"]


def market_slug(symbol: str) -> str:
    return symbol.lower()


def plan_portfolio(p: PortfolioData, t: th.Theme) -> list[Section]:
    """The portfolio page's sections, then every market's, in config order."""
    secs = [Section("summary", "Portfolio summary", tables.headline_cards(p.summary) + tables.metrics_table(p.summary),
                    nav="Portfolio"),
            Section("markets", f"Markets ({len(p.markets)})", tables.markets_table(p.lines), nav="Markets",
                    note="Each market's own figures; equity-curve figures (return, Sharpe, drawdown) are the "
                         "portfolio's, above.")]
    if p.has_bars:
        bench = "allocation-weighted buy & hold"
        secs.append(Section("equity", "Portfolio equity and drawdown", figures={"fig-equity": equity_figure(
            p, t, p.benchmark, "portfolio equity", bench)}, nav="Equity"))  # type: ignore[arg-type]
        secs.append(Section("contribution", "Contribution to PnL by market",
                            figures={"fig-contribution": contribution_figure(p, t)}, nav="Contribution",
                            note="The cash each market's fills moved plus its position at its own close; "
                                 "the markets add up to the portfolio's PnL."))
        secs.append(Section("monthly", "Monthly returns", figures={
            "fig-monthly": monthly_figure(p, t)}))  # type: ignore[arg-type]
    else:
        secs.append(Section("equity", "Portfolio equity and drawdown", no_bars("equity curve")))
    for i, d in enumerate(p.data):
        secs.extend(market_sections(d, t, i))
    secs.extend(tail_sections(p))
    return secs


def market_sections(d: ReportData, t: th.Theme, i: int) -> list[Section]:
    """One market's part of the page; its figure and table ids end in ``-<symbol>``."""
    sym = str(d.run["symbol"])
    s = market_slug(sym)
    head = (tables.headline_cards(d.summary, MARKET_CARDS) + tables.metrics_table(d.summary, f"metrics-{s}"))
    title = f"{sym} · {d.run['strategy']} {d.run['timeframe']}"
    if not d.has_bars:
        return [Section(f"market-{s}", title, head + no_bars("price"), market=sym, nav=sym),
                Section(f"trades-{s}", f"{sym} trades ({len(d.trades):,})", tables.trades_table(d, f"trades-table-{s}"),
                        market=sym, nav="")]
    n_fills, shown = len(d.fills), len(marker_fills(d))
    what = f"{n_fills:,} fills" + (f"; marked: the {shown:,} entries, exits and flips" if shown < n_fills else "")
    alloc = d.summary.get("allocation")
    share = f"allocation {alloc * 100:.0f}% of the portfolio's equity. " if isinstance(alloc, int | float) else ""
    secs = [Section(f"market-{s}", title, head, figures={f"fig-price-{s}": price_figure(d, t)}, market=sym, nav=sym,
                    note=f"{share}{what}. Hover a marker for the decision behind it."),
            Section(f"position-{s}", f"{sym} position and exposure",
                    figures={f"fig-position-{s}": position_figure(d, t, market_colour(i))}, market=sym, nav=""),
            Section(f"trades-{s}", f"{sym} trades ({len(d.trades):,})", tables.trades_table(d, f"trades-table-{s}"),
                    market=sym, nav="")]
    model = strategy_section(d, t)
    model.id = f"{model.id}-{s}"
    model.title = f"{sym} · {model.title}"
    model.figures = {f"{fid}-{s}": fig for fid, fig in model.figures.items()}
    model.market, model.nav = sym, ""
    secs.append(model)
    if (faith := faith_section(d, t, f"-{s}")) is not None:
        faith.title, faith.market, faith.nav = f"{sym} · {faith.title}", sym, ""
        secs.append(faith)
    return secs


def portfolio_header(p: PortfolioData) -> str:
    """The page title of a multi-market run: its markets with their strategies."""
    return " · ".join(f"{escape(m.symbol)} {escape(m.strategy)} {escape(m.timeframe)}" for m in p.markets)
