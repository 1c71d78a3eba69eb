"""The parts every report page is made of: a section, and the strategy's own section."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html import escape
from typing import Any

import plotly.graph_objects as go

from bot.report import tables
from bot.report import theme as th
from bot.report.data import ReportData


@dataclass(slots=True)
class Section:
    id: str
    title: str
    body: str = ""
    figures: dict[str, go.Figure] = field(default_factory=dict)
    note: str = ""
    #: The market a multi-market run's section is of ("": the run's or the portfolio's).
    market: str = ""
    #: Its link in the page's navigation: None the title's head, "" none.
    nav: str | None = None


def no_bars(what: str) -> str:
    return f'<p class="empty">No bars were journaled for this run, so there is no {escape(what)} to draw.</p>'


def strategy_section(d: ReportData, t: th.Theme) -> Section:
    """The run's strategy's own section (its spec's report section, else the generic one)."""
    view = d.section.part("view")(d)
    sec = Section(f"model-{d.section.key}", d.section.title, note=d.section_note)
    if view is None:
        sec.body = ('<p class="empty">No decision of this run carries the explanation keys this section '
                    "needs (see docs/explanations.md).</p>")
    else:
        sec.figures = d.section.part("figures")(d, view, t)
    return sec


def tail_sections(d: Any) -> list[Section]:
    """The page's end: the run's events (if any) and the configuration journaled with it."""
    secs = []
    if d.events:
        secs.append(Section("events", f"Events ({len(d.events):,})", tables.events_table(d)))
    cfg = json.dumps(d.run.get("config"), indent=2, default=str)
    secs.append(Section("run", "Run configuration", f"<details><summary>config journaled with the run</summary>"
                                                    f"<pre>{escape(cfg)}</pre></details>"))
    return secs
