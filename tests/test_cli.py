"""End to end through the real ``bot`` command: real candles in, journal out, bad input refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage import queries as q
from storage.db import open_database

ROOT = Path(__file__).resolve().parents[1]


def bot(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300, check=False)


def test_backtest_on_real_candles_then_journal(btc_1h: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'j.db'}"
    r = bot("backtest", "--strategy", "sma", "--data", str(btc_1h), "--db", db, "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    for key in ("run_id", "strategy", "candles", "n_trades", "final_equity", "total_return", "sharpe",
                "sortino", "max_drawdown", "win_rate", "fees", "elapsed_s"):
        assert key in s
    assert s["candles"] == 19_261 and s["n_trades"] > 50
    engine = open_database(db)
    trades = q.trades(engine, s["run_id"])
    fills = q.fills(engine, s["run_id"])
    assert len(trades) == s["n_trades"]
    realized = sum(float(t["gross_pnl"]) for t in trades)
    fees = sum(float(f["fee"]) for f in fills)
    assert fees == pytest.approx(s["fees"])
    # Whatever is still open at the end is marked at the last close: equity = initial + realised PnL
    # of closed trades + unrealised PnL of the open leg - every fee paid.
    last = q.equity(engine, s["run_id"])[-1]
    closed_at = trades[-1]["exit_time"] if trades else 0
    open_leg = [f for f in fills if f["time"] > closed_at]
    cost = sum(float(f["qty"]) * float(f["price"]) * (1 if f["side"] == "Buy" else -1) for f in open_leg)
    unrealized = last["position"] * last["price"] - cost
    # The funding file beside the candles is settled too (bot/funding.py).
    assert s["final_equity"] == pytest.approx(10_000 + realized + unrealized - fees - s["funding_paid"], abs=1e-6)

    r = bot("journal", "summary", "--run", "latest", "--format", "json", "--db", db)
    assert r.returncode == 0, r.stderr
    js = json.loads(r.stdout)
    assert js["n_trades"] == s["n_trades"] and js["final_equity"] == pytest.approx(s["final_equity"])
    assert js["status"] == "completed"

    r = bot("journal", "trades", "--run", s["run_id"], "--format", "csv", "--db", db)
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == s["n_trades"] + 1
    for what in ("runs", "decisions", "orders", "fills", "events"):
        r = bot("journal", what, "--format", "json", "--db", db, *([] if what == "runs" else ["--run", "latest"]))
        assert r.returncode == 0, (what, r.stderr)
        json.loads(r.stdout)




CASES = {
    "missing data file": (["--data", "does/not/exist.csv"], "data file not found"),
    "wrong header": (["--data", "{wrong_header}"], "header must be exactly"),
    "NaN rows": (["--data", "{nan_rows}"], "NaN"),
    "unknown strategy": (["--strategy", "moon", "--data", "{good}"], "unknown strategy 'moon'"),
    "malformed config": (["--config", "{bad_yaml}", "--data", "{good}"], "not valid YAML"),
    "bad --set value": (["--data", "{good}", "--set", "broker.fee_rate=lots"], "broker.fee_rate"),
    "bad strategy param": (["--data", "{good}", "--set", "strategy.params.fast=50"], "fast must be smaller"),
    "bad strategy param, no data": (["--set", "strategy.params.fast=oops"], "strategy.params.fast"),
    "unknown config key": (["--data", "{good}", "--set", "risk.yolo=1"], "unknown key"),
    "unreachable database": (["--data", "{good}", "--db", "postgresql+psycopg://nobody@127.0.0.1:1/x"],
                             "cannot connect to database"),
    "bad date": (["--data", "{good}", "--from", "someday"], "bad date"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_no_run(case: str, tmp_path: Path) -> None:
    files = {
        "wrong_header": "time,o,h,l,c,v\n1,2,3,1,2,1\n",
        "nan_rows": "timestamp,open,high,low,close,volume\n1700006400000,1,2,1,1,1\n1700010000000,nan,2,1,1,1\n",
        "good": "timestamp,open,high,low,close,volume\n"
                + "".join(f"{1700006400000 + i * 3600000},100,101,99,100,1\n" for i in range(40)),
        "bad_yaml": "market: [unclosed\n",
    }
    paths = {}
    for name, body in files.items():
        p = tmp_path / (name + (".yaml" if name == "bad_yaml" else ".csv"))
        p.write_text(body)
        paths[name] = str(p)
    args, message = CASES[case]
    args = [a.format(**paths) for a in args]
    db_path = tmp_path / "j.db"
    if "--db" not in args:
        args += ["--db", f"sqlite:///{db_path}"]
    r = bot("backtest", *args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    if db_path.exists():
        assert q.list_runs(open_database(f"sqlite:///{db_path}")) == []


def test_journal_on_unknown_run_is_one_line(tmp_path: Path) -> None:
    r = bot("journal", "trades", "--run", "nope", "--db", f"sqlite:///{tmp_path / 'j.db'}")
    assert r.returncode == 2 and r.stderr.strip() == "error: no run 'nope' in the journal"


def test_db_upgrade(tmp_path: Path) -> None:
    r = bot("db", "upgrade", "--db", f"sqlite:///{tmp_path / 'j.db'}")
    assert r.returncode == 0 and "at revision" in r.stdout


def test_paper_replay_matches_backtest(tmp_path: Path, btc_1h: Path) -> None:
    """The paper engine on a replayed file makes the backtest's decisions, orders and fills."""
    db = f"sqlite:///{tmp_path / 'j.db'}"
    common = ["--data", str(btc_1h), "--from", "2025-01-01", "--to", "2025-03-01", "--db", db, "--json"]
    a = bot("backtest", *common)
    b = bot("run", "--mode", "paper", "--feed", "replay", "--speed", "0", *common)
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    ra, rb = json.loads(a.stdout)["run_id"], json.loads(b.stdout)["run_id"]
    engine = open_database(db)

    def strip(rows: list[dict], keys: tuple[str, ...]) -> list[tuple]:
        return [tuple(r[k] for k in keys) for r in rows]

    da, dbb = q.decisions(engine, ra), q.decisions(engine, rb)
    assert strip(da, ("bar_time", "target", "status")) == strip(dbb, ("bar_time", "target", "status"))
    fa, fb = q.fills(engine, ra), q.fills(engine, rb)
    assert strip(fa, ("time", "side", "qty", "price", "fee")) == strip(fb, ("time", "side", "qty", "price", "fee"))
    assert q.resolve_run(engine, rb)["mode"] == "paper"
