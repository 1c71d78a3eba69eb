"""Plotly figures of a multi-market run: each market's PnL contribution, a market's position."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bot.report import theme as th
from bot.report.analysis import union_idx
from bot.report.data import ReportData
from bot.report.figures import styled
from bot.report.figures_models import change_points
from bot.report.portfolio import PortfolioData

#: One colour per market, in config order (the strategy blue is the portfolio's).
MARKET_COLOURS = [th.FAST, th.SLOW, th.LEVEL, "#14b8a6", "#ec4899", "#84cc16", "#f97316", "#64748b"]


def market_colour(i: int) -> str:
    return MARKET_COLOURS[i % len(MARKET_COLOURS)]


def contribution_figure(p: PortfolioData, t: th.Theme) -> go.Figure:
    """Each market's PnL so far (its fills' cash plus its position at its close) and their sum."""
    c = p.contribution
    total = c.sum(axis=1).to_numpy()
    idx = union_idx(total, *(c[s].to_numpy() for s in c.columns))
    x = p.equity["dt"].to_numpy()[idx]
    fig = go.Figure()
    for i, sym in enumerate(c.columns):
        fig.add_trace(go.Scatter(x=x, y=c[sym].to_numpy()[idx], name=sym, hovertemplate="%{y:,.2f}",
                                 line={"color": market_colour(i), "width": 1.8}))
    fig.add_trace(go.Scatter(x=x, y=total[idx], name="portfolio PnL", line={"color": th.STRATEGY, "width": 2.2,
                                                                            "dash": "dot"},
                             hovertemplate="%{y:,.2f}"))
    styled(fig, t, "Contribution to PnL: each market's fills and position marked at its close", 440)
    fig.update_yaxes(title_text="PnL", tickformat=",.0f", zeroline=True)
    return fig


def position_figure(d: ReportData, t: th.Theme, colour: str = th.LEVEL) -> go.Figure:
    """The market's position (quantity) and its value as a share of the portfolio's equity."""
    eq = d.equity
    pos = eq["position"].to_numpy()
    equity = eq["equity"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        exposure = np.where(equity > 0, pos * eq["price"].to_numpy() / equity, np.nan)
    steps = change_points(pos)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.5, 0.5], vertical_spacing=0.07)
    fig.add_trace(go.Scatter(x=eq["dt"].to_numpy()[steps], y=pos[steps], name="position", line_shape="hv",
                             line={"color": colour, "width": 1.6}, hovertemplate="%{y:g}"), row=1, col=1)
    idx = union_idx(np.nan_to_num(exposure))
    fig.add_trace(go.Scatter(x=eq["dt"].to_numpy()[idx], y=exposure[idx], name="exposure", fill="tozeroy",
                             line={"color": th.STRATEGY, "width": 1.2}, hovertemplate="%{y:.1%}"), row=2, col=1)
    styled(fig, t, f"{d.run['symbol']} position and exposure (position value / portfolio equity)", 420)
    fig.update_yaxes(title_text="quantity", row=1, col=1)
    fig.update_yaxes(title_text="exposure", tickformat=".0%", row=2, col=1)
    return fig
