"""Run reports: one self-contained ``report.html`` (plotly) and the same figures as PNGs.

Built from the journal alone, so it works for any run of any mode: ``bot journal report`` and
``bot backtest --report DIR`` both call :func:`write_report`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from bot.errors import ConfigError
from storage import queries as q


@dataclass(slots=True)
class ReportResult:
    run_id: str
    html: Path
    sections: list[str]
    figures: list[str]
    pngs: list[Path] = field(default_factory=list)


def write_report(db: Engine, run: str | dict[str, Any], out_dir: str | Path, *, png: bool = True,
                 theme: str = "light", on_step: Callable[[str], None] | None = None) -> ReportResult:
    """Write ``report.html`` (and PNGs unless ``png`` is False) for ``run`` (id, 'latest' or a run row)."""
    from bot.report.data import load_report_data
    from bot.report.html import write_html
    from bot.report.portfolio import is_multi, load_portfolio_data
    from bot.report.theme import get_theme

    get_theme(theme)
    step = on_step or (lambda _s: None)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    row = run if isinstance(run, dict) else q.resolve_run(db, run)
    step("reading the journal")
    data = load_portfolio_data(db, row) if is_multi(row) else load_report_data(db, row)
    try:
        out.mkdir(parents=True, exist_ok=True)
        step("writing report.html")
        html, sections, figures = write_html(data, out, theme)
        result = ReportResult(data.run_id, html, sections, figures)
        if png:
            from bot.report.png import write_pngs

            step("drawing PNGs")
            result.pngs = write_pngs(data, out, theme)
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    return result


def report_page(db: Engine, run: dict[str, Any], *, theme: str = "light") -> str:
    """The page ``report.html`` holds for ``run`` (a run row), without writing anything (``bot serve``)."""
    from bot.report.data import load_report_data
    from bot.report.html import render
    from bot.report.portfolio import is_multi, load_portfolio_data
    from bot.report.theme import get_theme

    get_theme(theme)
    data = load_portfolio_data(db, run) if is_multi(run) else load_report_data(db, run)
    return render(data, theme)[0]
