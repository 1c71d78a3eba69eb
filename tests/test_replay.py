"""The replay feed validates candle files before anything runs."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from bot.errors import DataError
from bot.feeds.replay import load_candles
from bot.timeutil import parse_date

HOUR = 3_600_000
HEADER = "timestamp,open,high,low,close,volume\n"


def _write(tmp_path: Path, body: str, name: str = "c.csv", header: str = HEADER) -> Path:
    p = tmp_path / name
    p.write_text(header + body)
    return p


def _row(i: int, o: float = 100, h: float = 101, lo: float = 99, c: float = 100, v: float = 1) -> str:
    return f"{1_700_006_400_000 + i * HOUR},{o},{h},{lo},{c},{v}\n"


def _load(p: Path, **kw):  # type: ignore[no-untyped-def]
    return load_candles(p, symbol="BTCUSDT", timeframe="1h", bar_ms=HOUR, **kw)


def test_reads_the_real_shared_file(btc_1h: Path) -> None:
    d = _load(btc_1h)
    assert len(d) == 19_261 and d.gaps.count == 0
    assert d.time[0] == 1_701_216_000_000  # 2023-11-29T00:00Z


def test_csv_gz_and_parquet_agree(tmp_path: Path) -> None:
    body = "".join(_row(i, h=110, c=100 + i) for i in range(5))
    csv = _write(tmp_path, body)
    gz = tmp_path / "c.csv.gz"
    with gzip.open(gz, "wt") as f:
        f.write(HEADER + body)
    pq = tmp_path / "c.parquet"
    pd.read_csv(csv).to_parquet(pq)
    a, b, c = _load(csv), _load(gz), _load(pq)
    assert list(a.close) == list(b.close) == list(c.close)


@pytest.mark.parametrize(("body", "header", "message"), [
    (_row(0), "time,o,h,l,c,v\n", "header must be exactly"),
    (_row(0) + _row(0), HEADER, "duplicate timestamp"),
    (_row(1) + _row(0), HEADER, "not sorted"),
    (_row(0) + _row(1).replace(",100,", ",nan,", 1), HEADER, "NaN"),
    (_row(0) + "1700010000000,100,101,99,,1\n", HEADER, "missing or non-numeric"),
    (_row(0, o=0, lo=0), HEADER, "non-positive price"),
    (_row(0, h=99.5), HEADER, "high/low inconsistent"),
    (_row(0, lo=100.5), HEADER, "high/low inconsistent"),
    ("", HEADER, "no candles"),
])
def test_bad_files_are_refused_with_one_line(tmp_path: Path, body: str, header: str, message: str) -> None:
    p = _write(tmp_path, body, header=header)
    with pytest.raises(DataError) as exc:
        _load(p)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_missing_file_and_wrong_timeframe(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        _load(tmp_path / "nope.csv")
    p = _write(tmp_path, "".join(_row(i) for i in range(10)))
    with pytest.raises(DataError, match="timeframe"):
        load_candles(p, symbol="BTCUSDT", timeframe="1m", bar_ms=60_000)


def test_gaps_are_reported_not_filled(tmp_path: Path) -> None:
    rows = [0, 1, 2, 5, 6, 10, 11, 12, 13, 14]  # two gaps: 2 and 3 missing bars
    p = _write(tmp_path, "".join(_row(i) for i in rows))
    d = _load(p)
    assert len(d) == len(rows)  # nothing invented
    assert d.gaps.count == 2 and d.gaps.missing_bars == 5
    assert d.gaps.largest_ms == 4 * HOUR and d.gaps.largest_at == 1_700_006_400_000 + 6 * HOUR


def test_from_to_filters(btc_1h: Path) -> None:
    d = _load(btc_1h, start_ms=parse_date("2024-01-01"), end_ms=parse_date("2024-01-02"))
    assert len(d) == 24 and d.time[0] == parse_date("2024-01-01")
    with pytest.raises(DataError, match="no candles between"):
        _load(btc_1h, start_ms=parse_date("2030-01-01"))
    with pytest.raises(DataError, match="bad date"):
        parse_date("yesterday-ish")
