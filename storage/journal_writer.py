"""The second process of :mod:`storage.journal_process`: ``python -m storage.journal_writer``
reads the parent's pickled journal batches from stdin and writes each as one transaction."""

from __future__ import annotations

import os
import pickle
import signal
import sys
from typing import IO, Any

from sqlalchemy import event


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

    try:
        url, run_id, batch_size = pickle.load(source)
    except EOFError:  # a writer started ahead (journal_process.prestart) that no run needed
        return
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
            if isinstance(batch, str):  # the sync marker
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
    # Every batch is committed and the database closed: skip the interpreter's teardown (tens of
    # milliseconds the parent would wait for at the end of every large backtest).
    sys.stdout.flush()
    os._exit(0)
