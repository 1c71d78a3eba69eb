"""Write a backtest's journal from a second process.

A backtest's journal rows (decisions with their encoded explanations, orders, fills, trades and
one equity row per bar) cost as much to write as the engine costs to run. Written from a thread
they still hold the GIL while SQLAlchemy and sqlite bind each row, so engine and writer take
turns on one core; a second process writes them on the other core while the engine keeps running.

The writer is ``python -m storage.journal_writer``, fed the journal's batches
(:class:`storage.journal.Committed`) pickled over its stdin, in order; each is one transaction
there, as it would be in the parent. A thread feeds the pipe from a bounded queue, so the
writer's start and a slow stretch do not hold the engine back; a full queue does. It imports only the
database layer, so it is ready in a fraction of a second; a ``multiprocessing`` child would first
re-import the command's main module (the whole CLI). ``sync`` waits until every batch sent is
written; ``close`` sends the end of the stream and waits for the writer to exit, raising if it
failed. The writer also ends at end of input, so a parent killed outright leaves no writer behind.

Its imports take a third of a second, most of a 100k-bar backtest: ``bot backtest`` calls
:func:`prestart` before it reads a large candle file, and the run's writer is that process, its
imports done by then. One that no run takes is sent the end of input when this process exits.
"""

from __future__ import annotations

import atexit
import contextlib
import pickle
import queue
import subprocess
import sys
import threading
from typing import IO, Any

from bot.errors import StorageError
from storage import explain_codec, schema

#: Decimal columns of the rows a batch carries (its field -> that table's exact-decimal columns).
_DECIMALS = {name: tuple(c.name for c in table.c if isinstance(c.type, schema.ExactDecimal))
             for name, table in (("new_orders", schema.orders), ("fills", schema.fills),
                                 ("trades", schema.trades), ("funding", schema.funding))}

#: The marker after which the writer answers a line: every batch before it is committed.
SYNC = "sync"


_spare: list[subprocess.Popen[bytes]] = []


def _spawn() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "storage.journal_writer"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, close_fds=True)


def prestart() -> None:
    """Start the next run's writer now, so that its imports overlap the caller's own work."""
    if not _spare:
        _spare.append(_spawn())
        atexit.register(_drop_spare)


def _drop_spare() -> None:
    while _spare:
        proc = _spare.pop()
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _take() -> subprocess.Popen[bytes]:
    """The prestarted writer if it is still alive, else a new one."""
    while _spare:
        proc = _spare.pop()
        if proc.poll() is None:
            return proc
    return _spawn()


def _decimals_as_text(batch: Any) -> None:
    """A batch's decimals as their exact text, in place: a Decimal costs pickle seven times its
    text, and the writer's column type (storage.schema.ExactDecimal) reads the text back exactly."""
    for name, keys in _DECIMALS.items():
        for row in getattr(batch, name):
            for k in keys:
                v = row.get(k)
                if v is not None:
                    row[k] = str(v)
    for values in batch.order_updates.values():
        for k in _DECIMALS["new_orders"]:
            v = values.get(k)
            if v is not None:
                values[k] = str(v)


def _explanations_encoded(batch: Any) -> None:
    """A batch's explanations as their stored bytes, in place (the column type passes bytes on)."""
    encode = explain_codec.encode
    for row in batch.decisions:
        row["explanation"] = encode(row["explanation"])
    for values in batch.decision_updates.values():
        if "explanation" in values:
            values["explanation"] = encode(values["explanation"])


class JournalProcess:
    #: Batches pickled but not yet in the pipe, at most: the writer's start (its imports) and a
    #: slow stretch are absorbed without holding the engine back, and memory stays bounded.
    QUEUE = 32
    #: Batches waiting for the writer from which this process encodes a batch's explanations
    #: itself (most of the writer's work for a model strategy): the two cores share it.
    BEHIND = 2

    def __init__(self, url: str, run_id: str, batch_size: int) -> None:
        self._proc = _take()
        self._pipe: IO[bytes] = self._proc.stdin  # type: ignore[assignment]
        self._acks: IO[bytes] = self._proc.stdout  # type: ignore[assignment]
        self._queue: queue.Queue[bytes | None] = queue.Queue(self.QUEUE)
        self._failed = False
        # The pipe is fed from a thread: a blocked write releases the GIL, so the engine runs on.
        self._feeder = threading.Thread(target=self._feed, name="journal-feed", daemon=True)
        self._feeder.start()
        self._send((url, run_id, batch_size))

    def _feed(self) -> None:
        try:
            while (data := self._queue.get()) is not None:
                self._pipe.write(data)
                self._pipe.flush()
        except (BrokenPipeError, OSError, ValueError):
            self._failed = True
            while self._queue.get() is not None:  # drain: senders must never block on a dead writer
                pass

    def _send(self, item: Any) -> None:
        if self._failed or not self._feeder.is_alive():
            raise StorageError("the journal writer process died; see the log")
        self._queue.put(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))

    def put(self, batch: Any) -> None:
        """One journal batch (a :class:`storage.journal.Committed`), written after those before it.
        The batch is this process's no longer: its decimals are sent as their text."""
        self._alive()
        _decimals_as_text(batch)
        if self._queue.qsize() >= self.BEHIND:
            _explanations_encoded(batch)
        self._send(batch)

    def _alive(self) -> None:
        if self._proc.poll() is not None:
            raise StorageError("the journal writer process died; see the log")

    def sync(self) -> None:
        """Return once every batch sent so far is committed."""
        self._alive()
        self._send(SYNC)
        if not self._acks.readline():
            raise StorageError("the journal writer process died; see the log")

    def close(self) -> None:
        if self._feeder.is_alive():
            try:
                self._send(None)  # the end of the stream, for the writer
            except StorageError:
                pass
            self._queue.put(None)  # the end of the feed, for the thread
            self._feeder.join()
        try:
            self._pipe.close()
        except OSError:
            pass
        code = self._proc.wait()
        if code != 0:
            raise StorageError(f"journal writer process failed (exit code {code})")
