"""The README's model results, regenerated: walk-forward of dsc, rollout and gru_sizer over
Bybit BTCUSDT and ETHUSDT 1h, several seeds, beside buy and hold, SMA(10/30) and vol_only.

Each (strategy, market) is one ``bot walkforward --json`` run (expanding window, ``--folds``
test blocks after the first half of the file, ``--seeds`` trainings per fold, the funding file
beside the candles settled, fee 0.1 % per side). The blocks are journaled (``--db``); this
script prints one markdown table per market: the stitched out-of-sample return and Sharpe of
every seed with their 95 % block-bootstrap intervals, the baselines on the same bars, and
how many seeds beat buy and hold. ``--out FILE`` also writes the tables there (the README
quotes docs/walkforward_results.md). Each finished run is kept as ``--work``/<strategy>_<symbol>.json;
``--reuse`` takes those instead of running them again (split the work over several invocations,
e.g. one per ``--strategies``, then print all tables with ``--reuse``).

Run: ``python bench/walkforward_models.py [--folds 3] [--seeds 3] [--workers 2] [--out docs/walkforward_results.md]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BOT_DATA_DIR", ROOT.parent / "shared" / "data"))
STRATEGIES = ("dsc", "rollout", "gru_sizer")
MARKETS = ("BTCUSDT", "ETHUSDT")
BASELINES = ("buy_hold", "sma", "vol_only")


def run_one(strategy: str, symbol: str, args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], float]:
    """One ``bot walkforward --json`` (its progress lines go to this terminal); (result, seconds)."""
    cmd = [sys.executable, "-m", "bot", "walkforward", "--strategy", strategy,
           "--data", str(DATA / f"bybit_{symbol}_1h.csv.gz"), "--set", f"market.symbol={symbol}",
           "--folds", str(args.folds), "--seeds", str(args.seeds), "--workers", str(args.workers),
           "--db", args.db, "--out", str(work / f"{strategy}_{symbol}"), "--json"]
    saved = work / f"{strategy}_{symbol}.json"
    if args.reuse and saved.exists():  # a finished run of an earlier invocation
        kept = json.loads(saved.read_text())
        return kept["result"], kept["seconds"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"walkforward {strategy} {symbol} failed (exit {proc.returncode})")
    result, seconds = json.loads(proc.stdout), time.perf_counter() - t0
    saved.write_text(json.dumps({"result": result, "seconds": seconds}))
    return result, seconds


def _iv(x: dict[str, float], pct: bool) -> str:
    f = (lambda v: f"{v * 100:+.1f} %") if pct else (lambda v: f"{v:.2f}")
    return f"{f(x['value'])} [{f(x['low'])}, {f(x['high'])}]"


def market_table(symbol: str, results: dict[str, dict[str, Any]], seconds: dict[str, float]) -> list[str]:
    first = next(iter(results.values()))
    blocks = first["blocks"]
    span = f"{blocks[0]['start'][:10]} .. {blocks[-1]['end'][:10]}"
    lines = [f"#### {symbol} 1h, out of sample {span} ({len(first['folds'])} folds)", "",
             "| strategy | seed | bars | return [95 %] | Sharpe [95 %] | max drawdown | closed trades | fees (USDT) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def row(name: str, s: dict[str, Any], wf: dict[str, Any]) -> str:
        mine = [b for b in wf["blocks"] if b["strategy"] == name and b["seed"] == s["seed"]]
        trades = sum(int(b.get("n_trades") or 0) for b in mine)
        fees = sum(float(b.get("fees") or 0.0) for b in mine)
        seed = "" if s["seed"] is None else str(s["seed"])
        return (f"| {name} | {seed} | {s['bars']:,} | {_iv(s['total_return'], True)} | {_iv(s['sharpe'], False)} "
                f"| {s['max_drawdown'] * 100:.1f} % | {trades} | {fees:,.0f} |")

    for strategy, wf in results.items():
        for s in wf["stitched"]:
            if s["strategy"] == strategy:
                lines.append(row(strategy, s, wf))
    for s in first["stitched"]:
        if s["strategy"] in BASELINES:
            lines.append(row(s["strategy"], s, first))
    lines.append("")
    bh = next(s for s in first["stitched"] if s["strategy"] == "buy_hold")
    for strategy, wf in results.items():
        seeds = [s for s in wf["stitched"] if s["strategy"] == strategy]
        beat = sum(s["sharpe"]["value"] > bh["sharpe"]["value"] for s in seeds)
        apart = sum(s["sharpe"]["low"] > bh["sharpe"]["high"] for s in seeds)
        sure = sum(s["sharpe"]["low"] > 0 for s in seeds)
        lines.append(f"- {strategy}: Sharpe above buy and hold's in {beat} of {len(seeds)} seeds, its whole 95 % "
                     f"interval above buy and hold's in {apart}; Sharpe interval above 0 in {sure} of {len(seeds)}; "
                     f"{seconds[strategy] / 60:.1f} min wall.")
    lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--markets", default=",".join(MARKETS))
    ap.add_argument("--work", type=Path, default=ROOT / "walkforward", help="checkpoints and the journal")
    ap.add_argument("--db", default=None, help="journal URL (default: sqlite in --work)")
    ap.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown file")
    ap.add_argument("--reuse", action="store_true",
                    help="take a (strategy, market) finished by an earlier run from --work instead of running it")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.db = args.db or f"sqlite:///{(args.work / 'walkforward.db').resolve()}"
    out: list[str] = [f"Regenerated by `python bench/walkforward_models.py --folds {args.folds} --seeds {args.seeds}`; "
                      f"fee 0.1 % per side, next-open fills, funding settled, 10,000 USDT per block.", ""]
    for symbol in args.markets.split(","):
        results: dict[str, dict[str, Any]] = {}
        seconds: dict[str, float] = {}
        for strategy in args.strategies.split(","):
            results[strategy], seconds[strategy] = run_one(strategy, symbol, args, args.work)
        out += market_table(symbol, results, seconds)
    text = "\n".join(out)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
