"""``bot data download`` against the simulator: paginated, rate-limit aware (10006 and 5xx
injected), resumable without duplicates, output identical to the source candles."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from bot.cli import app
from bot.timeutil import ms_to_iso
from broker.bybit_sim import FaultConfig, SimConfig
from broker.bybit_sim.testing import sim_thread


def test_download_paginates_survives_faults_and_resumes(btc_1h: Path, tmp_path: Path) -> None:
    src = pd.read_csv(btc_1h, dtype=str)
    faults = FaultConfig(rate_limit=4, http_error_rate=0.15, seed=3)
    with sim_thread(SimConfig(data=[str(btc_1h)], bar_ms=60_000.0, history=2600, faults=faults)) as sim:
        out = tmp_path / "btc_1h.csv.gz"
        t = [int(x) for x in src.timestamp]
        first, mid = t[100], t[1400]
        args = ["data", "download", "--symbol", "BTCUSDT", "--timeframe", "1h", "--out", str(out),
                "--rest-url", sim.rest_url]
        runner = CliRunner()
        r1 = runner.invoke(app, [*args, "--since", ms_to_iso(first), "--until", ms_to_iso(mid)])
        assert r1.exit_code == 0, r1.output
        got = pd.read_csv(out, dtype=str)
        assert list(got.timestamp.astype(int)) == t[100:1400]  # 1300 bars: two pages
        # Resume: same command without --until appends the rest, nothing twice, open bar excluded.
        r2 = runner.invoke(app, [*args, "--since", ms_to_iso(first)])
        assert r2.exit_code == 0, r2.output
        got = pd.read_csv(out, dtype=str)
        closed = sim.state.markets["BTCUSDT"].closed_count(sim.state.now_ms())
        assert got.timestamp.is_unique and got.timestamp.astype(int).is_monotonic_increasing
        assert list(got.timestamp.astype(int)) == t[100:closed]
        # The replay format, values exactly as in the source file.
        exp = src.iloc[100:closed].reset_index(drop=True)
        for col in ("open", "high", "low", "close", "volume"):
            assert (got[col].astype(float) == exp[col].astype(float)).all(), col
        assert sim.state.stats["rate_limited"] + sim.state.stats["http_5xx"] >= 1
        r3 = runner.invoke(app, [*args, "--since", "2024-01-01", "--exchange", "nosuchexchange"])
        assert r3.exit_code != 0 and "unknown ccxt exchange id" in str(r3.exception or r3.output)


def test_backtest_without_data_downloads_into_cache_or_says_pass_data(btc_1h: Path, tmp_path: Path,
                                                                      monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BOT_CACHE_DIR", str(tmp_path / "cache"))
    db = f"sqlite:///{tmp_path / 'j.db'}"
    runner = CliRunner()
    with sim_thread(SimConfig(data=[str(btc_1h)], bar_ms=60_000.0, history=400)) as sim:
        first = int(sim.state.markets["BTCUSDT"].t[100])
        r = runner.invoke(app, ["backtest", "--from", ms_to_iso(first), "--db", db, "--json",
                                "--set", f"exchange.rest_url={sim.rest_url}"])
        assert r.exit_code == 0, r.output
        cached = list((tmp_path / "cache").glob("bybit_linear_BTCUSDT_1h.csv.gz"))
        assert cached and len(pd.read_csv(cached[0])) == 300  # bars 100..399, the closed ones
    # Exchange unreachable and nothing cached for this market: one line asking for --data.
    r = runner.invoke(app, ["backtest", "--db", db, "--set", "market.symbol=ETHUSDT",
                            "--set", "exchange.rest_url=http://127.0.0.1:9"])
    assert r.exit_code != 0 and "pass --data FILE" in str(r.exception)
