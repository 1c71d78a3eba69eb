"""Run the simulator from tests: in the test's own loop, or on a background thread.

The thread form serves synchronous clients (pybit, requests) and subprocesses (a ``bot run``
that a test kills), which must not share the test's event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from broker.bybit_sim.app import SimConfig, SimModule, SimServer

T = TypeVar("T")


class SimThread:
    """A :class:`SimServer` on its own event loop in a daemon thread."""

    def __init__(self, cfg: SimConfig, modules: Sequence[SimModule] | None = None) -> None:
        self.cfg = cfg
        self.modules = modules
        self.loop = asyncio.new_event_loop()
        self.server: SimServer | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="bybit-sim", daemon=True)

    def start(self) -> SimServer:
        self._thread.start()

        async def _start() -> SimServer:
            return await SimServer(self.cfg, self.modules).start()

        self.server = asyncio.run_coroutine_threadsafe(_start(), self.loop).result(timeout=30)
        return self.server

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the simulator's loop thread (e.g. ``server.state.clock.pause``)."""
        async def _call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(_call(), self.loop).result(timeout=30)

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=30)
            self.server = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@contextmanager
def sim_thread(cfg: SimConfig, modules: Sequence[SimModule] | None = None) -> Iterator[SimServer]:
    t = SimThread(cfg, modules)
    server = t.start()
    server.thread = t  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        t.stop()
