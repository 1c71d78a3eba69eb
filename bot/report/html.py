"""``report.html``: one self-contained page (plotly.js embedded, no CDN) that opens offline."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from bot.report import tables
from bot.report import theme as th
from bot.report.analysis import marker_fills
from bot.report.blocks import Section, no_bars, strategy_section, tail_sections
from bot.report.data import ReportData
from bot.report.figures import equity_figure, monthly_figure, price_figure
from bot.report.figures_faith import faith_section
from bot.report.html_portfolio import plan_portfolio, portfolio_header
from bot.report.page import CSS
from bot.report.portfolio import PortfolioData

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "scrollZoom": False,
                 "modeBarButtonsToRemove": ["lasso2d", "select2d"],
                 "toImageButtonOptions": {"format": "png", "scale": 2}}
STATUS_TONE = {"completed": "ok", "running": "info", "interrupted": "warn", "stopped": "warn", "failed": "bad"}


def _figure_html(fid: str, fig: go.Figure) -> str:
    div = pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=fid, config=PLOTLY_CONFIG)
    return f'<div class="figure">{div}</div>'


def plan(d: ReportData, t: th.Theme) -> list[Section]:
    """The report's sections, in page order, with their figures (empty where there is no data)."""
    secs = [Section("summary", "Summary", tables.headline_cards(d.summary) + tables.metrics_table(d.summary))]
    if d.has_bars:
        secs.append(Section("equity", "Equity and drawdown", figures={"fig-equity": equity_figure(d, t)}))
        n_fills, shown = len(d.fills), len(marker_fills(d))
        what = f"{n_fills:,} fills"
        if shown < n_fills:
            what += f"; marked: the {shown:,} entries, exits and flips"
        secs.append(Section("price", "Price and trades", figures={"fig-price": price_figure(d, t)},
                            note=f"{what}. Hover a marker for the decision behind it."))
        secs.append(Section("monthly", "Monthly returns", figures={"fig-monthly": monthly_figure(d, t)}))
    else:
        secs.append(Section("equity", "Equity and drawdown", no_bars("equity curve")))
        secs.append(Section("price", "Price and trades", no_bars("price")))
        secs.append(Section("monthly", "Monthly returns", no_bars("monthly return")))
    secs.append(Section("trades", f"Trades ({len(d.trades):,})", tables.trades_table(d)))
    secs.append(strategy_section(d, t))
    if (faith := faith_section(d, t)) is not None:
        secs.append(faith)
    secs.extend(tail_sections(d))
    return secs


def _header(d: ReportData | PortfolioData) -> str:
    r, s = d.run, d.summary
    status = str(r["status"])
    span = f"{s.get('start') or '–'} → {s.get('end') or '–'}"
    err = f'<div class="alert">{escape(str(r["error"]))}</div>' if r.get("error") else ""
    model = f" · model {escape(str(r['model_id']))}" if r.get("model_id") else ""
    if isinstance(d, PortfolioData):
        title = f"Portfolio · {portfolio_header(d)}"
        data = " · ".join(filter(None, str(r.get("data_source") or "live feed").split(";")))
        model += f" · {len(d.markets)} markets"
    else:
        title = f'{escape(r["strategy"])} · {escape(r["symbol"])} {escape(r["timeframe"])}'
        data = str(r.get("data_source") or "live feed")
    return (f'<header><div class="title"><h1>{title}</h1><span class="badge {STATUS_TONE.get(status, "info")}">'
            f'{escape(status)}</span><span class="badge mode">{escape(str(r["mode"]))}</span>{_in_sample(s)}</div>'
            f'<div class="sub">run <code>{escape(d.run_id)}</code> · {escape(span)} · '
            f'{s.get("candles", 0):,} bars{model} · data {escape(data)}</div>'
            f"{err}</header>")


def _in_sample(s: dict[str, Any]) -> str:
    """A warning badge when the run traded bars its checkpoint was fitted on (``--allow-in-sample``)."""
    info = s.get("in_sample")
    if not info:
        return ""
    tip = f"{info['bars']:,} traded bars lie in the checkpoint's fitted range: these figures are not out of sample"
    return f'<span class="badge warn" id="in-sample" title="{escape(tip)}">in-sample</span>'



def _section_html(s: Section) -> str:
    figs = "".join(_figure_html(fid, fig) for fid, fig in s.figures.items())
    note = f'<p class="note">{escape(s.note)}</p>' if s.note else ""
    market = f' data-market="{escape(s.market)}"' if s.market else ""
    return (f'<section id="{s.id}" data-section="{s.id}"{market}><h2>{escape(s.title)}</h2>{note}{s.body}{figs}'
            "</section>")


def _manifest(d: ReportData | PortfolioData, secs: list[Section], fig_ids: list[str]) -> str:
    """What the page holds, for readers and tests: sections, figures, and a multi-market run's markets."""
    if isinstance(d, PortfolioData):
        return json.dumps({"run_id": d.run_id, "kind": "portfolio", "sections": [s.id for s in secs],
                           "figures": fig_ids, "markets": [
                               {"symbol": m.symbol, "strategy": m.strategy, "kind": md.section.key,
                                "sections": [s.id for s in secs if s.market == m.symbol]}
                               for m, md in zip(d.markets, d.data, strict=True)]})
    return json.dumps({"run_id": d.run_id, "kind": d.section.key, "sections": [s.id for s in secs],
                       "figures": fig_ids})


def render(d: ReportData | PortfolioData, theme: str = "light") -> tuple[str, list[str], list[str]]:
    """(page, section ids, figure div ids)."""
    t = th.get_theme(theme)
    secs = plan_portfolio(d, t) if isinstance(d, PortfolioData) else plan(d, t)
    nav = "".join(f'<a href="#{s.id}">{escape(s.title.split(":")[0] if s.nav is None else s.nav)}</a>'
                  for s in secs if s.nav != "")
    fig_ids = [fid for s in secs for fid in s.figures]
    body = "".join(_section_html(s) for s in secs)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    what = "portfolio" if isinstance(d, PortfolioData) else f"{d.run['strategy']} {d.run['symbol']}"
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(what)} · run {escape(d.run_id)}</title>"
        f"<style>{CSS.substitute(_css_vars(t))}</style>"
        "<script type=\"text/javascript\">window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
        f'<script type="text/javascript">{get_plotlyjs()}</script>'
        f'<script type="application/json" id="report-manifest">{escape(_manifest(d, secs, fig_ids), quote=False)}'
        "</script>"
        f"</head><body class=\"{t.name}\">{_header(d)}<nav>{nav}</nav><main>{body}</main>"
        f"<footer>Generated {generated} from the journal alone by <code>bot journal report</code>. "
        "Times are UTC.</footer></body></html>\n"
    )
    return page, [s.id for s in secs], fig_ids


def _css_vars(t: th.Theme) -> dict[str, str]:
    return {"page": t.page, "card": t.card, "text": t.text, "muted": t.muted, "grid": t.grid,
            "border": t.border, "gain": th.GAIN, "loss": th.LOSS, "accent": th.STRATEGY, "font": th.FONT}


def write_html(d: ReportData | PortfolioData, out: Path, theme: str = "light") -> tuple[Path, list[str], list[str]]:
    page, sections, figures = render(d, theme)
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path, sections, figures
