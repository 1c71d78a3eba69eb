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

import numpy as np

from bot.bars import Bars
from bot.domain import Candle, timeframe_ms


class Stepper(Protocol):
    """A market's engine as a source drives it: ``on_bar`` = ``fill`` then ``decide``."""

    def on_bar(self) -> None: ...

    def fill(self) -> None: ...

    def decide(self) -> None: ...


#: One bar's (or one batch's) playback: reveals bars into the books and steps their engines.
Batch = Callable[[Sequence[Stepper]], None]


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

            def play(engines: Sequence[Stepper], k: int = k) -> None:
                step = engines[0].on_bar
                for _ in range(k):
                    bars.n += 1  # reveal the next preloaded bar (bounded by `total`)
                    step()

            yield play
            self.done += k

    async def aclose(self) -> None:
        return None


def play_group(engines: Sequence[Stepper], group: Sequence[int]) -> None:
    """Markets whose bars (already in their books) close at the same time: every market's fills
    first (they happened at the bars' open), then each marks and decides, in config order.
    (``MergedSource`` inlines the same two loops over bound methods: its per-bar hot path.)"""
    for m in group:
        engines[m].fill()
    for m in group:
        engines[m].decide()


class MergedSource:
    """Backtests of several markets: every preloaded book revealed in (close time, market) order,
    bars that close together played as one group."""

    CHUNK = 50_000

    def __init__(self, order: Any, closes: Any, total: int) -> None:
        #: Market index and close time of every bar, in playing order (:func:`bot.candles.merge_order`).
        self.order = order
        self.closes = closes
        self.total = total
        self.stopped_early = f"stopped after {total} bars" if total < len(order) else None
        self.done = 0

    async def batches(self, books: Sequence[Bars]) -> AsyncIterator[Batch]:
        while self.done < self.total:
            end = min(self.done + self.CHUNK, self.total)
            while end < self.total and self.closes[end] == self.closes[end - 1]:
                end += 1  # never split a group of bars that close together
            order = self.order[self.done:end].tolist()
            cuts = (np.flatnonzero(np.diff(self.closes[self.done:end])) + 1).tolist()
            spans = list(zip([0, *cuts], [*cuts, end - self.done], strict=True))

            def play(engines: Sequence[Stepper], order: list[int] = order,
                     spans: list[tuple[int, int]] = spans) -> None:
                on_bar = [e.on_bar for e in engines]
                fill = [e.fill for e in engines]
                decide = [e.decide for e in engines]
                for a, b in spans:
                    if b - a == 1:
                        m = order[a]
                        books[m].n += 1
                        on_bar[m]()
                        continue
                    group = order[a:b]
                    for g in group:
                        books[g].n += 1
                        fill[g]()
                    for g in group:
                        decide[g]()

            yield play
            self.done = end

    async def aclose(self) -> None:
        return None


class StreamSource:
    """Paper and live: closed candles as they arrive (a venue's stream or a paced replay), in
    batches released together; each candle is appended to its market's book (by symbol) and the
    bars that close together are played as one group."""

    def __init__(self, batches: AsyncIterator[list[Candle]], stop_at_ms: int | None = None,
                 close: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        self.candles = batches
        self.stop_at_ms = stop_at_ms
        self.stopped_early: str | None = None
        self._close = close

    async def batches(self, books: Sequence[Bars]) -> AsyncIterator[Batch]:
        index = {b.symbol: i for i, b in enumerate(books)}
        tf = [timeframe_ms(b.timeframe) for b in books]
        async for batch in self.candles:
            groups: list[list[tuple[int, Candle]]] = []
            last_close: int | None = None
            ended = False
            for c in batch:
                if self.stop_at_ms is not None and c.open_time >= self.stop_at_ms:
                    ended = True
                    break
                m = index.get(c.symbol)
                if m is None:
                    continue  # a symbol this run does not trade
                close = c.open_time + tf[m]
                if close != last_close:
                    groups.append([])
                    last_close = close
                groups[-1].append((m, c))
            for group in groups:
                yield self._play(books, group)
            if ended:
                return

    @staticmethod
    def _play(books: Sequence[Bars], group: list[tuple[int, Candle]]) -> Batch:
        def play(engines: Sequence[Stepper]) -> None:
            for m, c in group:
                books[m].append(c)
            if len(group) == 1:
                engines[group[0][0]].on_bar()
            else:
                play_group(engines, [m for m, _ in group])

        return play

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
