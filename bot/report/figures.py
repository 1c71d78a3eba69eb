"""Plotly figures of the run itself: equity vs buy-and-hold with drawdown, price with the trades,
monthly returns. Model sections live in :mod:`bot.report.figures_models`."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bot.report import theme as th
from bot.report.analysis import buy_and_hold, drawdown, marker_fills, monthly_returns, union_idx
from bot.report.data import ReportData
from bot.report.reasons import fmt_time

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def styled(fig: go.Figure, t: th.Theme, title: str, height: int) -> go.Figure:
    """Apply the report theme, a title and a height to a figure."""
    fig.update_layout(**th.plotly_layout(t), height=height, title_text=title, hovermode="x unified")
    fig.update_xaxes(**th.plotly_axis(t))
    fig.update_yaxes(**th.plotly_axis(t))
    return fig


def equity_figure(d: ReportData, t: th.Theme, bh: np.ndarray | None = None, name: str = "",
                  bh_name: str = "buy & hold") -> go.Figure:
    """Equity over the benchmark (default: buy & hold of the run's market), drawdown below."""
    eq = d.equity["equity"].to_numpy()
    bh = buy_and_hold(d) if bh is None else bh
    dd = drawdown(eq, d.initial_cash)
    idx = union_idx(eq, bh, dd)
    x = d.equity["dt"].to_numpy()[idx]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.05)
    fig.add_trace(go.Scatter(x=x, y=bh[idx], name=bh_name, line={"color": th.BENCHMARK, "width": 1.5},
                             hovertemplate="%{y:,.2f}"), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=eq[idx], name=name or f"{d.run['strategy']} equity",
                             line={"color": th.STRATEGY, "width": 2.2}, hovertemplate="%{y:,.2f}"), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=-dd[idx], name="drawdown", fill="tozeroy", line={"color": th.DRAWDOWN, "width": 1},
                             fillcolor="rgba(225,29,72,0.25)", hovertemplate="%{y:.2%}"), row=2, col=1)
    styled(fig, t, f"Equity vs {bh_name}", 520)
    fig.update_yaxes(title_text="equity", tickformat=",.0f", row=1, col=1)
    fig.update_yaxes(title_text="drawdown", tickformat=".0%", row=2, col=1)
    return fig


def _marker_text(d: ReportData, row: Any) -> str:
    lines = [f"<b>{row.side} {row.action}</b> {row.qty:g} @ {row.price:,.2f}",
             f"filled {fmt_time(row.time)} UTC"]
    dec = d.decision_by_id.get(row.decision_id) if row.decision_id else None
    if dec is not None:
        tgt = "-" if dec.get("target") is None else f"{dec['target']:+.2f}"
        conf = "-" if dec.get("confidence") is None else f"{dec['confidence']:.2f}"
        lines.append(f"decision bar {fmt_time(dec['bar_time'])} · target {tgt} · confidence {conf}")
        lines.extend(d.why(dec, 3))
    return "<br>".join(lines)


def price_figure(d: ReportData, t: th.Theme) -> go.Figure:
    px = d.equity["price"].to_numpy()
    idx = union_idx(px)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=d.equity["dt"].to_numpy()[idx], y=px[idx], name="close",
                             line={"color": t.price, "width": 1.2}, hovertemplate="%{y:,.2f}<extra>close</extra>"))
    f = marker_fills(d)
    size = 11 if len(f) <= 100 else 9 if len(f) <= 400 else 7
    for side, colour, symbol in (("Buy", th.BUY, "triangle-up"), ("Sell", th.SELL, "triangle-down")):
        rows = f[f["side"] == side]
        if rows.empty:
            continue
        fig.add_trace(go.Scatter(
            x=rows["dt"].to_numpy(), y=rows["price"].to_numpy(), mode="markers", name=f"{side.lower()} ({len(rows)})",
            marker={"symbol": symbol, "size": size, "color": colour, "line": {"width": 0.8, "color": t.card}},
            text=[_marker_text(d, r) for r in rows.itertuples(index=False)],
            hovertemplate="%{text}<extra></extra>",
        ))
    styled(fig, t, f"{d.run['symbol']} {d.run['timeframe']} close with entries and exits", 480)
    fig.update_layout(hovermode="closest")
    fig.update_yaxes(title_text="price", tickformat=",.0f")
    fig.update_xaxes(range=[d.equity["dt"].iloc[0], d.equity["dt"].iloc[-1]])
    return fig


def pct_cell(v: float) -> str:
    """A heatmap cell: signed percent, blank where there were no bars, never '-0.0%'."""
    if not np.isfinite(v):
        return ""
    return "0.0%" if abs(v) < 0.0005 else f"{v:+.1%}"


def monthly_figure(d: ReportData, t: th.Theme) -> go.Figure:
    table = monthly_returns(d)
    z = table.to_numpy(dtype=np.float64)
    months = z[:, :12]
    lim = float(np.nanmax(np.abs(months))) if np.isfinite(months).any() else 0.01
    lim = max(lim, 1e-4)
    text = [[pct_cell(v) for v in row] for row in z]
    fig = go.Figure(go.Heatmap(
        z=z, x=[*MONTHS, "Year"], y=[str(y) for y in table.index], text=text, texttemplate="%{text}",
        textfont={"size": 12}, colorscale=t.diverging, zmid=0, zmin=-lim, zmax=lim, xgap=3, ygap=3,
        showscale=False, hovertemplate="%{y} %{x}: %{z:+.2%}<extra></extra>",
    ))
    styled(fig, t, "Monthly returns (UTC months; the last column compounds the year)", 170 + 52 * max(1, len(table)))
    fig.update_layout(hovermode="closest")
    fig.update_yaxes(autorange="reversed", type="category", showgrid=False, ticks="")
    fig.update_xaxes(side="top", showgrid=False, ticks="", showline=False)
    fig.update_layout(margin={"t": 96, "b": 16})
    return fig
