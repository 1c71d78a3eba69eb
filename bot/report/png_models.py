"""PNG versions of the strategies' report sections (same views as the HTML, matplotlib back end)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from bot.report import theme as th
from bot.report.data import ReportData
from bot.report.figures_models import clip_range, target_steps
from bot.report.models import DSCView, GenericView, RolloutView, SizerView, SMAView
from bot.report.png_figures import date_axis, naive, new_figure, thousands, title


def _empty(fig: Figure, t: th.Theme, text: str) -> Figure:
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", color=t.muted, fontsize=15, transform=ax.transAxes)
    return fig


def rollout_png(d: ReportData, v: RolloutView, t: th.Theme, fig: Figure) -> None:
    grid = fig.add_gridspec(2, 2, width_ratios=[1, 1.6], height_ratios=[1.6, 1])
    left = fig.add_subplot(grid[0, 0])
    below = fig.add_subplot(grid[1, 0], sharex=left)
    right = fig.add_subplot(grid[:, 1])
    left.plot(v.lags, v.all_mean, color=th.BENCHMARK, lw=1.4, ls=":", label=f"all decisions (n={v.n_all})")
    if v.win_mean is not None:
        left.plot(v.lags, v.win_mean, color=th.GAIN, lw=2, label=f"winning trades (n={v.n_win})")
    if v.loss_mean is not None:
        left.plot(v.lags, v.loss_mean, color=th.LOSS, lw=2, label=f"losing trades (n={v.n_loss})")
    left.set_title("Mean attribution at entry")
    left.set_ylabel("attribution (sums to 1)")
    left.legend(loc="upper left")
    left.tick_params(labelbottom=False)
    if v.diff is not None:
        below.bar(v.lags, v.diff, color=np.where(v.diff >= 0, th.GAIN, th.LOSS), width=0.8)
    else:
        below.text(0.5, 0.5, "needs winning and losing trades", ha="center", color=t.muted,
                   transform=below.transAxes)
    below.axhline(0, color=t.muted, lw=0.8)
    below.set_ylabel("winners − losers")
    below.set_xlabel("bars before the decision (0 = decision bar)")
    x = naive(v.heat_dt)
    lo, hi = clip_range(v.heat)
    im = right.imshow(v.heat.T, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                      vmin=lo, vmax=hi, extent=(0, len(x), v.lags[0] - 0.5, v.lags[-1] + 0.5))
    ticks = np.linspace(0, max(len(x) - 1, 0), min(6, len(x))).astype(int)
    right.set_xticks(ticks + 0.5, [str(np.datetime_as_string(x[i], unit="D")) for i in ticks])
    right.set_title("Attribution over time")
    right.set_ylabel("lag (bars)")
    right.grid(False)
    fig.colorbar(im, ax=right, fraction=0.04, pad=0.02, label="weight (colours span p3–p97)")


def dsc_png(d: ReportData, v: DSCView, t: th.Theme, fig: Figure) -> None:
    left, right = fig.subplots(1, 2)
    bins = np.linspace(0, 1, 21)
    sigs = sorted(v.confidence)
    left.hist([v.confidence[s] for s in sigs], bins=bins, histtype="barstacked", rwidth=0.92,
              color=[th.SIGNAL_COLOURS.get(s, th.BENCHMARK) for s in sigs], label=sigs)
    left.set_title("Confidence by signal")
    left.set_xlabel("confidence")
    left.set_ylabel("decisions")
    left.legend()
    right.plot([0, 1], [0, 1], ls=":", color=t.muted, lw=1, label="perfectly calibrated")
    for c in v.curves:
        colour = th.UP if c.label == "up" else th.DOWN
        right.plot(c.predicted, c.realised, "-o", color=colour, lw=2, ms=5, label=f"p({c.label}) · Brier {c.brier:.3f}")
    right.set_xlim(0, 1)
    right.set_ylim(0, 1)
    right.set_title(f"Next-bar calibration ({v.n_scored} decisions, equal-count bins)")
    right.set_xlabel("predicted probability")
    right.set_ylabel("realised frequency")
    right.legend(loc="upper left")


def sizer_png(d: ReportData, v: SizerView, t: th.Theme, fig: Figure) -> None:
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    top.plot(naive(d.equity["dt"]), d.equity["price"].to_numpy(), color=t.price, lw=1.1)
    top.set_ylabel("price")
    thousands(top)
    x = naive(v.dt)
    bottom.step(x, v.level, where="post", color=th.LEVEL, lw=1.8)
    bottom.fill_between(x, v.level, step="post", color=th.LEVEL, alpha=0.15)
    bottom.set_ylim(-0.3, 10.5)
    bottom.set_yticks(range(0, 11, 2))
    bottom.set_ylabel("position level")
    date_axis(bottom)


def sma_png(d: ReportData, v: SMAView, t: th.Theme, fig: Figure) -> None:
    ax = fig.add_subplot()
    x = naive(d.equity["dt"])
    ax.plot(x, d.equity["price"].to_numpy(), color=t.price, lw=1, alpha=0.7, label="close")
    if len(v.fast):
        ax.plot(x, v.fast, color=th.FAST, lw=1.6, label=f"fast SMA({v.fast_n})")
        ax.plot(x, v.slow, color=th.SLOW, lw=1.6, label=f"slow SMA({v.slow_n})")
    if len(v.cross_dt):
        ax.scatter(naive(v.cross_dt), v.cross_fast, s=40, facecolors="none", edgecolors=t.text, lw=1.5,
                   zorder=3, label="crossover (decision)")
    ax.set_ylabel("price")
    thousands(ax)
    ax.legend(loc="upper left", ncols=4)
    date_axis(ax)


def generic_png(d: ReportData, v: GenericView, t: th.Theme, fig: Figure) -> None:
    top, mid, low = fig.subplots(3, 1, sharex=True, height_ratios=[4, 3, 2])
    tx, ty = target_steps(d, v)
    mid.step(tx, ty, where="post", color=th.FAST, lw=2.4, alpha=0.85, label="target (decisions)")
    if d.has_bars:
        x = naive(d.equity["dt"])
        top.plot(x, d.equity["price"].to_numpy(), color=t.price, lw=1.1)
        mid.plot(x, v.exposure, color=th.STRATEGY, lw=1.0, label="actual exposure")
    mid.axhline(0, color=t.muted, lw=0.8)
    mid.set_ylabel("exposure")
    mid.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=2, frameon=False)
    ok = np.isfinite(v.confidence)
    colours = np.where(v.target > 0, th.UP, np.where(v.target < 0, th.DOWN, th.FLAT))[ok]
    low.scatter(naive(v.dt)[ok], v.confidence[ok], s=12, c=colours)
    low.set_ylim(-0.05, 1.05)
    low.set_ylabel("confidence")
    top.set_ylabel("price")
    thousands(top)
    date_axis(low)


def model_png(d: ReportData, t: th.Theme) -> Figure:
    """The strategy's section as one PNG (a note when no decision carries the needed keys)."""
    sec = d.section
    fig = new_figure(t, **sec.margins)
    title(fig, d, sec.title.split(":")[0], t)
    view = sec.part("view")(d)
    if view is None:
        return _empty(fig, t, "No decision carries the explanation keys this section needs.")
    sec.part("png")(d, view, t, fig)
    return fig
