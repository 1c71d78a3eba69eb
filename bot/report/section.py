"""What a strategy adds to the report: one view computed from the journal, drawn twice.

A :class:`ReportSection` has three parts, each a callable or a "module:attr" string (imported
only when the report needs it, so naming a section never imports plotly or matplotlib):

- ``view(d: ReportData) -> view | None``: everything the section shows, computed once from the
  run's decisions and bars (None: no decision carries what the section needs);
- ``figures(d, view, theme) -> {div id: plotly Figure}`` for ``report.html``;
- ``png(d, view, theme, fig: matplotlib Figure) -> None`` drawing ``<key>.png``.

``key`` names the HTML section (``model-<key>``) and the PNG (``<key>.png``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.errors import ConfigError
from strategies.spec import load_ref


@dataclass(frozen=True, slots=True)
class ReportSection:
    key: str
    #: "Heading: subtitle"; the part before the colon titles the PNG and the page's navigation.
    title: str
    view: str | Callable[..., Any]
    figures: str | Callable[..., Any]
    png: str | Callable[..., Any]
    #: matplotlib ``subplots_adjust`` tweaks for the PNG (e.g. room for a colour bar).
    margins: Mapping[str, float] = field(default_factory=dict)

    def part(self, name: str) -> Callable[..., Any]:
        """The callable behind ``view``, ``figures`` or ``png`` (ConfigError if it cannot be loaded)."""
        fn = load_ref(getattr(self, name), f"report section {self.key}: {name}")
        if not callable(fn):
            raise ConfigError(f"report section {self.key}: {name} is a {type(fn).__name__}, not a function")
        return fn
