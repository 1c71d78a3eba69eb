"""Paper-mode latency: closed bar arriving at the bot -> order reaching the simulated broker.

Runs the real paper path in-process against the local Bybit simulator (accelerated clock,
bars over the public WebSocket): feed -> bars -> engine -> strategy -> risk -> broker. The
arrival time is taken when the WebSocket message reaches the feed (before JSON parsing); the
order time when ``SimulatedBroker.submit`` is entered. Also reported: arrival -> the engine
done with the bar (every bar, orders or not; the journal flush follows it).

Usage: python bench/paper_latency.py [--bars N] [--bar-ms MS] [--dsc-checkpoint PATH]
Target (issue 6): p50 <= 2 ms, p99 <= 10 ms with SMA.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("BOT_DATA_DIR", ROOT.parent / "shared" / "data"))

from bot import app as core  # noqa: E402
from bot.config import load_config  # noqa: E402
from bot.engine import Engine  # noqa: E402
from bot.feeds.bybit import BybitFeed  # noqa: E402
from bot.live import WARMUP_MARGIN, RunOptions  # noqa: E402
from bot.timeutil import ms_to_iso  # noqa: E402
from broker.bybit_sim import SimConfig, SimServer  # noqa: E402
from broker.simulated import SimulatedBroker  # noqa: E402


async def measure(name: str, sets: list[str], n_bars: int, bar_ms: float, checkpoint: str | None) -> dict[str, Any]:
    path = DATA / "bybit_BTCUSDT_1h.csv.gz"
    probe = core.load_data(load_config(None, []), str(path))
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/bench.db"
        base = load_config(None, [*sets, f"storage.url={db}", "logging.level=error"])
        w = max(int(core.build_strategy(base, checkpoint).warmup), 1) + WARMUP_MARGIN
        a_i = max(w + 10, 1000)
        a, b = int(probe.time[a_i]), int(probe.time[a_i + n_bars])
        submits: list[tuple[int, float]] = []
        done: list[tuple[int, float]] = []
        feeds: list[BybitFeed] = []
        orig_submit, orig_on_bar = SimulatedBroker.submit, Engine.on_bar

        def submit(self: SimulatedBroker, req: Any, now_ms: int) -> Any:
            submits.append((int(str(req.decision_id).rsplit("-", 1)[1]), time.perf_counter()))
            return orig_submit(self, req, now_ms)

        def on_bar(self: Engine) -> None:
            orig_on_bar(self)
            done.append((self.bars.last_time(), time.perf_counter()))

        def factory(*args: Any, **kw: Any) -> BybitFeed:
            feeds.append(BybitFeed(*args, **kw))
            return feeds[-1]

        SimulatedBroker.submit, Engine.on_bar = submit, on_bar  # type: ignore[method-assign]
        try:
            async with SimServer(SimConfig(data=[str(path)], bar_ms=bar_ms, start=a)) as sim:
                cfg = load_config(None, [*sets, f"storage.url={db}", "logging.level=error",
                                         f"exchange.rest_url={sim.rest_url}", f"exchange.ws_url={sim.ws_url}"])
                sim.state.clock.pause()  # the market waits until the bot is subscribed: every bar is live

                async def go_live() -> None:
                    while not feeds or feeds[0]._ws is None:  # noqa: SLF001
                        await asyncio.sleep(0.01)
                    await asyncio.sleep(0.2)
                    sim.state.clock.resume()

                starter = asyncio.create_task(go_live())
                summary = await core.paper(cfg, checkpoint, date_from=ms_to_iso(a), date_to=ms_to_iso(b),
                                           options=RunOptions(feed_factory=factory))
                starter.cancel()
        finally:
            SimulatedBroker.submit, Engine.on_bar = orig_submit, orig_on_bar  # type: ignore[method-assign]
    arr = {t: p for (sym, t), p in feeds[0].arrivals.items() if sym == "BTCUSDT"}
    first_live = a  # bars fetched over REST have no arrival stamp and are not counted
    order_ms = np.array([(p - arr[t]) * 1000 for t, p in submits if t in arr and t >= first_live])
    done_ms = np.array([(p - arr[t]) * 1000 for t, p in done if t in arr and t >= first_live])

    def pct(x: np.ndarray, q: float) -> float:
        return float(np.percentile(x, q)) if len(x) else float("nan")

    return {"strategy": name, "bars": summary["candles"], "orders": len(order_ms),
            "order_p50": pct(order_ms, 50), "order_p99": pct(order_ms, 99), "order_max": pct(order_ms, 100),
            "bar_p50": pct(done_ms, 50), "bar_p99": pct(done_ms, 99)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=400)
    ap.add_argument("--bar-ms", type=float, default=25.0)
    ap.add_argument("--dsc-checkpoint", default=None)
    args = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    runs = [("sma", ["strategy.name=sma", "strategy.params.fast=2", "strategy.params.slow=5"], None)]
    ck = args.dsc_checkpoint
    if ck is None:
        try:
            from models.checkpoint import default_checkpoint_path

            p = default_checkpoint_path("dsc", "BTCUSDT", "1h")
            ck = str(p) if p.exists() else None
        except ImportError:
            ck = None
    if ck and (ROOT / "strategies" / "dsc.py").exists():
        runs.append(("dsc", ["strategy.name=dsc", "strategy.params.prob_threshold=0.0"], ck))
    rows = [asyncio.run(measure(n, s, args.bars, args.bar_ms, c)) for n, s, c in runs]
    print(f"paper latency, {args.bars} bars at one bar per {args.bar_ms:g} ms on the local Bybit simulator; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'strategy':<9}{'bars':>6}{'orders':>8}{'bar->order p50':>16}{'p99':>9}{'max':>9}"
          f"{'bar->done p50':>15}{'p99':>9}   (ms)")
    for r in rows:
        print(f"{r['strategy']:<9}{r['bars']:>6}{r['orders']:>8}{r['order_p50']:>16.3f}{r['order_p99']:>9.3f}"
              f"{r['order_max']:>9.3f}{r['bar_p50']:>15.3f}{r['bar_p99']:>9.3f}")
    if not ck:
        print("dsc: skipped (no checkpoint; train one with `bot train --strategy dsc --data FILE` "
              "or pass --dsc-checkpoint PATH)")


if __name__ == "__main__":
    main()
