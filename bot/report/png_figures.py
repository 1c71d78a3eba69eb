"""The report's PNG figures and their shared drawing helpers (matplotlib, Agg).

Every PNG is exactly ``PNG_SIZE`` pixels: a fixed figure size at a fixed dpi, no tight bbox.
Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas (no pyplot, no global
backend switch, nothing that needs a display).
"""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from matplotlib.ticker import FuncFormatter, PercentFormatter

from bot.report import tables
from bot.report import theme as th
from bot.report.analysis import buy_and_hold, drawdown, marker_fills, monthly_returns
from bot.report.data import ReportData
from bot.report.figures import MONTHS, pct_cell

DPI = 100
PNG_SIZE = (1600, 900)  # width, height in pixels


#: Fixed margins (fractions of the canvas). The canvas size never changes, so explicit margins
#: look the same as a constrained layout at half the drawing time.
MARGINS = {"left": 0.065, "right": 0.985, "top": 0.9, "bottom": 0.08, "hspace": 0.12, "wspace": 0.16}


def new_figure(t: th.Theme, **margins: float) -> Figure:
    """A figure of exactly PNG_SIZE pixels (call inside ``rc_context(matplotlib_rc(t))``)."""
    fig = Figure(figsize=(PNG_SIZE[0] / DPI, PNG_SIZE[1] / DPI), dpi=DPI)
    fig.subplots_adjust(**{**MARGINS, **margins})
    FigureCanvasAgg(fig)  # the Agg raster canvas: headless, no pyplot, no display
    return fig


def naive(dt: object) -> np.ndarray:
    """Timestamps (naive UTC, see :func:`bot.report.data.to_dt`) as numpy datetime64 for matplotlib."""
    return pd.DatetimeIndex(dt).to_numpy()


def date_axis(ax: Axes) -> None:
    loc = mdates.AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))


def thousands(ax: Axes) -> None:
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))


def title(fig: Figure, d: ReportData, what: str, t: th.Theme) -> None:
    r = d.run
    fig.suptitle(f"{what} · {r['strategy']} {r['symbol']} {r['timeframe']} · run {d.run_id} ({r['status']})",
                 x=MARGINS["left"], y=0.965, ha="left", fontsize=15, fontweight="bold", color=t.text)


def _tone_colour(key: str, v: object, t: th.Theme) -> str:
    tone = tables.tone(key, v)
    return th.GAIN if tone == "pos" else th.LOSS if tone == "neg" else t.text


def summary_png(d: ReportData, t: th.Theme) -> Figure:
    """Headline numbers on top, then every metric of the journal summary."""
    fig = new_figure(t, bottom=0.03)
    title(fig, d, "Summary", t)
    ax = fig.add_subplot()
    ax.axis("off")
    s = d.summary
    n = len(tables.HEADLINE)
    for i, k in enumerate(tables.HEADLINE):
        x = i / n
        ax.add_patch(FancyBboxPatch((x + 0.004, 0.8), 1 / n - 0.012, 0.17, boxstyle="round,pad=0,rounding_size=0.01",
                                    transform=ax.transAxes, facecolor=t.page, edgecolor=t.border))
        ax.text(x + 0.018, 0.93, tables.LABELS.get(k, k).upper(), color=t.muted, fontsize=11, transform=ax.transAxes)
        ax.text(x + 0.018, 0.84, tables.fmt_metric(k, s.get(k)), color=_tone_colour(k, s.get(k), t), fontsize=22,
                fontweight="bold", transform=ax.transAxes)
    items = list(s.items())
    half = (len(items) + 1) // 2
    for col, chunk in enumerate((items[:half], items[half:])):
        for row, (k, v) in enumerate(chunk):
            y = 0.74 - row * 0.74 / max(half, 1)
            ax.text(0.01 + col * 0.51, y, tables.LABELS.get(k, k), color=t.muted, fontsize=12, va="center",
                    transform=ax.transAxes)
            ax.text(0.48 + col * 0.51, y, tables.fmt_metric(k, v), color=_tone_colour(k, v, t), fontsize=12,
                    va="center", ha="right", transform=ax.transAxes, family="DejaVu Sans Mono")
    return fig


def equity_png(d: ReportData, t: th.Theme, bh: np.ndarray | None = None, name: str = "",
               bh_name: str = "buy & hold") -> Figure:
    fig = new_figure(t)
    title(fig, d, f"Equity vs {bh_name}", t)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    x = naive(d.equity["dt"])
    eq = d.equity["equity"].to_numpy()
    dd = drawdown(eq, d.initial_cash)
    top.plot(x, buy_and_hold(d) if bh is None else bh, color=th.BENCHMARK, lw=1.4, label=bh_name)
    top.plot(x, eq, color=th.STRATEGY, lw=2.0, label=name or f"{d.run['strategy']} equity")
    top.set_ylabel("equity")
    thousands(top)
    top.legend(loc="upper left", ncols=2)
    bottom.fill_between(x, -dd, 0, color=th.DRAWDOWN, alpha=0.3, lw=0)
    bottom.plot(x, -dd, color=th.DRAWDOWN, lw=1)
    bottom.set_ylabel("drawdown")
    bottom.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    date_axis(bottom)
    return fig


def price_png(d: ReportData, t: th.Theme) -> Figure:
    fig = new_figure(t)
    title(fig, d, "Close with entries and exits", t)
    ax = fig.add_subplot()
    ax.plot(naive(d.equity["dt"]), d.equity["price"].to_numpy(), color=t.price, lw=1.1, label="close")
    f = marker_fills(d)
    for side, colour, marker in (("Buy", th.BUY, "^"), ("Sell", th.SELL, "v")):
        rows = f[f["side"] == side]
        if not rows.empty:
            ax.scatter(naive(rows["dt"]), rows["price"].to_numpy(), marker=marker, s=70, color=colour,
                       edgecolors=t.card, linewidths=0.8, zorder=3, label=f"{side.lower()} ({len(rows)})")
    ax.set_ylabel("price")
    thousands(ax)
    ax.legend(loc="upper left", ncols=3)
    date_axis(ax)
    return fig


def monthly_png(d: ReportData, t: th.Theme) -> Figure:
    fig = new_figure(t, top=0.86, bottom=0.04)
    title(fig, d, "Monthly returns", t)
    ax = fig.add_subplot()
    table = monthly_returns(d)
    z = table.to_numpy(dtype=np.float64)
    months = z[:, :12]
    lim = max(float(np.nanmax(np.abs(months))) if np.isfinite(months).any() else 0.01, 1e-4)
    cmap = LinearSegmentedColormap.from_list("div", [c for _, c in t.diverging])
    ax.imshow(np.ma.masked_invalid(z), cmap=cmap, norm=TwoSlopeNorm(0.0, -lim, lim), aspect="auto")
    for (i, j), v in np.ndenumerate(z):
        if np.isfinite(v):
            ax.text(j, i, pct_cell(v), ha="center", va="center", fontsize=11, color=t.text,
                    fontweight="bold" if j == 12 else "normal")
    ax.set_xticks(range(13), [*MONTHS, "Year"])
    ax.set_yticks(range(len(table)), [str(y) for y in table.index])
    ax.xaxis.tick_top()
    ax.grid(False)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    return fig


CORE: dict[str, Callable[[ReportData, th.Theme], Figure]] = {
    "equity": equity_png, "price": price_png, "monthly": monthly_png}
