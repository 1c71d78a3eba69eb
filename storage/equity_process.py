"""Write a backtest's equity curve from a second process.

The per-bar equity rows are most of a large backtest's journal. Written from a thread they still
hold the GIL while sqlite binds each row, so engine and writer take turns on one core; a second
process writes them on the other core while the engine keeps running. Blocks arrive in order
through a bounded queue; ``close`` waits for every block and raises if the writer failed.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from typing import Any

from sqlalchemy import event

from bot.errors import StorageError


class EquityProcess:
    def __init__(self, url: str, run_id: str, insert_sql: str) -> None:
        ctx = mp.get_context("spawn")  # never fork a process that holds threads
        self._queue: Any = ctx.Queue(maxsize=16)
        self._proc = ctx.Process(target=_serve, args=(url, run_id, insert_sql, self._queue),
                                 name="journal-equity", daemon=True)
        self._proc.start()

    def put(self, block: tuple[Any, Any, Any, Any, Any]) -> None:
        if not self._proc.is_alive():
            raise StorageError("the equity writer process died; see the log")
        self._queue.put(block)

    def close(self) -> None:
        if self._proc.is_alive():
            self._queue.put(None)
        self._proc.join()
        if self._proc.exitcode != 0:
            raise StorageError(f"journal equity writer failed (exit code {self._proc.exitcode})")


def _serve(url: str, run_id: str, insert_sql: str, queue: Any) -> None:
    # The parent decides how an interrupted run ends (a terminal's Ctrl-C and systemd's SIGTERM
    # reach the whole process group): it sends the end of the queue and waits for the last rows.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from storage.db import make_engine  # noqa: PLC0415 - imported in the child only

    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        # This process only appends rows of a run whose row the parent has already committed:
        # the per-row foreign-key lookup buys nothing here and costs a sixth of the insert time.
        event.listen(engine, "connect", _no_fk_checks)
        engine.dispose()
    done = False
    while not done:
        blocks = [queue.get()]
        while len(blocks) < 8 and not queue.empty():  # catch up in one transaction when behind
            blocks.append(queue.get())
        if blocks[-1] is None:
            done = True
            blocks.pop()
        rows: list[tuple[Any, ...]] = []
        for sym, *arrays in blocks:
            times, eq, cash, pos, px = (a.tolist() if hasattr(a, "tolist") else list(a) for a in arrays)
            n = len(times)
            rows.extend(zip([run_id] * n, [sym] * n, times, eq, cash, pos, px, strict=True))
        if rows:
            with engine.begin() as conn:
                conn.exec_driver_sql(insert_sql, rows)
    engine.dispose()


def _no_fk_checks(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=OFF")
    # WAL checkpoints without fsync: a backtest's equity curve is recomputable from its inputs,
    # and the run is only marked completed after the parent has seen this process finish.
    cur.execute("PRAGMA synchronous=OFF")
    cur.close()
