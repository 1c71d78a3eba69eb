"""The equity curve stored as blocks: one row of ``equity_blocks`` holds a market's marks for a
run of consecutive bars (a backtest's flush: thousands; a live bar: one).

A mark per bar is most of a backtest's journal by row count; written as rows it cost more than the
engine that computed it. A block is five little-endian columns (the bar times as int64 deltas
from the first, then equity, cash, position and price as float64) behind a one-byte format tag,
zlib-compressed (regular bar times and a position held for many bars shrink to almost nothing).
Values round-trip exactly.

Blocks of a run may overlap (a resumed run that re-marks a bar): the reader keeps each time's mark
from the block written first, as the row table's insert-or-ignore did (:func:`merge`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

#: The block layout this module writes (the first byte of every block).
FORMAT = 1
COLUMNS = ("time", "equity", "cash", "position", "price")
_LEVEL = 1  # the writer's core is the scarce one: fast compression, still ~4x on typical curves


class EquityBlockError(ValueError):
    """A stored block this module cannot read (a newer format, or damaged bytes)."""


def encode(times: Any, equity: Any, cash: Any, position: Any, price: Any) -> bytes:
    """One block from equal-length array-likes (numpy arrays, ``array.array``, sequences)."""
    t = np.asarray(times, dtype="<i8")
    cols = [np.asarray(c, dtype="<f8") for c in (equity, cash, position, price)]
    if any(len(c) != len(t) for c in cols) or not len(t):
        raise ValueError("an equity block needs equal, non-empty columns")
    deltas = np.empty_like(t)
    deltas[0] = t[0]
    np.subtract(t[1:], t[:-1], out=deltas[1:])
    payload = b"".join([deltas.tobytes(), *(c.tobytes() for c in cols)])
    return bytes([FORMAT]) + zlib.compress(payload, _LEVEL)


def decode(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(times int64, equity, cash, position, price float64) of one block."""
    if not data or data[0] != FORMAT:
        raise EquityBlockError(f"equity block format {data[0] if data else None!r} is not {FORMAT}")
    try:
        raw = zlib.decompress(data[1:])
    except zlib.error as exc:
        raise EquityBlockError(f"damaged equity block: {exc}") from None
    if len(raw) % 40:
        raise EquityBlockError("damaged equity block: its length is not whole rows")
    n = len(raw) // 40
    times = np.cumsum(np.frombuffer(raw, dtype="<i8", count=n)).astype(np.int64)
    cols = [np.frombuffer(raw, dtype="<f8", count=n, offset=8 * n * (k + 1)) for k in range(4)]
    return times, cols[0], cols[1], cols[2], cols[3]


def merge(blocks: Iterable[bytes]) -> tuple[np.ndarray, ...]:
    """Blocks in the order they were written, as one curve in time order; a time marked by more
    than one block keeps the mark written first."""
    parts = [decode(b) for b in blocks]
    if not parts:
        return tuple(np.empty(0, dtype=np.int64 if k == 0 else np.float64) for k in range(5))
    cols = [np.concatenate([p[k] for p in parts]) for k in range(5)]
    times = cols[0]
    if len(parts) > 1 or (len(times) > 1 and not bool(np.all(times[1:] > times[:-1]))):
        # np.unique's first index of each time, in a stable sort, is the first-written mark.
        _, first = np.unique(times, return_index=True)
        cols = [c[first] for c in cols]
    return tuple(cols)


def rows(curve: Sequence[np.ndarray], extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A merged curve as row dicts (``time`` an int, the rest floats), each with ``extra``'s keys."""
    lists = [c.tolist() for c in curve]
    head = extra or {}
    return [{**head, **dict(zip(COLUMNS, r, strict=True))} for r in zip(*lists, strict=True)]


def blocks_of(marks: Iterable[tuple[str, Any, Any, Any, Any, Any]]) -> list[tuple[str, int, int, int, bytes]]:
    """A journal batch's marks (symbol, times, equity, cash, position, price array-likes, in bar
    order per market) as one encoded block per market: (symbol, first time, last time, rows, bytes)."""
    by_symbol: dict[str, list[tuple[Any, ...]]] = {}
    for sym, *cols in marks:
        by_symbol.setdefault(sym, []).append(tuple(cols))
    out = []
    for sym, parts in by_symbol.items():
        cols = [np.concatenate([np.asarray(p[k], dtype=np.int64 if k == 0 else np.float64) for p in parts])
                for k in range(5)]
        out.append((sym, int(cols[0][0]), int(cols[0][-1]), len(cols[0]), encode(*cols)))
    return out
