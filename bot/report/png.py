"""The report's figures as PNGs (matplotlib, Agg) for terminals, CI artefacts and e-mail.

Every PNG is exactly ``PNG_SIZE`` pixels: a fixed figure size at a fixed dpi, no tight bbox.
Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas (no pyplot, no global
backend switch, nothing that needs a display). The figures live in :mod:`bot.report.png_figures`,
:mod:`bot.report.png_models` (each strategy's section) and :mod:`bot.report.png_portfolio`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

from bot.report import theme as th
from bot.report.data import ReportData
from bot.report.figures_faith import faith_png
from bot.report.png_figures import CORE, DPI, PNG_SIZE, summary_png
from bot.report.png_models import model_png
from bot.report.png_portfolio import portfolio_pngs
from bot.report.portfolio import PortfolioData

__all__ = ["PNG_SIZE", "write_pngs"]


def write_pngs(d: ReportData, out: Path, theme: str = "light") -> list[Path]:
    """Write summary.png, and equity/price/monthly/<section key>.png where the run has the data
    (a multi-market run: see :func:`bot.report.png_portfolio.portfolio_pngs`)."""
    t = th.get_theme(theme)
    paths = []
    with matplotlib.rc_context(th.matplotlib_rc(t)):
        if isinstance(d, PortfolioData):
            figs = portfolio_pngs(d, t)
        else:
            figs = {"summary": summary_png(d, t)}
            if d.has_bars:
                figs.update({name: fn(d, t) for name, fn in CORE.items()})
            figs[d.section.key] = model_png(d, t)
            figs["faithfulness"] = faith_png(d, t)
        for name, fig in figs.items():
            if fig is None:
                continue
            path = out / f"{name}.png"
            fig.savefig(path, dpi=DPI, format="png", pil_kwargs={"compress_level": 1})
            paths.append(path)
    return paths
