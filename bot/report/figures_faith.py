"""The faithfulness section, drawn: plotly for report.html, matplotlib for faithfulness.png."""

from __future__ import annotations

from html import escape

import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure
from plotly.subplots import make_subplots

from bot.report import theme as th
from bot.report.blocks import Section
from bot.report.data import ReportData
from bot.report.faith import FaithView, faith_view
from bot.report.figures import styled
from bot.report.png_figures import new_figure, title

KEY = "faithfulness"
TITLE = "Faithfulness: can the attribution be trusted, and does it tell winners from losers?"


def _deletion_bars(v: FaithView) -> tuple[list[str], list[tuple[str, list[float], str]]]:
    names = [x.method for x in v.deletion]
    series = [("its top-k older candles", [x.top_k for x in v.deletion], th.STRATEGY),
              ("k random older candles", [x.random_k for x in v.deletion], th.BENCHMARK),
              ("the newest bar alone", [x.newest or 0.0 for x in v.deletion], th.FAST)]
    return names, series


def faith_figures(d: ReportData, v: FaithView, t: th.Theme) -> dict[str, go.Figure]:
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=(
        f"Deletion test: drop of {v.target or 'the output'} when masking", "Winners vs losers: mean signed share"))
    names, series = _deletion_bars(v)
    for label, ys, colour in series:
        fig.add_trace(go.Bar(x=names, y=ys, name=label, marker={"color": colour},
                             hovertemplate="%{x}: %{y:.4g}<extra>" + label + "</extra>"), row=1, col=1)
    w = v.winloss
    if w.steps_win is not None and w.steps_loss is not None:
        lags = np.arange(-len(w.steps_win), 0)
        fig.add_trace(go.Scatter(x=lags, y=w.steps_win, name=f"winning entries (n={w.n_win})",
                                 line={"color": th.GAIN}), row=1, col=2)
        fig.add_trace(go.Scatter(x=lags, y=w.steps_loss, name=f"losing entries (n={w.n_loss})",
                                 line={"color": th.LOSS}), row=1, col=2)
    styled(fig, t, "Faithfulness of the stored attribution, and winners vs losers", 460)
    fig.update_layout(barmode="group", hovermode="closest", margin={"t": 70, "b": 100},
                      legend={"y": -0.2, "yanchor": "top"})
    fig.update_yaxes(title_text="drop (validation windows)", row=1, col=1)
    fig.update_xaxes(title_text="bars before the decision (older steps)", row=1, col=2)
    sign = f"+ = toward {v.toward}" if v.toward else "unsigned"
    fig.update_yaxes(title_text=f"share ({sign})", zeroline=True, row=1, col=2)
    figs = {"fig-faith": fig}
    if w.feats_win is not None and w.feats_loss is not None:
        feats = go.Figure([go.Bar(x=w.features, y=w.feats_win, name="winning entries", marker={"color": th.GAIN}),
                           go.Bar(x=w.features, y=w.feats_loss, name="losing entries", marker={"color": th.LOSS})])
        styled(feats, t, f"Mean signed feature share at entry ({sign})", 380)
        feats.update_layout(barmode="group")
        figs["fig-faith-features"] = feats
    return figs


def faith_section(d: ReportData, t: th.Theme, suffix: str = "") -> Section | None:
    """The section (None when no decision carries a contract attribution)."""
    v = faith_view(d)
    if v is None:
        return None
    body = f'<p class="note">{escape(v.note)}</p><p class="note">{escape(v.winloss.sentence)}</p>'
    figs = {f"{k}{suffix}": f for k, f in faith_figures(d, v, t).items()}
    return Section(f"{KEY}{suffix}", TITLE, body, figs)


def faith_png(d: ReportData, t: th.Theme) -> Figure | None:
    """faithfulness.png (None when the run has no contract attribution)."""
    v = faith_view(d)
    if v is None:
        return None
    fig = new_figure(t, bottom=0.2)
    title(fig, d, "Faithfulness", t)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    names, series = _deletion_bars(v)
    x = np.arange(len(names))
    for i, (label, ys, colour) in enumerate(series):
        left.bar(x + (i - 1) * 0.27, ys, width=0.27, color=colour, label=label)
    left.set_xticks(x, names)
    left.set_title(f"Deletion test: drop of {v.target or 'the output'} when masking")
    left.legend(loc="upper right")
    w = v.winloss
    if w.steps_win is not None and w.steps_loss is not None:
        lags = np.arange(-len(w.steps_win), 0)
        right.plot(lags, w.steps_win, color=th.GAIN, label=f"winning entries (n={w.n_win})")
        right.plot(lags, w.steps_loss, color=th.LOSS, label=f"losing entries (n={w.n_loss})")
        right.legend(loc="upper left")
    right.axhline(0, color=t.muted, lw=0.8)
    right.set_title("Winners vs losers: mean signed share per older bar")
    fig.text(0.5, 0.04, v.winloss.sentence, ha="center", wrap=True, color=t.text, fontsize=10)
    return fig
