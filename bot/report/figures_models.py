"""Plotly figures of the strategies' report sections, drawn from :mod:`bot.report.models` views."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bot.report import theme as th
from bot.report.analysis import decimate_idx, union_idx
from bot.report.data import ReportData
from bot.report.figures import styled
from bot.report.models import DSCView, GenericView, RolloutView, SizerView, SMAView


def change_points(y: np.ndarray) -> np.ndarray:
    """Indices where a step series changes (plus the ends): exact for a step ('hv') line."""
    if not len(y):
        return np.arange(0)
    ch = np.flatnonzero(np.diff(y) != 0) + 1
    return np.unique(np.concatenate(([0], ch, [len(y) - 1])))


def clip_range(m: np.ndarray) -> tuple[float, float]:
    """Colour range of a heatmap: the 3rd..97th percentile, so one dominant lag (often the last
    bar, through the residual path) does not flatten every other row into one colour."""
    if not m.size:
        return 0.0, 1.0
    lo, hi = float(np.quantile(m, 0.03)), float(np.quantile(m, 0.97))
    return (lo, hi) if hi > lo else (float(m.min()), float(m.max()) + 1e-9)


def rollout_figures(d: ReportData, v: RolloutView, t: th.Theme) -> dict[str, go.Figure]:
    # Top: mean attribution per lag. Bottom: winners minus losers, the part a trader acts on (the
    # means are often dominated by the same few lags, e.g. the residual weight on the last bar).
    bars = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.62, 0.38], vertical_spacing=0.06)
    bars.add_trace(go.Scatter(x=v.lags, y=v.all_mean, name=f"all decisions (n={v.n_all})", mode="lines",
                              line={"color": th.BENCHMARK, "width": 1.5, "dash": "dot"}, hovertemplate="%{y:.4f}"),
                   row=1, col=1)
    if v.win_mean is not None:
        bars.add_trace(go.Scatter(x=v.lags, y=v.win_mean, name=f"winning trades (n={v.n_win})", mode="lines",
                                  line={"color": th.GAIN, "width": 2.2}, hovertemplate="%{y:.4f}"), row=1, col=1)
    if v.loss_mean is not None:
        bars.add_trace(go.Scatter(x=v.lags, y=v.loss_mean, name=f"losing trades (n={v.n_loss})", mode="lines",
                                  line={"color": th.LOSS, "width": 2.2}, hovertemplate="%{y:.4f}"), row=1, col=1)
    diff = v.diff
    if diff is not None:
        bars.add_trace(go.Bar(x=v.lags, y=diff, name="winners − losers", showlegend=False,
                              marker={"color": np.where(diff >= 0, th.GAIN, th.LOSS)},
                              hovertemplate="winners − losers: %{y:+.4f}<extra></extra>"), row=2, col=1)
    else:
        bars.add_annotation(text="needs both winning and losing trades with an attribution", showarrow=False,
                            xref="x2 domain", yref="y2 domain", x=0.5, y=0.5, font={"color": t.muted, "size": 13})
    styled(bars, t, "Mean attention-rollout attribution at entry: winning vs losing trades", 520)
    bars.update_xaxes(title_text="bars before the decision (0 = decision bar)", row=2, col=1)
    bars.update_yaxes(title_text="attribution", row=1, col=1)
    bars.update_yaxes(title_text="winners − losers", zeroline=True, row=2, col=1)
    # Colours capped at a high percentile: one dominant lag must not flatten every other row.
    lo, hi = clip_range(v.heat)
    heat = go.Figure(go.Heatmap(
        z=v.heat.T, x=v.heat_dt, y=v.lags, colorscale=t.sequential, zmin=lo, zmax=hi,
        colorbar={"thickness": 12, "title": {"text": "weight<br>(p3–p97)", "side": "top"}},
        hovertemplate="%{x|%Y-%m-%d %H:%M}<br>lag %{y}: %{z:.4f}<extra></extra>",
    ))
    styled(heat, t, "Attribution over time (each column: one decision, or the mean of a bucket)", 420)
    heat.update_layout(hovermode="closest")
    heat.update_yaxes(title_text="lag (bars)", showgrid=False)
    heat.update_xaxes(showgrid=False)
    return {"fig-rollout-attribution": bars, "fig-rollout-heatmap": heat}


def dsc_figures(d: ReportData, v: DSCView, t: th.Theme) -> dict[str, go.Figure]:
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        "Confidence by signal", f"Next-bar calibration ({v.n_scored} decisions, equal-count bins)"))
    for sig, vals in sorted(v.confidence.items()):
        fig.add_trace(go.Histogram(x=vals, name=sig, xbins={"start": 0, "end": 1, "size": 0.05},
                                   marker={"color": th.SIGNAL_COLOURS.get(sig, th.BENCHMARK)},
                                   hovertemplate="%{x}: %{y}<extra>" + sig + "</extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                             line={"color": t.muted, "dash": "dot", "width": 1}, hoverinfo="skip"), row=1, col=2)
    for c in v.curves:
        colour = th.UP if c.label == "up" else th.DOWN
        fig.add_trace(go.Scatter(
            x=c.predicted, y=c.realised, mode="lines+markers", name=f"p({c.label}) · Brier {c.brier:.3f}",
            line={"color": colour, "width": 2}, marker={"size": 4 + 10 * np.sqrt(c.count / max(c.count.max(), 1))},
            customdata=c.count,
            hovertemplate="predicted %{x:.2f}<br>realised %{y:.2f}<br>n=%{customdata}<extra></extra>",
        ), row=1, col=2)
    styled(fig, t, "Confidence per signal, and next-bar calibration of p(up) / p(down)", 480)
    # Legend under the plots: above them it would collide with the two subplot titles.
    fig.update_layout(barmode="stack", bargap=0.08, hovermode="closest", margin={"t": 70, "b": 100},
                      legend={"traceorder": "normal", "y": -0.2, "yanchor": "top"})
    fig.update_xaxes(title_text="confidence", range=[0, 1], row=1, col=1)
    fig.update_yaxes(title_text="decisions", row=1, col=1)
    fig.update_xaxes(title_text="predicted probability", range=[0, 1], row=1, col=2)
    fig.update_yaxes(title_text="realised frequency", range=[0, 1], row=1, col=2)
    for a in fig.layout.annotations:
        a.font = {"color": t.text, "size": 13}
    return {"fig-dsc": fig}


def sizer_figures(d: ReportData, v: SizerView, t: th.Theme) -> dict[str, go.Figure]:
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.6, 0.4], vertical_spacing=0.05)
    px = d.equity["price"].to_numpy()
    idx = union_idx(px)
    fig.add_trace(go.Scatter(x=d.equity["dt"].to_numpy()[idx], y=px[idx], name="close",
                             line={"color": t.price, "width": 1.2}, hovertemplate="%{y:,.2f}"), row=1, col=1)
    ci = change_points(v.level)
    fig.add_trace(go.Scatter(x=v.dt[ci], y=v.level[ci], name="position level", line_shape="hv",
                             line={"color": th.LEVEL, "width": 2}, fill="tozeroy", fillcolor="rgba(14,165,233,0.15)",
                             text=[v.regime[i] for i in ci], hovertemplate="level %{y:.0f} · %{text}"), row=2, col=1)
    styled(fig, t, "GRU sizer: position level (0-10) against price", 520)
    fig.update_yaxes(title_text="price", tickformat=",.0f", row=1, col=1)
    fig.update_yaxes(title_text="level", range=[-0.3, 10.5], dtick=2, row=2, col=1)
    return {"fig-gru-sizer": fig}


#: The SMA chart opens on the last this-many bars at full resolution (double-click: the whole run).
SMA_ZOOM_BARS = 720


def sma_figures(d: ReportData, v: SMAView, t: th.Theme) -> dict[str, go.Figure]:
    fig = go.Figure()
    x = d.equity["dt"].to_numpy()
    px = d.equity["price"].to_numpy()
    n = len(px)
    series = [px] + ([v.fast, v.slow] if len(v.fast) else [])
    zoom = n > SMA_ZOOM_BARS
    idx = union_idx(*series)
    if zoom:
        idx = np.union1d(idx, np.arange(n - SMA_ZOOM_BARS, n))
    fig.add_trace(go.Scatter(x=x[idx], y=px[idx], name="close", line={"color": t.price, "width": 1},
                             opacity=0.7, hovertemplate="%{y:,.2f}"))
    if len(v.fast):
        fig.add_trace(go.Scatter(x=x[idx], y=v.fast[idx], name=f"fast SMA({v.fast_n})",
                                 line={"color": th.FAST, "width": 2}, hovertemplate="%{y:,.2f}"))
        fig.add_trace(go.Scatter(x=x[idx], y=v.slow[idx], name=f"slow SMA({v.slow_n})",
                                 line={"color": th.SLOW, "width": 2}, hovertemplate="%{y:,.2f}"))
    if len(v.cross_dt):
        fig.add_trace(go.Scatter(x=v.cross_dt, y=v.cross_fast, mode="markers", name="crossover (decision)",
                                 marker={"color": t.text, "size": 8, "symbol": "circle-open", "line": {"width": 2}},
                                 customdata=v.cross_slow,
                                 hovertemplate="fast %{y:,.2f}<br>slow %{customdata:,.2f}<extra>crossover</extra>"))
    names = f"SMA({v.fast_n}) and SMA({v.slow_n})" if v.fast_n else "The moving averages"
    where = f"the last {SMA_ZOOM_BARS} bars; double-click for the whole run" if zoom else "the whole run"
    styled(fig, t, f"{names} over the close ({where})", 460)
    fig.update_layout(hovermode="x unified")
    fig.update_yaxes(title_text="price", tickformat=",.0f")
    if zoom:
        lo, hi = float(np.nanmin(px[-SMA_ZOOM_BARS:])), float(np.nanmax(px[-SMA_ZOOM_BARS:]))
        pad = (hi - lo) * 0.05 or hi * 0.01
        fig.update_xaxes(range=[x[n - SMA_ZOOM_BARS], x[-1]])
        fig.update_yaxes(range=[lo - pad, hi + pad])
    return {"fig-sma": fig}


def target_steps(d: ReportData, v: GenericView) -> tuple[np.ndarray, np.ndarray]:
    """The decisions' target as a step line ('hv'): each change, held to the last journaled bar."""
    ci = change_points(v.target)
    x, y = v.dt.to_numpy()[ci], v.target[ci]
    if d.has_bars and d.equity["dt"].iloc[-1] > x[-1]:
        x, y = np.append(x, d.equity["dt"].to_numpy()[-1]), np.append(y, y[-1])
    return x, y


