"""``bot journal report``: an HTML report (and PNGs) of any run in the journal, any mode."""

from __future__ import annotations

from pathlib import Path

import typer

from bot.cli.common import ConfigOpt, DbOpt, SetOpt, console, err_console, load
from bot.report import ReportResult, write_report
from storage import queries as q
from storage.db import open_database

RunOpt = typer.Option("latest", "--run", "-r", help="Run id, or 'latest'.")
OutOpt = typer.Option(..., "--out", "-o", help="Directory for report.html and the PNGs.")
NoPngOpt = typer.Option(False, "--no-png", help="Only report.html (skip the matplotlib PNGs).")
ThemeOpt = typer.Option("light", "--theme", help="light or dark.")


def print_result(res: ReportResult) -> None:
    console.print(f"report of run {res.run_id}: [bold]{res.html}[/bold]")
    for p in res.pngs:
        console.print(f"  {p}")


def make_report(db, run: str, out: Path, png: bool, theme: str) -> ReportResult:  # type: ignore[no-untyped-def]
    """Write the report with a spinner on stderr saying what it is doing."""
    with err_console.status("report: starting", spinner="dots") as status:
        return write_report(db, run, out, png=png, theme=theme,
                            on_step=lambda s: status.update(f"report: {s}"))


def register(journal_app: typer.Typer) -> None:
    @journal_app.command("report")
    def report(
        run: str = RunOpt,
        out: Path = OutOpt,
        no_png: bool = NoPngOpt,
        theme: str = ThemeOpt,
        config: Path | None = ConfigOpt,
        set_: list[str] | None = SetOpt,
        db: str | None = DbOpt,
    ) -> None:
        """A self-contained HTML report (opens offline) and PNGs of one run, from the journal alone."""
        cfg = load(config, set_, db=db)
        engine = open_database(cfg.storage.url)
        row = q.resolve_run(engine, run)
        print_result(make_report(engine, row["id"], out, not no_png, theme))
