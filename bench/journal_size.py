"""Journal size per 10k decisions of a backtest, as stored and with plain-JSON explanations.

For each strategy (``rollout`` and ``dsc`` with a tiny model trained first on 1,000 bars,
``sma``), a backtest over real BTCUSDT 1h candles journals into a fresh SQLite file. Then:

- ``stored``: the file as the journal wrote it (after VACUUM), and the decisions table with its
  two indexes (SQLite's dbstat), per 10k decisions;
- ``plain``: the same backtest journaled with the codec off, each explanation the plain JSON
  text the strategy produced (what the journal stored before storage/explain_codec.py);
- the mean length of one stored explanation in both forms.

Sizes do not depend on how well the tiny models trade, only on the explanation's shape.
Run: ``python bench/journal_size.py [--bars 3000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot import app as core  # noqa: E402
from bot.app.parts import backtest_market  # noqa: E402
from bot.config import load_config  # noqa: E402
from bot.feeds.replay import load_candles  # noqa: E402
from storage import explain_codec  # noqa: E402
from storage.db import open_database  # noqa: E402

DATA = Path(os.environ.get("BOT_DATA_DIR", ROOT.parent / "shared" / "data")) / "bybit_BTCUSDT_1h.csv.gz"
TRAIN_BARS = 1000
#: Tiny models at the default window of 48 bars: the explanation's size is the default's.
STRATEGIES: dict[str, dict[str, Any]] = {
    "rollout": {"window": 48, "d_model": 8, "n_heads": 2, "n_layers": 2, "d_ff": 16, "prob_threshold": 0.34,
                "train": {"epochs": 1, "threads": 1, "max_train_samples": 600, "seed": 3}},
    "dsc": {"window": 48, "horizon": 2, "channels": 8, "blocks": 2, "prob_threshold": 0.4, "backend": "torch",
            "train": {"epochs": 1, "batch_size": 128, "threads": 1, "patience": 1, "seed": 1}},
    "sma": {},
}
DECISION_OBJECTS = ("decisions", "sqlite_autoindex_decisions_1", "ix_decisions_run_time")


def journal(name: str, bars: int, work: Path, form: str) -> Path:
    """Backtest ``name`` over ``bars`` bars (after TRAIN_BARS for a model) into work/name_form.db."""
    data = load_candles(DATA, symbol="BTCUSDT", timeframe="1h", bar_ms=3_600_000)
    data = data.slice(len(data) - bars - TRAIN_BARS, len(data))
    params = dict(STRATEGIES[name])
    if params:
        params["train_fraction"] = TRAIN_BARS / len(data)
    path = work / f"{name}_{form}.db"
    url = f"sqlite:///{path}"
    cfg = load_config(None, [], {"strategy.name": name, "strategy.params": params, "storage.url": url})
    market, _ = backtest_market(cfg, data)
    db = open_database(url)
    core.backtest_markets(cfg, [market], db, show_progress=False)
    db.dispose()
    return path


def sizes(path: Path) -> dict[str, float]:
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("VACUUM")
    n = con.execute("SELECT count(*) FROM decisions").fetchone()[0]
    marks = ",".join("?" * len(DECISION_OBJECTS))
    table = con.execute(f"SELECT sum(pgsize) FROM dbstat WHERE name IN ({marks})", DECISION_OBJECTS).fetchone()[0]
    expl = con.execute("SELECT avg(length(explanation)) FROM decisions").fetchone()[0]
    con.close()
    return {"n": n, "file": path.stat().st_size, "table": table, "expl": expl}


@contextmanager
def codec_off() -> Iterator[None]:
    """Explanations written as their plain JSON text, as before the codec (sizes only: the
    journal cannot read these rows back)."""
    encode = explain_codec.encode
    explain_codec.encode = lambda v: None if v is None else json.dumps(v).encode()
    try:
        yield
    finally:
        explain_codec.encode = encode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=3000, help="traded bars per backtest (default 3000)")
    ap.add_argument("--strategies", default="rollout,dsc,sma")
    args = ap.parse_args()
    torch.set_num_threads(1)
    per = 10_000
    print(f"journal size per {per:,} decisions (SQLite, after VACUUM; BTCUSDT 1h, {args.bars} traded bars)")
    print(f"{'strategy':10} {'form':7} {'file MB':>8} {'decisions MB':>13} {'explanation B':>14} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chdir(work)  # checkpoints of the tiny models land here
        for name in args.strategies.split(","):
            stored = sizes(journal(name, args.bars, work, "stored"))
            with codec_off():
                plain = sizes(journal(name, args.bars, work, "plain"))
            for form, s in (("plain", plain), ("stored", stored)):
                k = per / s["n"]
                ratio = plain["table"] / s["table"]
                print(f"{name:10} {form:7} {s['file'] * k / 1e6:8.2f} {s['table'] * k / 1e6:13.2f} "
                      f"{s['expl']:14.0f} {ratio:5.1f}x")


if __name__ == "__main__":
    main()