def generic_figures(d: ReportData, v: GenericView, t: th.Theme) -> dict[str, go.Figure]:
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, row_heights=[0.45, 0.33, 0.22], vertical_spacing=0.05)
    tx, ty = target_steps(d, v)
    fig.add_trace(go.Scatter(x=tx, y=ty, name="target (decisions)", line_shape="hv", opacity=0.85,
                             line={"color": th.FAST, "width": 3}, hovertemplate="%{y:+.2f}"), row=2, col=1)
    if d.has_bars:
        x, px = d.equity["dt"].to_numpy(), d.equity["price"].to_numpy()
        idx = union_idx(px, v.exposure)
        fig.add_trace(go.Scatter(x=x[idx], y=px[idx], name="close", line={"color": t.price, "width": 1.2},
                                 hovertemplate="%{y:,.2f}"), row=1, col=1)
        fig.add_trace(go.Scatter(x=x[idx], y=v.exposure[idx], name="actual exposure",
                                 line={"color": th.STRATEGY, "width": 1.2}, hovertemplate="%{y:+.2f}"), row=2, col=1)
    ok = np.flatnonzero(np.isfinite(v.confidence))
    ok = ok[decimate_idx(v.confidence[ok])] if len(ok) else ok
    fig.add_trace(go.Scatter(x=v.dt.to_numpy()[ok], y=v.confidence[ok], mode="markers", name="confidence",
                             marker={"size": 6, "color": np.where(v.target[ok] > 0, th.UP,
                                                                  np.where(v.target[ok] < 0, th.DOWN, th.FLAT))},
                             hovertemplate="confidence %{y:.2f}<extra></extra>"), row=3, col=1)
    styled(fig, t, "Target exposure of each decision against the exposure held, and the decisions' confidence", 560)
    fig.update_yaxes(title_text="price", tickformat=",.0f", row=1, col=1)
    fig.update_yaxes(title_text="exposure", zeroline=True, row=2, col=1)
    fig.update_yaxes(title_text="confidence", range=[-0.05, 1.05], row=3, col=1)
    return {"fig-generic": fig}
