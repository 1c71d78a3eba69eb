"""The bot's event-path backtest beside backtesting.py and a bare Python loop, in one run.

SMA(10/30) crossover, long while fast > slow else flat, decided at a bar's close and filled at the
next bar's open, 0.1 % fee on both sides, all-in sizing (``floor_to_lot(equity / (close x 1.001))``,
lots of 0.001 BTC, no minimum notional), 10,000 USDT, on the real Bybit BTCUSDT 1h candles tiled to each size (as
``bench/backtest_throughput.py`` tiles them) and kept on the 0.1 tick. The bot runs its real CLI with the journal on (a
SQLite file); its "engine" time is the summary's ``elapsed_s`` (opening the run to the last journal
row), as backtesting.py's is ``Backtest.run`` (its indicators, loop and statistics), neither
counting the CSV read. Each engine's trades and final equity are compared with the bot's, and the
bot's own time is split by cProfile into where it goes (``--profile``). Like the bot's SMA, the
peers act on a change of signal only: a buy the wallet cannot afford at that close is not tried
again on the next bars (over a million bars the fees leave the wallet near one lot, where that
rule decides the trade count).

backtesting.py is a bench extra (``pip install -e '.[bench]'``), never a runtime dependency.
Usage: python bench/backtest_vs_peers.py [--repeat K] [--profile] [N ...]   (default 100000 1000000)
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import json
import math
import os
import pstats
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backtest_throughput import on_tick, tiled  # noqa: E402

FAST, SLOW, FEE, CASH, LOT = 10, 30, 0.001, 10_000.0, 0.001


def _settings(cash: float = CASH) -> list[str]:
    """The bot's ``--set`` flags for the rule every engine here runs."""
    values = {"strategy.params.fast": FAST, "strategy.params.slow": SLOW, "broker.fee_rate": FEE,
              "broker.initial_cash": cash, "market.min_notional": 0}
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


def bot(data: Path, tmp: Path, cash: float = CASH) -> dict[str, float]:
    db = tmp / "bot.db"
    db.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bot", "backtest", "--strategy", "sma", "--data", str(data),
           "--db", f"sqlite:///{db}", "--json", *_settings(cash)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bot backtest failed: {err.decode().strip()[-2000:]}")
    s = json.loads(out)
    return {"s": s["elapsed_s"], "wall_s": wall, "trades": s["n_trades"], "equity": s["final_equity"],
            "orders": s["orders"], "decisions": s["decisions"]}


def _frame(data: Path) -> pd.DataFrame:
    df = pd.read_csv(data)
    df.index = pd.to_datetime(df.timestamp, unit="ms")
    return df.rename(columns=str.capitalize)[["Open", "High", "Low", "Close", "Volume"]]


def backtesting_py(df: pd.DataFrame) -> dict[str, float]:
    from backtesting import Strategy
    from backtesting.lib import FractionalBacktest

    def sma(x: np.ndarray, n: int) -> np.ndarray:
        return pd.Series(x).rolling(n).mean().to_numpy()

    class SmaCross(Strategy):
        def init(self) -> None:
            self.fast = self.I(sma, self.data.Close, FAST)
            self.slow = self.I(sma, self.data.Close, SLOW)

        last: bool | None = None

        def next(self) -> None:
            long = self.fast[-1] > self.slow[-1]
            if long == self.last:
                return  # the bot's SMA decides on a change of signal only
            self.last = long
            if long and not self.position:  # all in, in whole lots of LOT (the bot's sizing)
                lots = math.floor(self.equity / (self.data.Close[-1] * (1 + FEE)))
                if lots >= 1:  # below one lot the bot sends nothing either
                    self.buy(size=lots)
            elif not long and self.position:
                self.position.close()

    bt = FractionalBacktest(df, SmaCross, cash=CASH, commission=FEE, fractional_unit=LOT)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # its progress bar
        warnings.simplefilter("ignore")  # "some trades remain open": the bot's last one is open too
        t0 = time.perf_counter()
        r = bt.run()
        took = time.perf_counter() - t0
    return {"s": took, "trades": int(r["# Trades"]), "equity": float(r["Equity Final [$]"])}


