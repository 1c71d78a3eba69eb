"""Live trading under chaos: a real ``bot run --mode live`` on the local simulator with 5 % of REST
answered 502/503, 10 % of creates' acknowledgements lost, every WebSocket dropped every 40
confirmed bars, every fill in up to 3 executions and every 6th market order half filled then
cancelled (partial fills), SIGKILLed ``--kills`` times at
random moments and at points of the order life cycle, resumed with ``--resume`` each time, then
run to a fixed end. Prints one row per market: exchange orders, executions, lost fills, duplicate
orders, other disagreements between journal and venue, bot failures, and the journal's position
against the exchange's (spot: the coin balance). The scenario is tests/chaos.py, which
tests/test_live_chaos.py runs with 6 kills.
Usage: python bench/live_chaos.py [--kills 100] [--category linear|spot|both] [--seed 1]
       [--partial-fills 3] [--thin-every 6] [--bar-ms 300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.logs import configure  # noqa: E402
from tests.chaos import Scenario, run_scenario, table  # noqa: E402

DATA = Path(os.environ.get("BOT_DATA_DIR", ROOT.parent / "shared" / "data")) / "bybit_BTCUSDT_1h.csv.gz"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--category", choices=("linear", "spot", "both"), default="both")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--partial-fills", type=int, default=3, help="executions per fill, at most (1 = whole fills)")
    p.add_argument("--thin-every", type=int, default=6,
                   help="every Nth market order is half filled, the rest cancelled (0 = never)")
    p.add_argument("--bar-ms", type=float, default=300.0)
    p.add_argument("--keep", type=Path, help="keep the journals and the bot's logs in this folder")
    a = p.parse_args()
    if a.kills < 0 or a.bar_ms <= 0 or a.partial_fills < 1 or a.thin_every < 0:
        p.error("--kills must be >= 0, --bar-ms > 0, --partial-fills >= 1 and --thin-every >= 0")
    if not DATA.is_file():
        p.error(f"candles not found at {DATA} (set BOT_DATA_DIR)")
    configure("warning")  # the in-process simulator's info lines stay off the table (stdout)
    cats = ("linear", "spot") if a.category == "both" else (a.category,)
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        work = a.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for cat in cats:
            sc = Scenario(data=DATA, category=cat, kills=a.kills, seed=a.seed, partial_fills=a.partial_fills,
                          thin_every=a.thin_every, bar_ms=a.bar_ms)
            outcomes.append(run_scenario(sc, work, progress=lambda m: print(m, file=sys.stderr, flush=True)))
    print(table(outcomes))
    return 0 if all(o.clean for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
