"""Where a run's closed bars come from, and in which order the markets see them.

A source plays bars into the markets' buffers (``books``, one :class:`~bot.bars.Bars` per
market, in config order) and calls that market's step (its engine's ``on_bar``). Markets whose
bars close at the same time are stepped in config order: a backtest merges the files by
(close time, market), a venue's feed delivers same-close bars in that order (BybitFeed), and a
replay of several files merges them the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, Protocol

from bot.bars import Bars
from bot.domain import Candle

Step = Callable[[], None]
#: One bar's (or one batch's) playback: reveals bars into the books and calls their markets' steps.
Batch = Callable[[Sequence[Step]], None]


class BarSource(Protocol):
    """Where closed bars come from: preloaded files, a replayed one, a venue's stream."""

    #: Why the source ended before its data did (a test's ``stop_after``), or None.
    stopped_early: str | None

    def batches(self, books: Sequence[Bars]) -> AsyncIterator[Batch]: ...

    async def aclose(self) -> None: ...


class PreloadedSource:
    """Backtests of one market: the whole file is in the book already; batches reveal it."""

    CHUNK = 50_000

    def __init__(self, total: int, tradable: int) -> None:
        self.total = total
        self.stopped_early = f"stopped after {total} bars" if total < tradable else None
        self.done = 0

    async def batches(self, books: Sequence[Bars]) -> AsyncIterator[Batch]:
        bars = books[0]
        while self.done < self.total:
            k = min(self.CHUNK, self.total - self.done)

            def play(steps: Sequence[Step], k: int = k) -> None:
                step = steps[0]
                for _ in range(k):
                    bars.n += 1  # reveal the next preloaded bar (bounded by `total`)
                    step()

            yield play
            self.done += k

    async def aclose(self) -> None:
        return None


class MergedSource:
    """Backtests of several markets: every preloaded book revealed in (close time, market) order."""

    CHUNK = 50_000

    def __init__(self, order: Any, total: int) -> None:
        #: Market index of every bar, in playing order (:func:`bot.candles.merge_order`).
        self.order = order
        self.total = total
        self.stopped_early = f"stopped after {total} bars" if total < len(order) else None
        self.done = 0

    async def batches(self, books: Sequence[Bars]) -> AsyncIterator[Batch]:
        while self.done < self.total:
            chunk = self.order[self.done:min(self.done + self.CHUNK, self.total)].tolist()

            def play(steps: Sequence[Step], chunk: list[int] = chunk) -> None:
                for m in chunk:
                    books[m].n += 1
                    steps[m]()

            yield play
            self.done += len(chunk)

    async def aclose(self) -> None:
        return None


class StreamSource:
    """Paper and live: closed candles as they arrive (a venue's stream or a paced replay), each
    appended to its market's book (by symbol) and stepped."""

    def __init__(self, candles: AsyncIterator[Candle], stop_at_ms: int | None = None,
                 close: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        self.candles = candles
        self.stop_at_ms = stop_at_ms
        self.stopped_early: str | None = None
        self._close = close

    async def batches(self, books: Sequence[Bars]) -> AsyncIterator[Batch]:
        index = {b.symbol: i for i, b in enumerate(books)}
        async for c in self.candles:
            if self.stop_at_ms is not None and c.open_time >= self.stop_at_ms:
                return
            m = index.get(c.symbol)
            if m is None:
                continue  # a symbol this run does not trade
            books[m].append(c)

            def play(steps: Sequence[Step], m: int = m) -> None:
                steps[m]()

            yield play

    async def aclose(self) -> None:
        closer = getattr(self.candles, "aclose", None)
        with contextlib.suppress(Exception):
            if closer is not None:
                await closer()
            if self._close is not None:
                await self._close()


async def until_stopped(batches: AsyncIterator[Batch], stop: asyncio.Event) -> AsyncIterator[Batch]:
    """The source's batches until ``stop`` is set (a stop also interrupts a wait for the next bar)."""
    it = batches.__aiter__()
    try:
        while not stop.is_set():
            nxt = asyncio.ensure_future(it.__anext__())
            waiter = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({nxt, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if nxt in done:
                waiter.cancel()
                try:
                    yield nxt.result()
                except StopAsyncIteration:
                    return
            else:
                nxt.cancel()
                return
    finally:
        closer = getattr(it, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()
