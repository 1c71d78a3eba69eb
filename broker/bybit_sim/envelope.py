"""Bybit v5 wire formats: the REST envelope and number formatting.

Every number inside ``result`` is a string on Bybit (prices, quantities, ms timestamps); the
envelope ``time`` is a JSON number. See ../shared/bybit/README.md.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


def ok(result: dict[str, Any], now_ms: int) -> dict[str, Any]:
    return {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": int(now_ms)}


def error(code: int, msg: str, now_ms: int) -> dict[str, Any]:
    """A business error: HTTP 200, ``retCode != 0``, empty ``result``."""
    return {"retCode": int(code), "retMsg": msg, "result": {}, "retExtInfo": {}, "time": int(now_ms)}


def respond(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(body, separators=(",", ":")), status=status,
                        content_type="application/json", headers=headers)


def num(x: float, decimals: int | None = None) -> str:
    """Shortest decimal string, Bybit style: ``30710`` not ``30710.0``; optional rounding first."""
    if decimals is not None:
        x = round(float(x), decimals)
        s = f"{x:.{decimals}f}" if decimals > 0 else str(int(round(x)))
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        return s if s not in ("-0", "") else "0"
    s = repr(float(x))
    if "e" in s or "E" in s:
        s = f"{float(x):.10f}".rstrip("0").rstrip(".")
    if s.endswith(".0"):
        s = s[:-2]
    return s


def decimals_of(step: str) -> int:
    """``"0.10"`` -> 1, ``"0.001"`` -> 3, ``"1"`` -> 0 (significant decimals of a tick or lot step)."""
    if "." not in step:
        return 0
    frac = step.split(".", 1)[1].rstrip("0")
    return len(frac)
