"""Time helpers: UTC epoch milliseconds to and from text.

A leaf like :mod:`bot.domain`: it imports nothing of the project except :mod:`bot.errors`
(itself a leaf), so every layer, strategies and models included, may use it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from bot.errors import DataError


def ms_to_iso(ms: int) -> str:
    """Epoch milliseconds -> ``YYYY-MM-DDTHH:MM:SSZ`` (UTC)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_utc(value: int | datetime) -> str:
    """Epoch milliseconds or a datetime (naive: UTC) -> ISO-8601 UTC, ``2024-01-01T00:00:00Z``,
    with milliseconds (``...00.250Z``) only when there are some."""
    if isinstance(value, datetime):
        dt = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        ms = dt.microsecond // 1000
    else:
        dt = datetime.fromtimestamp(value // 1000, tz=UTC)
        ms = value % 1000
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms:03d}Z" if ms else f"{text}Z"


def parse_date(value: str) -> int:
    """``2024-01-01`` or an ISO datetime (UTC if naive) -> epoch ms."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise DataError(f"bad date {value!r}: expected YYYY-MM-DD or an ISO datetime") from None
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.value // 1_000_000)
