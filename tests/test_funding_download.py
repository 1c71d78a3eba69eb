"""``bot data download --funding`` against the simulator's ``GET /v5/market/funding/history``
(served from the shared Bybit funding file): paginated by endTime, resumable, exact, and the
endpoint answers as Bybit's does (newest first, at most 200, startTime alone an error, nothing
past the clock)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from bot.cli import app
from bot.funding import load_funding, resolve_funding
from bot.timeutil import ms_to_iso
from broker.bybit_sim import SimConfig
from broker.bybit_sim.testing import sim_thread


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - the local simulator
        return json.loads(r.read())


def test_the_simulator_serves_funding_history_like_bybit(btc_1h: Path, data_dir: Path) -> None:
    src = load_funding(data_dir / "bybit_BTCUSDT_funding_8h.csv.gz")
    with sim_thread(SimConfig(data=[str(btc_1h)], bar_ms=60_000.0, history=2600)) as sim:
        now = sim.state.now_ms()
        base = f"{sim.rest_url}/v5/market/funding/history?category=linear&symbol=BTCUSDT"
        body = _get(base)
        rows = body["result"]["list"]
        due = [int(t) for t in src.times if t <= now]
        assert body["retCode"] == 0 and len(rows) == 200
        assert [int(r["fundingRateTimestamp"]) for r in rows] == due[::-1][:200]  # newest first, up to now
        assert rows[0]["symbol"] == "BTCUSDT" and float(rows[0]["fundingRate"]) == src.rates[len(due) - 1]
        page = _get(f"{base}&startTime={due[0]}&endTime={due[9]}&limit=5")["result"]["list"]
        assert [int(r["fundingRateTimestamp"]) for r in page] == due[9:4:-1]
        future = _get(f"{base}&endTime={now + 10 * 86_400_000}&limit=1")["result"]["list"]
        assert [int(r["fundingRateTimestamp"]) for r in future] == [due[-1]]  # never past the clock
        assert _get(f"{base}&startTime={due[0]}")["retCode"] == 10001
        assert _get(f"{base}&limit=201")["retCode"] == 10001
        assert _get(base.replace("BTCUSDT", "XRPUSDT"))["retCode"] == 10001


def test_download_funding_paginates_and_resumes(btc_1h: Path, data_dir: Path, tmp_path: Path) -> None:
    src = pd.read_csv(data_dir / "bybit_BTCUSDT_funding_8h.csv.gz", dtype=str)
    with sim_thread(SimConfig(data=[str(btc_1h)], bar_ms=60_000.0, history=4000)) as sim:
        now = sim.state.now_ms()
        candles = sim.state.markets["BTCUSDT"].t
        out = tmp_path / "bybit_BTCUSDT_1h.csv.gz"
        args = ["data", "download", "--symbol", "BTCUSDT", "--timeframe", "1h", "--out", str(out),
                "--rest-url", sim.rest_url, "--funding", "--since", ms_to_iso(int(candles[0]))]
        runner = CliRunner()
        mid = int(candles[2000])
        r1 = runner.invoke(app, [*args, "--until", ms_to_iso(mid)])
        assert r1.exit_code == 0, r1.output
        funding = tmp_path / "bybit_BTCUSDT_funding_8h.csv.gz"
        got = pd.read_csv(funding, dtype=str)
        t = src.timestamp.astype(int)
        assert list(got.timestamp.astype(int)) == list(t[t <= mid])
        r2 = runner.invoke(app, args)  # resume: the rest up to the clock, nothing twice
        assert r2.exit_code == 0, r2.output
        assert "funding rates" in r2.output
        got = pd.read_csv(funding, dtype=str)
        want = src[t <= now].reset_index(drop=True)
        assert len(want) > 400  # more than two pages of 200
        assert list(got.timestamp) == list(want.timestamp)
        assert (got.funding_rate.astype(float) == want.funding_rate.astype(float)).all()
        assert sim.state.stats["funding_requests"] >= 3  # one page, then two walking back by endTime
    # The file is the shared format and sits where market.funding: auto looks for it.
    found = resolve_funding("auto", "linear", "BTCUSDT", out)
    assert found is not None and found.source == str(funding) and len(found) == len(want)
    rules = json.loads(out.with_name(out.name + ".instrument.json").read_text())
    assert rules["max_leverage"] == "100"


def test_funding_of_spot_is_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["data", "download", "--symbol", "BTCUSDT", "--category", "spot", "--since",
                                 "2024-01-01", "--out", str(tmp_path / "x.csv.gz"), "--funding",
                                 "--rest-url", "http://127.0.0.1:9"])
    assert r.exit_code != 0 and "spot has no funding" in str(r.exception)
