"""``report.html``: one self-contained page (plotly.js embedded, no CDN) that opens offline."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from bot.report import tables
from bot.report import theme as th
from bot.report.analysis import marker_fills
from bot.report.data import ReportData
from bot.report.figures import equity_figure, monthly_figure, price_figure
from bot.report.page import CSS

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "scrollZoom": False,
                 "modeBarButtonsToRemove": ["lasso2d", "select2d"],
                 "toImageButtonOptions": {"format": "png", "scale": 2}}
STATUS_TONE = {"completed": "ok", "running": "info", "interrupted": "warn", "stopped": "warn", "failed": "bad"}


@dataclass(slots=True)
class Section:
    id: str
    title: str
    body: str = ""
    figures: dict[str, go.Figure] = field(default_factory=dict)
    note: str = ""


def _figure_html(fid: str, fig: go.Figure) -> str:
    div = pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=fid, config=PLOTLY_CONFIG)
    return f'<div class="figure">{div}</div>'


def _no_bars(what: str) -> str:
    return f'<p class="empty">No bars were journaled for this run, so there is no {escape(what)} to draw.</p>'


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
        secs.append(Section("equity", "Equity and drawdown", _no_bars("equity curve")))
        secs.append(Section("price", "Price and trades", _no_bars("price")))
        secs.append(Section("monthly", "Monthly returns", _no_bars("monthly return")))
    secs.append(Section("trades", f"Trades ({len(d.trades):,})", tables.trades_table(d)))
    secs.append(_strategy_section(d, t))
    if d.events:
        secs.append(Section("events", f"Events ({len(d.events):,})", tables.events_table(d)))
    cfg = json.dumps(d.run.get("config"), indent=2, default=str)
    secs.append(Section("run", "Run configuration", f"<details><summary>config journaled with the run</summary>"
                                                    f"<pre>{escape(cfg)}</pre></details>"))
    return secs


def _strategy_section(d: ReportData, t: th.Theme) -> Section:
    """The run's strategy's own section (its spec's report section, else the generic one)."""
    view = d.section.part("view")(d)
    sec = Section(f"model-{d.section.key}", d.section.title, note=d.section_note)
    if view is None:
        sec.body = ('<p class="empty">No decision of this run carries the explanation keys this section '
                    "needs (see docs/explanations.md).</p>")
    else:
        sec.figures = d.section.part("figures")(d, view, t)
    return sec


def _header(d: ReportData) -> str:
    r, s = d.run, d.summary
    status = str(r["status"])
    span = f"{s.get('start') or '–'} → {s.get('end') or '–'}"
    err = f'<div class="alert">{escape(str(r["error"]))}</div>' if r.get("error") else ""
    model = f" · model {escape(str(r['model_id']))}" if r.get("model_id") else ""
    return (f'<header><div class="title"><h1>{escape(r["strategy"])} · {escape(r["symbol"])} '
            f'{escape(r["timeframe"])}</h1><span class="badge {STATUS_TONE.get(status, "info")}">'
            f'{escape(status)}</span><span class="badge mode">{escape(str(r["mode"]))}</span></div>'
            f'<div class="sub">run <code>{escape(d.run_id)}</code> · {escape(span)} · '
            f'{s.get("candles", 0):,} bars{model} · data {escape(str(r.get("data_source") or "live feed"))}</div>'
            f"{err}</header>")


def render(d: ReportData, theme: str = "light") -> tuple[str, list[str], list[str]]:
    """(page, section ids, figure div ids)."""
    t = th.get_theme(theme)
    secs = plan(d, t)
    nav = "".join(f'<a href="#{s.id}">{escape(s.title.split(":")[0])}</a>' for s in secs)
    body = []
    fig_ids: list[str] = []
    for s in secs:
        figs = "".join(_figure_html(fid, fig) for fid, fig in s.figures.items())
        fig_ids.extend(s.figures)
        note = f'<p class="note">{escape(s.note)}</p>' if s.note else ""
        body.append(f'<section id="{s.id}" data-section="{s.id}"><h2>{escape(s.title)}</h2>{note}{s.body}{figs}'
                    "</section>")
    manifest = json.dumps({"run_id": d.run_id, "kind": d.section.key, "sections": [s.id for s in secs],
                           "figures": fig_ids})
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(d.run['strategy'])} {escape(d.run['symbol'])} · run {escape(d.run_id)}</title>"
        f"<style>{CSS.substitute(_css_vars(t))}</style>"
        "<script type=\"text/javascript\">window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
        f'<script type="text/javascript">{get_plotlyjs()}</script>'
        f'<script type="application/json" id="report-manifest">{escape(manifest, quote=False)}</script>'
        f"</head><body class=\"{t.name}\">{_header(d)}<nav>{nav}</nav><main>{''.join(body)}</main>"
        f"<footer>Generated {generated} from the journal alone by <code>bot journal report</code>. "
        "Times are UTC.</footer></body></html>\n"
    )
    return page, [s.id for s in secs], fig_ids


def _css_vars(t: th.Theme) -> dict[str, str]:
    return {"page": t.page, "card": t.card, "text": t.text, "muted": t.muted, "grid": t.grid,
            "border": t.border, "gain": th.GAIN, "loss": th.LOSS, "accent": th.STRATEGY, "font": th.FONT}


def write_html(d: ReportData, out: Path, theme: str = "light") -> tuple[Path, list[str], list[str]]:
    page, sections, figures = render(d, theme)
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path, sections, figures
