"""Write a backtest's journal from a second process.

A backtest's journal rows (decisions with their encoded explanations, orders, fills, trades and
one equity row per bar) cost as much to write as the engine costs to run. Written from a thread
they still hold the GIL while SQLAlchemy and sqlite bind each row, so engine and writer take
turns on one core; a second process writes them on the other core while the engine keeps running.

The writer is ``python -m storage.journal_process``, fed the journal's batches
(:class:`storage.journal.Committed`) pickled over its stdin, in order; each is one transaction
there, as it would be in the parent (a full pipe holds the engine back). It imports only the
database layer, so it is ready in a fraction of a second; a ``multiprocessing`` child would first
re-import the command's main module (the whole CLI). ``sync`` waits until every batch sent is
written; ``close`` sends the end of the stream and waits for the writer to exit, raising if it
failed. The writer also ends at end of input, so a parent killed outright leaves no writer behind.
"""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
from typing import IO, Any

from sqlalchemy import event

from bot.errors import StorageError

_SYNC = "sync"


class JournalProcess:
    def __init__(self, url: str, run_id: str, batch_size: int) -> None:
        self._proc = subprocess.Popen([sys.executable, "-m", "storage.journal_process"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, close_fds=True)
        self._pipe: IO[bytes] = self._proc.stdin  # type: ignore[assignment]
        self._acks: IO[bytes] = self._proc.stdout  # type: ignore[assignment]
        self._send((url, run_id, batch_size))

    def _send(self, item: Any) -> None:
        try:
            pickle.dump(item, self._pipe, protocol=pickle.HIGHEST_PROTOCOL)
            self._pipe.flush()
        except (BrokenPipeError, OSError):
            raise StorageError("the journal writer process died; see the log") from None

    def put(self, batch: Any) -> None:
        """One journal batch (a :class:`storage.journal.Committed`), written after those before it."""
        if self._proc.poll() is not None:
            raise StorageError("the journal writer process died; see the log")
        self._send(batch)

    def sync(self) -> None:
        """Return once every batch sent so far is committed."""
        self.put(_SYNC)
        if not self._acks.readline():
            raise StorageError("the journal writer process died; see the log")

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._send(None)
            except StorageError:
                pass
        try:
            self._pipe.close()
        except OSError:
            pass
        code = self._proc.wait()
        if code != 0:
            raise StorageError(f"journal writer process failed (exit code {code})")


def serve(source: IO[bytes], acks: IO[bytes]) -> None:
    """The writer: the first item is (url, run id, batch size), then journal batches, each
    written as one transaction, and sync markers (each answered with a line on ``acks``), until
    None (or the end of input)."""
    # The parent decides how an interrupted run ends (a terminal's Ctrl-C and systemd's SIGTERM
    # reach the whole process group): it sends the end of the stream and waits for the last rows.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from storage.db import make_engine  # noqa: PLC0415 - the writer's only heavy imports
    from storage.journal import Journal  # noqa: PLC0415

    url, run_id, batch_size = pickle.load(source)
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        # This process only appends rows of a run whose row the parent has already committed:
        # the per-row foreign-key lookup buys nothing here and costs a sixth of the insert time.
        event.listen(engine, "connect", _no_fk_checks)
        engine.dispose()
    journal = Journal(engine, run_id, batch_size)
    try:
        while True:
            try:
                batch = pickle.load(source)
            except EOFError:  # the parent is gone: what it sent is written
                break
            if batch is None:
                break
            if isinstance(batch, str):  # a sync marker
                acks.write(b"ok\n")
                acks.flush()
                continue
            journal.write_batch(batch)
    finally:
        engine.dispose()


def _no_fk_checks(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=OFF")
    # WAL checkpoints without fsync: a backtest's journal is recomputable from its inputs, and
    # the run is only marked completed after the parent has seen this process finish.
    cur.execute("PRAGMA synchronous=OFF")
    cur.close()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
