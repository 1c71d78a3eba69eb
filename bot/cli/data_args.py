"""``--data`` items that name their market: ``SYMBOL=FILE``, or a file whose name says its symbol.

``bot train --data A --data B`` trains one model on several assets; each file's symbol is the one
written before ``=`` or the one its name holds (``bybit_ETHUSDT_1h.csv.gz`` -> ETHUSDT, as
``bot data download`` names files). One ``--data FILE`` keeps the config's ``market.symbol``.
"""

from __future__ import annotations

import re
from pathlib import Path

from bot.errors import ConfigError

_QUOTES = ("USDT", "USDC", "USD", "PERP")
_SYMBOL = re.compile(r"^[A-Z0-9]{2,20}$")


def symbol_from_name(path: str) -> str | None:
    """The one token of the file name that reads like a symbol (``BTCUSDT``); None if none or several."""
    tokens = [t for t in re.split(r"[_\-.\s]+", Path(path).name.upper()) if t]
    hits = {t for t in tokens if _SYMBOL.match(t) and any(t.endswith(q) and len(t) > len(q) for q in _QUOTES)}
    return hits.pop() if len(hits) == 1 else None


def split_item(item: str) -> tuple[str | None, str]:
    """``SYMBOL=FILE`` -> (SYMBOL, FILE); ``FILE`` -> (None, FILE); a bad item is one ConfigError line."""
    symbol, sep, path = item.partition("=")
    if not sep:
        return None, item
    symbol = symbol.strip().upper()
    if not symbol or not path or not _SYMBOL.match(symbol):
        raise ConfigError(f"--data {item!r}: expected FILE or SYMBOL=FILE (a symbol like BTCUSDT)")
    return symbol, path


def train_assets(items: list[str], default_symbol: str) -> list[tuple[str, str]]:
    """(symbol, file) of every ``--data`` item of ``bot train``, first one first; symbols unique."""
    if len(items) == 1 and "=" not in items[0]:
        return [(default_symbol, items[0])]
    out: list[tuple[str, str]] = []
    for item in items:
        symbol, path = split_item(item)
        symbol = symbol or symbol_from_name(path)
        if symbol is None:
            raise ConfigError(f"--data {item!r}: its name names no symbol (one token like BTCUSDT); "
                              "write SYMBOL=FILE")
        if any(symbol == s for s, _ in out):
            raise ConfigError(f"--data {item!r}: symbol {symbol} is given twice; each asset once")
        out.append((symbol, path))
    return out
