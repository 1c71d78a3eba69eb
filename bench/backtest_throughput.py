"""Backtest throughput: candles/s and peak RSS of a full ``bot backtest`` (SMA, journal on).

Tiles the real Bybit BTCUSDT 1h candles (shared/data) to N candles: each copy is rescaled so
prices join continuously and timestamps continue on the hourly grid. Runs the real CLI in a
subprocess per size and prints a table; then, per size, one backtest of two markets (BTCUSDT and
ETHUSDT tiled the same way, N candles each, SMA on both, one wallet) against the one-market time.
Usage: python bench/backtest_throughput.py [N ...]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BOT_DATA_DIR", ROOT.parent / "shared" / "data"))


def tiled(n: int, out: Path, symbol: str = "BTCUSDT") -> Path:
    src = pd.read_csv(DATA / f"bybit_{symbol}_1h.csv.gz")
    t0, step = int(src.timestamp.iloc[0]), 3_600_000
    o0 = float(src.open.iloc[0])
    parts, prev_close, k = [], o0, 0
    while sum(len(p) for p in parts) < n:
        part = src.copy()
        if k % 2 == 0:  # the real path, rescaled to start where the previous copy ended
            part[["open", "high", "low", "close"]] *= prev_close / o0
        else:  # mirrored in log space (p -> K/p) so the price wanders back instead of compounding
            kk = prev_close * o0
            part["open"], part["close"] = kk / src.open, kk / src.close
            part["high"], part["low"] = kk / src.low, kk / src.high
        prev_close = float(part.close.iloc[-1])
        parts.append(part)
        k += 1
    df = pd.concat(parts, ignore_index=True).iloc[:n]
    df["timestamp"] = t0 + np.arange(n, dtype=np.int64) * step
    df.to_csv(out, index=False, float_format="%.8g")
    return out


def run(n: int, tmp: Path) -> dict[str, float]:
    data = tiled(n, tmp / f"tiled_{n}.csv.gz")
    db = tmp / f"bench_{n}.db"
    cmd = [sys.executable, "-m", "bot", "backtest", "--strategy", "sma", "--data", str(data),
           "--db", f"sqlite:///{db}", "--json", "--set", "strategy.params.fast=10",
           "--set", "strategy.params.slow=30"]
    return _timed(cmd, tmp)


def run_two(n: int, tmp: Path) -> dict[str, float]:
    """BTCUSDT and ETHUSDT, ``n`` candles each, in one backtest (half the wallet each)."""
    sma = {"name": "sma", "params": {"fast": 10, "slow": 30}}
    markets = [{"symbol": "BTCUSDT", "data": str(tmp / f"tiled_{n}.csv.gz"), "allocation": 0.5, "strategy": sma},
               {"symbol": "ETHUSDT", "data": str(tiled(n, tmp / f"tiled_eth_{n}.csv.gz", "ETHUSDT")),
                "allocation": 0.5, "tick_size": 0.01, "qty_step": 0.01, "min_qty": 0.01, "strategy": sma}]
    cfg = tmp / f"two_{n}.yaml"
    cfg.write_text(yaml.safe_dump({"markets": markets, "storage": {"url": f"sqlite:///{tmp / f'two_{n}.db'}"}}))
    return _timed([sys.executable, "-m", "bot", "backtest", "--config", str(cfg), "--json"], tmp)


def _timed(cmd: list[str], tmp: Path) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"backtest failed: {proc.stderr.strip()}")
    rss = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024
    s = json.loads(proc.stdout)
    return {"candles": s["candles"], "engine_cps": s["candles_per_s"], "engine_s": s["elapsed_s"],
            "wall_s": wall, "wall_cps": s["candles"] / wall, "rss_mb": rss, "trades": s["n_trades"]}


def main() -> None:
    sizes = [int(x) for x in sys.argv[1:]] or [100_000, 1_000_000]
    rows, two = [], []
    with tempfile.TemporaryDirectory() as d:
        for n in sizes:
            rows.append(run(n, Path(d)))
            two.append(run_two(n, Path(d)))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    print("| candles | trades | engine s | engine candles/s | CLI wall s | CLI candles/s | peak RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['candles']:,} | {r['trades']:,} | {r['engine_s']:.2f} | {r['engine_cps']:,.0f} | "
              f"{r['wall_s']:.2f} | {r['wall_cps']:,.0f} | {r['rss_mb']:.0f} |")
    print()
    print("| markets x candles | trades | engine s | engine candles/s | x one market's engine time | peak RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for one, r in zip(rows, two, strict=True):
        print(f"| 2 x {one['candles']:,} | {r['trades']:,} | {r['engine_s']:.2f} | {r['engine_cps']:,.0f} | "
              f"{r['engine_s'] / one['engine_s']:.2f} | {r['rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
