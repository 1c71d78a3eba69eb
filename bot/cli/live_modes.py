"""``bot run --mode paper`` on the live Bybit feed and ``bot run --mode live``: flags in, summary out.

Both run through bot/app.py (``paper`` / ``live``): the same runner, engine and strategy as a
backtest; ``--resume``/``--run-id`` continue an unfinished run (bot/resume.py).
"""

from __future__ import annotations

import asyncio
import sys

from bot import app as core
from bot.cli.common import console, dumps, print_summary
from bot.config import Config
from storage import queries as q


def live(cfg: Config, checkpoint: str | None, as_json: bool, *, confirm_live: bool = False, resume: bool = False,
         run_id: str | None = None, date_from: str | None = None, date_to: str | None = None) -> None:
    """Live trading on Bybit (testnet by default)."""
    summary = asyncio.run(core.live(cfg, checkpoint, confirm_live=confirm_live, resume=resume, run_id=run_id,
                                    date_from=date_from, date_to=date_to))
    _print(cfg, summary, as_json, "live")


def paper_bybit(cfg: Config, checkpoint: str | None, as_json: bool, *, resume: bool = False,
                run_id: str | None = None, date_from: str | None = None, date_to: str | None = None) -> None:
    summary = asyncio.run(core.paper(cfg, checkpoint, resume=resume, run_id=run_id, date_from=date_from,
                                     date_to=date_to))
    _print(cfg, summary, as_json, "paper")


def _print(cfg: Config, summary: dict[str, object], as_json: bool, mode: str) -> None:
    if as_json:
        sys.stdout.write(dumps(summary) + "\n")
        return
    print_summary(summary)
    status = q.resolve_run(core.open_journal_db(cfg.storage.url), str(summary["run_id"]))["status"]
    hint = f"  (continue with: bot run --mode {mode} --resume)" if status != "completed" else ""
    console.print(f"run {summary['run_id']}: {status}{hint}")
