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
from bot.blocks import fast_forward_group
from bot.domain import Candle, timeframe_ms


class Stepper(Protocol):
    """A market's engine as a source drives it: ``on_bar`` = ``fill`` then ``decide``."""

    def on_bar(self) -> None: ...

    def fill(self) -> None: ...

    def fast_forward(self, end: int) -> int: ...

    def decide(self, trade: bool = True) -> None: ...


#: One bar's (or one batch's) playback: reveals bars into the books and steps their engines.
Batch = Callable[[Sequence[Stepper]], None]


class BarSource(Protocol):
    """Where closed bars come from: preloaded files, a replayed one, a venue's stream."""

    #: Why the source ended before its data did (a test's ``stop_after``), or None.
    stopped_early: str | None

    def batches(self, books: Sequence[Bars]) -> AsyncIterator[Batch]: ...

    async def aclose(self) -> None: ...


class PreloadedSource:
    """Backtests: every preloaded book revealed in (close time, market) order, bars that close
    together played as one group: every market's fills first (they happened at the bars' open),
    then each marks and decides, in config order.

    The playing order is known before the run, so each chunk is cut, once, into runs of
    identical groups ("market 0 alone, 3 times", "markets 0 and 1, 50,000 times"): the per-bar
    loop then only reveals and steps, as fast for several aligned markets as for one."""

    CHUNK = 50_000
    #: Quiet bars of a one-market group as blocks (``Engine.fast_forward``); False: bar by bar.
    fast_forward = True

    def __init__(self, order: Any, closes: Any, total: int) -> None:
        #: Market index and close time of every bar, in playing order (:func:`bot.candles.merge_order`).
        self.order = np.asarray(order)
        self.closes = np.asarray(closes)
        self.total = total
        self.stopped_early = f"stopped after {total} bars" if total < len(order) else None
        self.done = 0

    async def batches(self, books: Sequence[Bars]) -> AsyncIterator[Batch]:
        while self.done < self.total:
            end = min(self.done + self.CHUNK, self.total)
            while end < self.total and self.closes[end] == self.closes[end - 1]:
                end += 1  # never split a group of bars that close together
            runs = group_runs(self.order[self.done:end], self.closes[self.done:end])

            def play(engines: Sequence[Stepper], runs: list[tuple[tuple[int, ...], int]] = runs) -> None:
                for markets, count in runs:
                    if len(markets) == 1:
                        bars, engine = books[markets[0]], engines[markets[0]]
                        step = engine.on_bar
                        if not (self.fast_forward and getattr(engine, "can_fast_forward", False)):
                            for _ in range(count):
                                bars.n += 1  # reveal the next preloaded bar (bounded by `total`)
                                step()
                            continue
                        end, skip = bars.n + count, engine.fast_forward
                        while bars.n < end:
                            skip(end)  # the quiet bars ahead as one block (maybe none) ...
                            if bars.n < end:  # ... then the bar that ended it, which is not quiet
                                bars.n += 1
                                step()
                        continue
                    fills = [(books[m], engines[m].fill) for m in markets]
                    decides = [engines[m].decide for m in markets]
                    group = [engines[m] for m in markets]
                    skip = self.fast_forward and all(getattr(e, "can_skip_bars", False) for e in group)
                    left = count
                    while left:
                        if skip:  # the group's quiet bars ahead as one block (maybe none) ...
                            left -= fast_forward_group(group, left)  # type: ignore[arg-type]
                            if not left:
                                break
                        for bars, fill in fills:  # ... then the next bar, bar by bar
                            bars.n += 1
                            fill()
                        for decide in decides:
                            decide()
                        left -= 1

            yield play
            self.done = end

    async def aclose(self) -> None:
        return None


def group_runs(order: np.ndarray, closes: np.ndarray) -> list[tuple[tuple[int, ...], int]]:
    """The bars of ``order`` (market indices; ``closes``: their close times, ascending) as runs
    of consecutive identical groups of same-close bars: ``[(markets of the group, repeats)]``."""
    n = len(order)
    if n == 0:
        return []
    starts = np.flatnonzero(np.r_[True, closes[1:] != closes[:-1]])
    lengths = np.diff(np.r_[starts, n])
    # A group repeats the one before when it is as long and each bar's market is the market of
    # the bar one previous-group-length earlier.
    prev_len = np.repeat(np.r_[0, lengths[:-1]], lengths)
    same_bar = order == order[np.arange(n) - prev_len]
    repeats = np.zeros(len(starts), dtype=bool)
    repeats[1:] = (lengths[1:] == lengths[:-1]) & np.logical_and.reduceat(same_bar, starts)[1:]
    firsts = np.flatnonzero(~repeats)
    counts = np.diff(np.r_[firsts, len(starts)]).tolist()
    return [(tuple(order[starts[g]:starts[g] + lengths[g]].tolist()), c)
            for g, c in zip(firsts.tolist(), counts, strict=True)]


class StreamSource:
    """Paper and live: closed candles as they arrive (a venue's stream or a paced replay), in
    batches released together; each candle is appended to its market's book (by symbol) and the
    bars that close together are played as one group.

    A bar of a batch that also holds a newer bar of its market (a backfill after downtime or a
    feed gap) is a catch-up bar: shown to the strategy and journaled, never traded at its old
    close (``Engine.decide(trade=False)``). Only each market's newest bar may trade."""

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
            groups: list[list[tuple[int, Candle, bool]]] = []
            last_close: int | None = None
            ended = False
            newest = {c.symbol: c.open_time for c in batch}  # ascending within each market
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
                groups[-1].append((m, c, c.open_time == newest[c.symbol]))
            for group in groups:
                yield self._play(books, group)
            if ended:
                return

    @staticmethod
    def _play(books: Sequence[Bars], group: list[tuple[int, Candle, bool]]) -> Batch:
        def play(engines: Sequence[Stepper]) -> None:
            for m, c, _ in group:
                books[m].append(c)
            for m, _, _ in group:
                engines[m].fill()
            for m, _, trade in group:
                engines[m].decide(trade)

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
