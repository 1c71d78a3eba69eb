"""``bot db``: journal database maintenance."""

from __future__ import annotations

from pathlib import Path

import typer

from bot.cli.common import ConfigOpt, DbOpt, SetOpt, console, load
from storage.db import make_engine, safe_url, upgrade

app = typer.Typer(help="Journal database maintenance.", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade(config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Apply pending Alembic migrations to the journal database."""
    cfg = load(config, set_, db=db)
    head = upgrade(make_engine(cfg.storage.url))
    console.print(f"journal {safe_url(cfg.storage.url)} at revision {head}")
