"""Write a backtest's journal from a second process.

A backtest's journal rows (decisions with their encoded explanations, orders, fills, trades and
one equity row per bar) cost as much to write as the engine costs to run. Written from a thread
they still hold the GIL while SQLAlchemy and sqlite bind each row, so engine and writer take
turns on one core; a second process writes them on the other core while the engine keeps running.

The writer is ``python -m storage.journal_writer``, fed the journal's batches
(:class:`storage.journal.Committed`) pickled over its stdin, in order; each is one transaction
there, as it would be in the parent (a full pipe holds the engine back). It imports only the
database layer, so it is ready in a fraction of a second; a ``multiprocessing`` child would first
re-import the command's main module (the whole CLI). ``sync`` waits until every batch sent is
written; ``close`` sends the end of the stream and waits for the writer to exit, raising if it
failed. The writer also ends at end of input, so a parent killed outright leaves no writer behind.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import IO, Any

from bot.errors import StorageError

#: The marker after which the writer answers a line: every batch before it is committed.
SYNC = "sync"


class JournalProcess:
    def __init__(self, url: str, run_id: str, batch_size: int) -> None:
        self._proc = subprocess.Popen([sys.executable, "-m", "storage.journal_writer"], stdin=subprocess.PIPE,
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
        self.put(SYNC)
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
