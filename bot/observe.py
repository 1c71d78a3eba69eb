"""Watching a run from outside the trading path: metrics, alerts, anything that reports.

A :class:`RunObserver` is told four things by the runner, and never decides anything:

- ``started(runner)``: the run is open in the journal (its id is known);
- ``committed(rows)``: rows the journal has just *committed* (decisions, orders, fills, trades,
  events): an observer only ever reports what the journal already holds;
- ``bar_done(runner, took_s)``: paper and live, after each bar group was played and committed;
  ``took_s`` is the wall time from the group reaching the engines to its orders being sent;
- ``finished(runner, status)``: the run's final status.

Observers run in the event loop's thread and must be quick (queue slow work, e.g. network
sends, to a thread of their own). An observer that raises is logged and never stops the run.
"""

from __future__ import annotations

from typing import Any

import structlog

from storage.journal import Committed

log = structlog.get_logger("bot.observe")

__all__ = ["Committed", "Observers", "RunObserver"]


class RunObserver:
    """No-op hooks; subclasses override what they watch."""

    def started(self, runner: Any) -> None:
        pass

    def committed(self, rows: Committed) -> None:
        pass

    def bar_done(self, runner: Any, took_s: float) -> None:
        pass

    def finished(self, runner: Any, status: str) -> None:
        pass


class Observers:
    """The run's observers, each call guarded: an observer's failure is logged, never raised."""

    def __init__(self, observers: list[RunObserver] | None = None) -> None:
        self.items = list(observers or [])

    def __bool__(self) -> bool:
        return bool(self.items)

    def _each(self, hook: str, *args: Any) -> None:
        for o in self.items:
            try:
                getattr(o, hook)(*args)
            except Exception as exc:  # noqa: BLE001 - reporting must never stop trading
                log.error("observer_failed", observer=type(o).__name__, hook=hook,
                          error=f"{type(exc).__name__}: {exc}")

    def started(self, runner: Any) -> None:
        self._each("started", runner)

    def committed(self, rows: Committed) -> None:
        self._each("committed", rows)

    def bar_done(self, runner: Any, took_s: float) -> None:
        self._each("bar_done", runner, took_s)

    def finished(self, runner: Any, status: str) -> None:
        self._each("finished", runner, status)
