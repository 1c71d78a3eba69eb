"""The simulator's clock: sim (market) time as a linear function of wall time.

Accelerated mode plays one bar every ``bar_ms`` wall milliseconds; real-time mode plays the
file at 1x. Sim time starts at the open of the bar that is forming when the server starts, so
every bar before it is already closed history. Auth checks of the private half must use
:meth:`SimClock.wall_ms` (clients sign with their real clock), market data uses :meth:`now_ms`.
"""

from __future__ import annotations

import time


class SimClock:
    def __init__(self, start_ms: int, speed: float) -> None:
        """``speed``: sim milliseconds per wall millisecond (1.0 = real time)."""
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.start_ms = int(start_ms)
        self.speed = float(speed)
        self._wall0 = time.monotonic()
        self._paused_at: float | None = None
        self._pause_at_ms: int | None = None
        self._frozen_ms: int | None = None  # the exact time a pause point stopped the clock at

    @classmethod
    def accelerated(cls, start_ms: int, timeframe_ms: int, bar_ms: float) -> SimClock:
        return cls(start_ms, timeframe_ms / float(bar_ms))

    @classmethod
    def realtime(cls, start_ms: int) -> SimClock:
        return cls(start_ms, 1.0)

    def now_ms(self) -> int:
        """Current sim (exchange) time in epoch ms."""
        if self._pause_at_ms is not None and self._paused_at is None:
            at = self.monotonic_at(self._pause_at_ms)
            if time.monotonic() >= at:
                self._paused_at, self._frozen_ms, self._pause_at_ms = at, self._pause_at_ms, None
        if self._frozen_ms is not None:
            return self._frozen_ms
        wall = self._paused_at if self._paused_at is not None else time.monotonic()
        return self.start_ms + int((wall - self._wall0) * 1000.0 * self.speed)

    # Tests freeze the market while a bot restarts, so a slow machine cannot outrun the scenario.
    def pause(self) -> None:
        if self._paused_at is None:
            self._paused_at = time.monotonic()

    def pause_at(self, sim_ms: int) -> None:
        """The market stops by itself when its clock reaches ``sim_ms`` (until :meth:`resume`)."""
        self._pause_at_ms = int(sim_ms)
        self.now_ms()

    def resume(self) -> None:
        self._pause_at_ms = self._frozen_ms = None
        if self._paused_at is not None:
            self._wall0 += time.monotonic() - self._paused_at
            self._paused_at = None

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def monotonic_at(self, sim_ms: int) -> float:
        """The ``time.monotonic()`` value at which sim time reaches ``sim_ms``."""
        return self._wall0 + (sim_ms - self.start_ms) / self.speed / 1000.0

    def seconds_until(self, sim_ms: int) -> float:
        """Wall seconds until ``sim_ms``; while paused, a short poll interval."""
        now = self.now_ms()  # (reaching a pause point pauses)
        if self._paused_at is not None:
            return 0.05 if sim_ms > now else 0.0
        due = self.monotonic_at(sim_ms)
        if self._pause_at_ms is not None:  # wake at the pause point at the latest
            due = min(due, self.monotonic_at(self._pause_at_ms) + 0.001)
        return max(0.0, due - time.monotonic())

    @staticmethod
    def wall_ms() -> int:
        """Real wall-clock time (for request signatures and rate-limit headers)."""
        return int(time.time() * 1000)
