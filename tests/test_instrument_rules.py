"""Instrument rules (issue 13): ``bot data download`` saves the venue's tick size, qty step and
minimums beside the candles; backtests use them where the config sets none (the config wins,
the run says which was used); a tick size large against the price is refused in one line."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from bot.cli import app
from bot.feeds.instrument_file import rules_path
from bot.timeutil import ms_to_iso
from broker.bybit_sim import SimConfig
from broker.bybit_sim.testing import sim_thread
from tests.test_cli import bot


def events(db: str, kind: str) -> list[dict]:
    r = CliRunner().invoke(app, ["journal", "events", "--run", "latest", "--db", db, "--format", "json"])
    return [e["payload"] for e in json.loads(r.stdout) if e["kind"] == kind]


def test_download_saves_the_venues_rules_and_backtests_use_them(data_dir: Path, tmp_path: Path) -> None:
    src = data_dir / "bybit_ETHUSDT_1h.csv.gz"
    t = [int(x) for x in pd.read_csv(src, usecols=["timestamp"]).timestamp]
    out = tmp_path / "bybit_ETHUSDT_1h.csv.gz"
    runner = CliRunner()
    with sim_thread(SimConfig(data=[str(src)], bar_ms=60_000.0, history=1200)) as sim:
        r = runner.invoke(app, ["data", "download", "--symbol", "ETHUSDT", "--timeframe", "1h", "--out", str(out),
                                "--since", ms_to_iso(t[0]), "--until", ms_to_iso(t[1000]),
                                "--rest-url", sim.rest_url])
    assert r.exit_code == 0, r.output
    saved = json.loads(rules_path(out).read_text())
    # the simulator serves Bybit's ETHUSDT linear rules (shared/bybit samples)
    assert {k: saved[k] for k in ("symbol", "category", "tick_size", "qty_step", "min_qty", "min_notional")} == {
        "symbol": "ETHUSDT", "category": "linear", "tick_size": "0.01", "qty_step": "0.01", "min_qty": "0.01",
        "min_notional": "5"}
    assert f"instrument rules: {rules_path(out)}" in r.stdout
    db = f"sqlite:///{tmp_path / 'j.db'}"
    base = ["backtest", "--strategy", "sma", "--data", str(out), "--db", db, "--json", "--set", "market.symbol=ETHUSDT"]
    r = runner.invoke(app, base)
    assert r.exit_code == 0, r.output
    name = rules_path(out).name
    assert (f"ETHUSDT: instrument rules: tick size 0.01 ({name}), qty step 0.01 ({name}), min qty 0.01 ({name}), "
            f"min notional 5 ({name})") in r.stderr
    (ev,) = events(db, "instrument_rules")
    assert ev["tick_size"] == "0.01" and ev["qty_step_from"] == name
    fills = json.loads(runner.invoke(app, ["journal", "fills", "--run", "latest", "--db", db,
                                           "--format", "json"]).stdout)
    assert fills and all(Decimal(f["qty"]) % Decimal("0.01") == 0 for f in fills)  # whole 0.01 lots
    # The config wins, key by key, and the run says so.
    r = runner.invoke(app, [*base, "--set", "market.tick_size=0.05"])
    assert r.exit_code == 0, r.output
    assert "tick size 0.05 (config), qty step 0.01 (" in r.stderr
    assert events(db, "instrument_rules")[0]["tick_size_from"] == "config"


def scaled(df: pd.DataFrame, median: float) -> pd.DataFrame:
    """Real candles divided so that their median close is ``median`` (a small coin's prices)."""
    out = df.copy()
    k = float(df.close.astype(float).median()) / median
    for col in ("open", "high", "low", "close"):
        out[col] = (df[col].astype(float) / k).round(6)
    return out


def test_a_tick_large_against_the_price_is_refused(data_dir: Path, tmp_path: Path) -> None:
    df = pd.read_csv(data_dir / "bybit_BTCUSDT_1h.csv.gz", dtype=str).iloc[:3000]
    path = tmp_path / "coin_1h.csv"
    scaled(df, 2.72).to_csv(path, index=False)
    db = f"sqlite:///{tmp_path / 'j.db'}"
    args = ["backtest", "--strategy", "sma", "--data", str(path), "--db", db, "--json"]
    r = bot(*args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (
        "error: BTCUSDT: tick size 0.1 (default) is 3.68% of the median close 2.72, above "
        "market.max_tick_fraction 0.001: every fill would move by that much; set market.tick_size (or download "
        "the venue's rules with `bot data download`), or --set market.max_tick_fraction=0 to run anyway")
    wf = bot("walkforward", "--strategy", "sma", "--data", str(path), "--db", db)
    assert wf.returncode == 2 and wf.stderr == r.stderr  # the walk-forward's blocks too
    runner = CliRunner()
    fine = runner.invoke(app, [*args, "--set", "market.tick_size=0.0001", "--set", "market.qty_step=0.1",
                               "--set", "market.min_qty=0.1"])
    coarse = runner.invoke(app, [*args, "--set", "market.max_tick_fraction=0", "--set", "market.qty_step=0.1",
                                 "--set", "market.min_qty=0.1"])
    assert fine.exit_code == 0 and coarse.exit_code == 0, (fine.output, coarse.output)
    # what the guard prevents: the same SMA trades, every fill 0.1 away from the price
    assert json.loads(coarse.stdout)["total_return"] < json.loads(fine.stdout)["total_return"] - 0.5


def test_a_bad_rules_file_is_one_line(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "bybit_BTCUSDT_1h.csv"
    pd.read_csv(data_dir / "bybit_BTCUSDT_1h.csv.gz", dtype=str).iloc[:200].to_csv(path, index=False)
    args = ["backtest", "--strategy", "sma", "--data", str(path), "--db", f"sqlite:///{tmp_path / 'j.db'}"]
    rules_path(path).write_text(json.dumps({"symbol": "ETHUSDT", "tick_size": "0.01"}))
    r = bot(*args)
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: bybit_BTCUSDT_1h.csv.instrument.json holds the rules of ETHUSDT, "
                                "but the market is BTCUSDT")
    rules_path(path).write_text(json.dumps({"symbol": "BTCUSDT", "tick_size": "-1"}))
    r = bot(*args)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: bybit_BTCUSDT_1h.csv.instrument.json: tick_size must be positive, got -1"
