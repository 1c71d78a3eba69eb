"""JSON answers: ISO-8601 UTC times, Decimals as strings, no NaN, secrets masked.

FastAPI's own encoder turns a Decimal into a float; every answer of this API is built here
instead, so money keeps its exact journaled digits.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from fastapi.responses import Response

from bot.redact import mask

#: Journal columns that hold UTC epoch milliseconds.
MS_FIELDS = frozenset({"time", "bar_time", "created_time", "updated_time", "entry_time", "exit_time",
                       "first_bar", "last_bar", "mark_time"})


def iso_ms(ms: int) -> str:
    """Epoch ms -> ``2024-01-10T05:00:00Z`` (``.123Z`` when there are milliseconds)."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{ms % 1000:03d}Z" if ms % 1000 else "Z")


def iso_dt(dt: datetime) -> str:
    """A journal datetime (naive ones are UTC: SQLite keeps no zone) in the same form."""
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    ms = dt.microsecond // 1000
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{ms:03d}Z" if ms else "Z")


def row(r: dict[str, Any]) -> dict[str, Any]:
    """A journal row with its epoch-ms columns as ISO times (nested payloads are left as stored)."""
    return {k: iso_ms(v) if k in MS_FIELDS and isinstance(v, int) and not isinstance(v, bool) else v
            for k, v in r.items()}


def jsonable(v: Any) -> Any:
    if isinstance(v, Decimal):
        return format(v, "f") if v.is_finite() else None
    if isinstance(v, bool) or v is None or isinstance(v, str | int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, datetime):
        return iso_dt(v)
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    if hasattr(v, "item"):  # numpy scalars
        return jsonable(v.item())
    return str(v)


def dumps(payload: Any) -> str:
    return json.dumps(mask(jsonable(payload)), allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def answer(payload: Any, status: int = 200) -> Response:
    """The JSON response of every endpoint (never cached: a running run changes under it)."""
    return Response(dumps(payload), status_code=status, media_type="application/json",
                    headers={"Cache-Control": "no-store"})