def bare_loop(df: pd.DataFrame) -> dict[str, float]:
    """The same rule as plain Python over lists: no orders, no journal, no engine."""
    t0 = time.perf_counter()
    o, c = df.Open.tolist(), df.Close.tolist()
    cash, qty, fs, ss, trades, pending, last = CASH, 0.0, 0.0, 0.0, 0, None, None
    for i, price in enumerate(c):
        if pending is not None:
            px = o[i]
            if pending > 0:
                cash -= pending * px * (1 + FEE)
                qty = pending
            else:
                cash += qty * px * (1 - FEE)
                qty, trades = 0.0, trades + 1
            pending = None
        fs += price - (c[i - FAST] if i >= FAST else 0.0)
        ss += price - (c[i - SLOW] if i >= SLOW else 0.0)
        if i + 1 < SLOW:
            continue
        long = fs / FAST > ss / SLOW
        if long == last:
            continue
        last = long
        if long and not qty:
            pending = math.floor((cash + qty * price) / (price * (1 + FEE)) / LOT) * LOT or None
        elif not long and qty:
            pending = -qty
    return {"s": time.perf_counter() - t0, "trades": trades + (1 if qty else 0), "equity": cash + qty * c[-1]}


def profile(data: Path, tmp: Path) -> str:
    """The bot's backtest in this process under cProfile: the top functions by own time."""
    from typer.testing import CliRunner

    from bot.cli import app

    db = tmp / "profile.db"
    db.unlink(missing_ok=True)
    prof = cProfile.Profile()
    prof.enable()
    res = CliRunner().invoke(app, ["backtest", "--strategy", "sma", "--data", str(data), "--db", f"sqlite:///{db}",
                                   "--json", *_settings()])
    prof.disable()
    if res.exit_code != 0:
        raise SystemExit(res.output)
    st = pstats.Stats(prof, stream=io.StringIO())
    total = sum(v[2] for v in st.stats.values())  # type: ignore[attr-defined]
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:25]  # type: ignore[attr-defined]
    out = ["| function | calls | own s | share |", "|---|---:|---:|---:|"]
    for (file, line, name), (_, ncalls, tt, _, _) in rows:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else file
        out.append(f"| `{name}` {where} | {ncalls:,} | {tt:.3f} | {tt / total:.1%} |")
    return "\n".join(out)


def main() -> None:
    args = sys.argv[1:]
    repeat, want_profile = 3, "--profile" in args
    if want_profile:
        args.remove("--profile")
    if "--repeat" in args:
        k = args.index("--repeat")
        repeat = int(args[k + 1])
        del args[k:k + 2]
    sizes = [int(x) for x in args] or [100_000, 1_000_000]
    try:
        import backtesting  # noqa: F401, PLC0415
    except ImportError:
        raise SystemExit("backtesting.py is not installed: pip install -e '.[bench]'") from None
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, "
          f"fastest of {repeat} runs (the engines taking turns)")
    print()
    print("| bars | engine | s | bars/s | x backtesting.py | trades | final equity | vs the bot |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    profiles, per_order = [], []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for n in sizes:
            data = on_tick(tiled(n, tmp / f"tiled_{n}.csv.gz"), tmp / f"tick_{n}.csv.gz")
            df = _frame(data)
            runs: dict[str, list[dict[str, float]]] = {"bot (journal on)": [], "backtesting.py": [],
                                                       "bare Python loop": []}
            idle = []  # the same run with a wallet too small for one lot: every decision, no order
            for _ in range(repeat):
                runs["bot (journal on)"].append(bot(data, tmp))
                idle.append(bot(data, tmp, cash=1.0))
                runs["backtesting.py"].append(backtesting_py(df))
                runs["bare Python loop"].append(bare_loop(df))
            best = {k: min(v, key=lambda r: r["s"]) for k, v in runs.items()}
            ref, peer = best["bot (journal on)"], best["backtesting.py"]
            for name, r in best.items():
                diff = r["equity"] - ref["equity"]
                print(f"| {n:,} | {name} | {r['s']:.3f} | {n / r['s']:,.0f} | {peer['s'] / r['s']:.2f} | "
                      f"{r['trades']:,} | {r['equity']:,.2f} | {diff:+,.2f} |")
            quiet = min(idle, key=lambda r: r["s"])
            per_order.append((n, ref, quiet))
            if want_profile:
                profiles.append((n, profile(data, tmp)))
    print("\nWhat an order costs: the run above less the same run with 1 USDT (the same decisions, none")
    print("affordable: no order, fill or trade, and their journal rows), per order sent:\n")
    print("| bars | orders | decisions | s | s without orders | per order |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, ref, quiet in per_order:
        assert quiet["orders"] == 0 and quiet["decisions"] == ref["decisions"], (quiet, ref)
        print(f"| {n:,} | {ref['orders']:,} | {ref['decisions']:,} | {ref['s']:.3f} | {quiet['s']:.3f} | "
              f"{(ref['s'] - quiet['s']) / ref['orders'] * 1e6:.1f} us |")
    for n, table in profiles:
        print(f"\nWhere the bot's time goes at {n:,} bars (cProfile, own time, in-process CLI):\n")
        print(table)


if __name__ == "__main__":
    main()
