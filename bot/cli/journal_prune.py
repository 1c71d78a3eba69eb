"""``bot journal prune``: delete old runs, whole (storage/retention.py)."""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from pathlib import Path

import typer

from bot.cli.common import ConfigOpt, DbOpt, SetOpt, console, emit, load
from bot.cli.tables import Col
from bot.errors import ConfigError
from storage.db import open_database
from storage.retention import FINAL, RUN_TABLES, Selection, delete_run, select_runs

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
PLAN_COLS = [Col("id", kind="run"), Col("mode"), Col("status"), Col("strategy", width=16), Col("symbol", width=16),
             Col("started_at", "started", "time"), Col("updated_at", "last written", "time"),
             Col("n_rows", "rows", "metric")]


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``2w``, ``90m``, ``45s`` -> a duration (ConfigError otherwise)."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if not m:
        raise ConfigError(f"bad --older-than {text!r}: expected a number and a unit (s, m, h, d, w), e.g. 30d")
    return timedelta(**{UNITS[m.group(2)]: int(m.group(1))})


def parse_statuses(text: str) -> tuple[str, ...]:
    wanted = tuple(dict.fromkeys(x.strip().lower() for x in text.split(",") if x.strip()))
    if "running" in wanted:
        raise ConfigError("--status running: a running run is never pruned (it may be resumed)")
    bad = [x for x in wanted if x not in FINAL]
    if bad or not wanted:
        raise ConfigError(f"bad --status {text!r}: expected some of {', '.join(FINAL)}, comma-separated")
    return wanted


def register(journal_app: typer.Typer) -> None:
    @journal_app.command("prune")
    def prune(
        older_than: str | None = typer.Option(None, "--older-than", help="Only runs last written longer ago than "
                                              "this: a number and s, m, h, d or w (30d, 12h, 2w)."),
        keep: int | None = typer.Option(None, "--keep", help="Always keep the N newest runs (of --status)."),
        status: str = typer.Option(",".join(FINAL), "--status", help="Only runs with these statuses, "
                                   "comma-separated (a running run is never deleted)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="List what would be deleted; delete nothing."),
        yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking."),
        config: Path | None = ConfigOpt,
        set_: list[str] | None = SetOpt,
        db: str | None = DbOpt,
    ) -> None:
        """Delete whole runs (every row of them, one transaction per run), never a running one.

        Give --older-than, --keep or both: `--older-than 30d --keep 5` deletes the runs last
        written over 30 days ago except the 5 newest.
        """
        if older_than is None and keep is None:
            raise ConfigError("say what to prune: --older-than AGE (e.g. 30d), --keep N, or both")
        if keep is not None and keep < 0:
            raise ConfigError(f"bad --keep {keep}: expected 0 or more runs to keep")
        sel = Selection(older_than=parse_age(older_than) if older_than is not None else None, keep=keep,
                        statuses=parse_statuses(status))
        cfg = load(config, set_, db=db)
        engine = open_database(cfg.storage.url)
        runs = select_runs(engine, sel)
        for r in runs:
            r["n_rows"] = sum(r["rows"].values())
        if not runs:
            console.print("nothing to prune")
            return
        total = sum(r["n_rows"] for r in runs)
        emit(runs, "table", PLAN_COLS, f"{'would delete' if dry_run else 'to delete'}: {_runs(len(runs))}, "
                                        f"{total:,} rows")
        if dry_run:
            return
        if not yes:
            if not sys.stdin.isatty():
                raise ConfigError(f"refusing to delete {_runs(len(runs))} without --yes (no terminal to ask on)")
            typer.confirm(f"Delete {_runs(len(runs))} and their {total:,} rows?", abort=True)
        deleted = {t: 0 for t in ("runs", *RUN_TABLES)}
        skipped = []
        for r in runs:
            counts = delete_run(engine, r["id"])
            if counts is None:  # resumed (or deleted) since it was listed
                skipped.append(r["id"])
                continue
            for t, n in counts.items():
                deleted[t] += n
        runs_gone = deleted.pop("runs")
        console.print(f"deleted {_runs(runs_gone)}, " + ", ".join(f"{n:,} {t}" for t, n in deleted.items()))
        if skipped:
            console.print(f"kept {', '.join(skipped)}: running again (or gone) when its turn came")
