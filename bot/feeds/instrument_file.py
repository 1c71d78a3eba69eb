"""The venue's instrument rules saved beside a candle file: ``FILE.instrument.json``.

``bot data download`` writes them from the exchange's market info (ccxt's unified ``precision``
and ``limits``); backtests and replays read them for every rule the config leaves unset.
Values are decimal strings (exact): ``{"symbol": "SOLUSDT", "tick_size": "0.01", ...}``.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from bot.errors import DataError

SUFFIX = ".instrument.json"
RULES = ("tick_size", "qty_step", "min_qty", "min_notional")
#: Margin terms, optional: the largest leverage and the lowest risk-limit tier's maintenance
#: margin rate (broker/margin.py's defaults, Bybit BTCUSDT's, when absent).
MARGIN = ("max_leverage", "maintenance_margin_rate")


def rules_path(data_path: str | Path) -> Path:
    """``bybit_SOLUSDT_1h.csv.gz`` -> ``bybit_SOLUSDT_1h.csv.gz.instrument.json``."""
    p = Path(data_path)
    return p.with_name(p.name + SUFFIX)


def write_rules(data_path: str | Path, rules: dict[str, Any]) -> Path:
    """Write (atomically) the rules of the candles at ``data_path``; returns the file written."""
    out = rules_path(data_path)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(json.dumps(rules, indent=2) + "\n")
    os.replace(tmp, out)
    return out


def _decimal(path: Path, key: str, value: Any, positive: bool) -> Decimal:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise DataError(f"{path.name}: {key} is not a number: {value!r}") from None
    if not d.is_finite() or d < 0 or (positive and d == 0):
        raise DataError(f"{path.name}: {key} must be {'positive' if positive else 'zero or more'}, got {value}")
    return d


def read_rules(data_path: str | Path, symbol: str) -> dict[str, Decimal] | None:
    """The saved rules of ``symbol``'s candles at ``data_path`` (None: no such file). A file for
    another symbol, or with a malformed value, is one clear :class:`DataError` line."""
    path = rules_path(data_path)
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path.name}: {exc}") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path.name}: expected a JSON object of instrument rules")
    if str(raw.get("symbol", symbol)).upper() != symbol:
        raise DataError(f"{path.name} holds the rules of {raw.get('symbol')}, but the market is {symbol}")
    return {k: _decimal(path, k, raw[k], k != "min_notional") for k in RULES + MARGIN if raw.get(k) is not None}
