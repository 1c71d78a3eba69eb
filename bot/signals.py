"""Process signals: SIGTERM takes Ctrl-C's path, and named start-up points a test can signal at.

``docker stop`` and systemd send SIGTERM. :func:`install` (the first thing ``bot`` does) makes it
do exactly what Ctrl-C does at that moment: a backtest raises ``KeyboardInterrupt`` and ends
``interrupted``; inside ``asyncio.run`` the main task is cancelled (asyncio's own Ctrl-C
handling), so a paper or live start-up unwinds and closes its clients; once a run is open its
runner handles both signals itself and the run ends ``stopped``.

:func:`point` marks a named step of start-up. With ``BOT_SIGNAL_AT=<point>`` (or
``<point>:TERM``, ``<point>:INT``) the process sends itself that signal there (SIGKILL by
default): a real signal to the real process, so tests can prove that a kill or a stop at any
step leaves a journal that ``--resume`` continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from types import FrameType
from typing import Any

#: The environment variable naming the point (and signal) of :func:`point`.
ENV = "BOT_SIGNAL_AT"

_terminated = False


def install() -> None:
    """SIGTERM behaves like Ctrl-C from now on (main thread only)."""
    signal.signal(signal.SIGTERM, _on_term)


def terminated() -> bool:
    """Whether a SIGTERM arrived (the CLI exits 143 instead of Ctrl-C's 130)."""
    return _terminated


def _on_term(signum: int, frame: FrameType | None) -> None:
    global _terminated
    _terminated = True
    handler: Any = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signal.SIGINT, frame)  # asyncio.run's handler: cancel the main task, as Ctrl-C does
        return
    raise KeyboardInterrupt


def point(name: str) -> None:
    """A named step of start-up; see the module docstring."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    where, _, sig = spec.partition(":")
    if where == name:
        os.kill(os.getpid(), getattr(signal, f"SIG{sig or 'KILL'}"))


class StopOnSignals:
    """SIGINT/SIGTERM set the stop event: the bar loop ends and the run is marked stopped.
    Removing them puts back the handlers that were there (asyncio's Ctrl-C, :func:`install`'s
    SIGTERM), so shutting down stays as interruptible as starting up."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.loop = asyncio.get_running_loop()
        self.installed: list[tuple[int, Any]] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(sig)
            try:
                self.loop.add_signal_handler(sig, stop.set)
                self.installed.append((sig, previous))
            except (NotImplementedError, RuntimeError):
                pass

    def remove(self) -> None:
        for sig, previous in self.installed:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, TypeError):
                self.loop.remove_signal_handler(sig)
                if previous is not None:
                    signal.signal(sig, previous)
