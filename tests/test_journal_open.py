"""Several processes opening one fresh SQLite journal at the same moment (bots started together,
a walk-forward's workers): every one migrates or finds it migrated, none fails."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from sqlalchemy import inspect

from storage.db import open_database, upgrade


def _open(url: str, start: object) -> str:
    start.wait()  # type: ignore[attr-defined]
    return upgrade(open_database(url))


def test_processes_opening_a_new_sqlite_journal_together_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Barrier(4)
        with ctx.Pool(4) as pool:
            heads = pool.starmap(_open, [(url, start)] * 4)
    engine = open_database(url)
    assert len(set(heads)) == 1 and heads[0] == upgrade(engine)
    assert {"runs", "decisions", "orders", "fills", "equity_blocks"} <= set(inspect(engine).get_table_names())
