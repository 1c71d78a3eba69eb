"""Funding on linear markets (bot/funding.py): each settlement of the real Bybit funding file is
charged on the position held before the settling bar's fills, at that bar's open, journaled as a
row; the summary's total equals a direct sum over the file; spot and ``none`` pay nothing; a bad
file is one line."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from bot import app as core
from bot.cli.run import market_data
from bot.config import load_config
from bot.funding import load_funding
from storage import queries as q
from storage.db import open_database

ROOT = Path(__file__).resolve().parents[1]
SLICE = ("2024-01-01", "2024-04-01")


def run(data_dir: Path, url: str, **sets: object) -> tuple[dict, object]:
    cfg = load_config(None, [], {"strategy.name": "sma", "storage.url": url, **sets})
    (md,) = market_data(cfg, str(data_dir / "bybit_BTCUSDT_1h.csv.gz"), *SLICE, None)
    db = open_database(url)
    return core.backtest_markets(cfg, [md], db, show_progress=False), db


def expected(data_dir: Path, db: object, run_id: str) -> tuple[list[Decimal], float]:
    """Every settlement's amount from the journal's fills, the candles and the funding file."""
    candles = pd.read_csv(data_dir / "bybit_BTCUSDT_1h.csv.gz")
    rates = load_funding(data_dir / "bybit_BTCUSDT_funding_8h.csv.gz")
    eq = q.equity(db, run_id)
    first, last = eq[0]["time"], eq[-1]["time"]
    fills = q.fills(db, run_id)
    out = []
    for t, r in zip(rates.times.tolist(), rates.rates.tolist(), strict=True):
        if not first < t <= last:
            continue
        bar = candles[candles["timestamp"] >= t].iloc[0]
        pos = sum((Decimal(f["qty"]) * (1 if f["side"] == "Buy" else -1) for f in fills
                   if f["time"] < bar["timestamp"]), Decimal(0))
        if pos:
            out.append(-(pos * Decimal(repr(float(bar["open"]))) * Decimal(repr(r))).quantize(Decimal("1e-10")))
    return out, float(-sum(out, Decimal(0)))


@pytest.mark.parametrize("short", [False, True])
def test_funding_paid_equals_a_direct_sum_over_the_file(data_dir: Path, sqlite_url: str, short: bool) -> None:
    summary, db = run(data_dir, sqlite_url, **{"strategy.params.allow_short": short})
    rows = q.funding(db, summary["run_id"])
    want, paid = expected(data_dir, db, summary["run_id"])
    assert [Decimal(r["amount"]) for r in rows] == want and len(rows) > 100
    assert summary["funding_paid"] == pytest.approx(paid, abs=1e-9) and paid != 0
    assert float(q.funding_paid(db, summary["run_id"])) == pytest.approx(paid, abs=1e-9)
    signs = {(Decimal(r["qty"]) > 0, r["rate"] > 0, Decimal(r["amount"]) > 0) for r in rows if r["rate"]}
    assert (True, True, False) in signs  # a long pays a positive rate
    if short:
        assert (False, True, True) in signs  # a short receives it
    events = [e for e in q.events(db, summary["run_id"]) if e["kind"] == "funding_rates"]
    assert events and events[0]["payload"]["source"].endswith("bybit_BTCUSDT_funding_8h.csv.gz")


@pytest.mark.parametrize("sets", [{"market.category": "spot"}, {"market.funding": "none"}])
def test_spot_and_none_pay_no_funding(data_dir: Path, sqlite_url: str, sets: dict) -> None:
    summary, db = run(data_dir, sqlite_url, **sets)
    assert q.funding(db, summary["run_id"]) == [] and summary["funding_paid"] == 0.0


def bot(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.parametrize(("content", "line"), [
    ("time,rate\n1,0.0001\n", "expected header timestamp,funding_rate, got time,rate"),
    ("timestamp,funding_rate\n2,0.0001\n1,0.0001\n", "times must increase (row 3)"),
    ("timestamp,funding_rate\n1,0.5\n", "row 2 has a rate of 10 % or more (rates are decimals: 0.0001 = 0.01 %)"),
    ("timestamp,funding_rate\n1,abc\n", "row 2 is not a number"),
])
def test_a_bad_funding_file_is_one_line(btc_1h: Path, tmp_path: Path, content: str, line: str) -> None:
    f = tmp_path / "f.csv.gz"
    f.write_bytes(gzip.compress(content.encode()))
    r = bot("backtest", "--strategy", "sma", "--data", str(btc_1h), "--set", f"market.funding={f}",
            "--db", f"sqlite:///{tmp_path / 'j.db'}", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == f"error: funding file {f}: {line}", r.stderr


def test_journal_summary_and_json_show_the_funding(data_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    r = bot("backtest", "--strategy", "sma", "--data", str(data_dir / "bybit_BTCUSDT_1h.csv.gz"), "--from", SLICE[0],
            "--to", SLICE[1], "--db", url, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    paid = json.loads(r.stdout)["funding_paid"]
    assert paid > 0
    shown = bot("backtest", "--strategy", "sma", "--data", str(data_dir / "bybit_BTCUSDT_1h.csv.gz"), "--from",
                SLICE[0], "--to", SLICE[1], "--db", url, cwd=tmp_path)
    assert "BTCUSDT: funding settled from" in shown.stdout and "funding paid" in shown.stdout
    s = bot("journal", "summary", "--db", url, "--format", "json", cwd=tmp_path)
    assert json.loads(s.stdout)["funding_paid"] == pytest.approx(paid)
    t = bot("journal", "summary", "--db", url, cwd=tmp_path)
    assert any(line.split()[:1] == ["funding_paid"] for line in t.stdout.splitlines())
